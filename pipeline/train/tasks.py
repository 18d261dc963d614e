"""Fine-tuning task data: local files read with `datasets`, mapped to one row shape, split and capped.

Rows of a sequence task are {id, text, label}; rows of a token task are {id, tokens, tags} (BIO tags).
Labels are strings whatever the file holds (TNEWS has ints, others words), renamed through the task's
`label_names` when it has them, and the label set comes from the train split only: a dev or test label the
model never saw simply counts as an error.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset, load_dataset

from pipeline.config import ContractsConfig, TaskConfig
from pipeline.contracts import validate_task_table
from pipeline.errors import UserError

log = logging.getLogger(__name__)

SEQUENCE = "sequence_classification"
TOKEN = "token_classification"
HOLDOUT_PERCENT = 10  # share of train held out for each of test and validation when no file is given
SAMPLE_SEED = 0  # seed of the max_examples sample, fixed so every run and the evaluation see the same rows


@dataclass(frozen=True)
class TaskData:
    train: Dataset
    validation: Dataset
    test: Dataset
    labels: list[str]  # class names or BIO tags, derived from train
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable rows by reason, e.g. "train:empty_text"

    @property
    def majority_label(self) -> str:
        """The most frequent train label of a sequence task (ties: the first in sorted order): the constant
        guess of the majority baseline."""
        counts = Counter(self.train["label"])
        return min(counts, key=lambda label: (-counts[label], label))


def load_task(task: TaskConfig) -> TaskData:
    skipped: Counter[str] = Counter()
    train = _read(task, task.train, "train", skipped)
    validation = _read(task, task.validation, "validation", skipped) if task.validation else None
    test = _read(task, task.test, "test", skipped) if task.test else None
    train, validation, test = _hold_out(train, validation, test)
    train, validation, test = (_cap(ds, task.max_examples) for ds in (train, validation, test))
    labels = _label_set(task, train)
    if skipped:
        log.warning("task %s: skipped unreadable rows %s", task.name, dict(skipped))
    return TaskData(train=train, validation=validation, test=test, labels=labels, skipped=dict(skipped))


def item_text(row: dict[str, Any], lang: str) -> str:
    """The plain text of a row of either shape (a token row's words rejoined)."""
    if "text" in row:
        return row["text"]
    return ("" if lang == "zh" else " ").join(row["tokens"])


# --- reading -------------------------------------------------------------------------------------------


def _read(task: TaskConfig, path: str, split: str, skipped: Counter[str]) -> Dataset:
    if task.format in ("conll", "zip_conll"):
        return _read_conll(path, split, skipped)
    return _map_fields(_read_table(task.format, path), task, Path(path).name, split, skipped)


def _read_table(fmt: str, path: str) -> Dataset:
    # keep_default_na=False: a review that says "NA" or "null" is text, not a missing value
    if fmt in ("csv", "zip_csv"):  # `datasets` reads a zip holding one csv directly
        return load_dataset("csv", data_files=path, split="train", keep_default_na=False)
    if fmt == "tsv":
        # headerless `sentence<TAB>label` lines; quotes are ordinary characters in these files
        names = [str(i) for i in range(_tsv_width(path))]
        return load_dataset(
            "csv", data_files=path, split="train", sep="\t", header=None, column_names=names,
            quoting=csv.QUOTE_NONE, keep_default_na=False,
        )
    if fmt == "jsonl":
        return load_dataset("json", data_files=path, split="train")
    raise ValueError(f"unknown task format {fmt!r}")


def _tsv_width(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return len(f.readline().rstrip("\n").split("\t"))


def _map_fields(ds: Dataset, task: TaskConfig, file_name: str, split: str, skipped: Counter[str]) -> Dataset:
    fields = task.fields
    text_columns = [c.strip() for c in fields["text"].split(",")]
    wanted = [*text_columns, fields["label"], *([fields["id"]] if "id" in fields else [])]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise ValueError(f"{file_name}: column(s) {missing} not found; columns are {ds.column_names}")
    rows = []
    for index, row in enumerate(ds):
        text = " ".join(_clean(row[c]) for c in text_columns if _clean(row[c]))
        label = _clean(row[fields["label"]])
        if not text or not label:
            skipped[f"{split}:{'empty_text' if not text else 'missing_label'}"] += 1
            continue
        row_id = _clean(row[fields["id"]]) if "id" in fields else f"{file_name}:{index}"
        rows.append({"id": row_id, "text": text, "label": _named(label, task, file_name, index)})
    return Dataset.from_list(rows) if rows else Dataset.from_dict({"id": [], "text": [], "label": []})


def _named(label: str, task: TaskConfig, file_name: str, index: int) -> str:
    if not task.label_names:
        return label
    if label not in task.label_names:
        raise TaskDataRejected(f"{file_name} row {index}: label {label!r} has no name in task {task.name!r}'s "
                               f"label_names {task.label_names}")
    return task.label_names[label]


def numbered_labels(labels: list[str]) -> bool:
    """Whether a label set is numbers only (0/1, TNEWS's codes): a model's id2label then names nothing."""
    return all(label.lstrip("-").isdigit() for label in labels)


def example_texts(task: TaskConfig, count: int = 2) -> list[str]:
    """The first texts of the task's test split: what a registered model shows as its input example."""
    data = load_task(task)
    rows = data.test if len(data.test) else data.train
    return [item_text(row, task.lang) for row in rows.select(range(min(count, len(rows))))]


def _clean(value: Any) -> str:
    # some publishers' fields carry a byte-order mark inside the text
    return "" if value is None else str(value).replace("\ufeff", "").strip()


def _read_conll(path: str, split: str, skipped: Counter[str]) -> Dataset:
    # `datasets` reads plain or zipped text; "paragraph" rows are the blank-line separated sentences
    paragraphs = load_dataset("text", data_files=path, split="train", sample_by="paragraph")
    file_name = Path(path).name
    rows = []
    for index, paragraph in enumerate(paragraphs["text"]):
        sentence = _parse_sentence(paragraph)
        if sentence is None:
            skipped[f"{split}:malformed_sentence"] += 1
            continue
        if sentence[0]:
            rows.append({"id": f"{file_name}:{index}", "tokens": sentence[0], "tags": sentence[1]})
    return Dataset.from_list(rows) if rows else Dataset.from_dict({"id": [], "tokens": [], "tags": []})


def _parse_sentence(paragraph: str) -> tuple[list[str], list[str]] | None:
    tokens, tags = [], []
    for line in paragraph.split("\n"):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 2 or not parts[1]:
            return None
        tokens.append(parts[0])
        tags.append(parts[1].strip())
    return tokens, tags


# --- splitting -----------------------------------------------------------------------------------------


def _hold_out(
    train: Dataset, validation: Dataset | None, test: Dataset | None
) -> tuple[Dataset, Dataset, Dataset]:
    """Splits missing files off train by a hash of the row's text, so a row always lands on the same side
    and exact duplicates cannot straddle train and test."""
    if validation is not None and test is not None:
        return train, validation, test
    buckets = [_bucket(row) for row in train]
    test_ids = [i for i, b in enumerate(buckets) if b < HOLDOUT_PERCENT] if test is None else []
    validation_ids = (
        [i for i, b in enumerate(buckets) if HOLDOUT_PERCENT <= b < 2 * HOLDOUT_PERCENT] if validation is None else []
    )
    held = set(test_ids) | set(validation_ids)
    remaining = train.select([i for i in range(len(train)) if i not in held])
    return (
        remaining,
        validation if validation is not None else train.select(validation_ids),
        test if test is not None else train.select(test_ids),
    )


def _bucket(row: dict[str, Any]) -> int:
    content = row["text"] if "text" in row else "\x1f".join(row["tokens"])
    return int(hashlib.sha256(content.encode()).hexdigest()[:8], 16) % 100


def _cap(ds: Dataset, max_examples: int | None) -> Dataset:
    if max_examples is None or len(ds) <= max_examples:
        return ds
    # a seeded sample, not the head: files are often sorted by label
    return ds.shuffle(seed=SAMPLE_SEED).select(range(max_examples))


def _label_set(task: TaskConfig, train: Dataset) -> list[str]:
    if task.type == SEQUENCE:
        labels = set(train["label"])
    else:
        # a type seen as B-X or I-X gets both tags, so the model can predict any well-formed span
        tags = {tag for sentence in train["tags"] for tag in sentence}
        types = {tag[2:] for tag in tags if tag[:2] in ("B-", "I-")}
        labels = {tag for tag in tags if tag[:2] not in ("B-", "I-")} | {f"{p}-{t}" for t in types for p in "BI"}
    if not labels:
        raise ValueError(f"task {task.name}: the train split has no labelled rows")
    return sorted(labels)


# --- contract ------------------------------------------------------------------------------------------


class TaskDataRejected(UserError, ValueError):
    """A task's labelled data broke a critical expectation of the tasks contract: training would learn from it."""

    hint = "fix the task's files or its `fields`/`label_names` in the config's train.tasks section"


def check_task_data(task: TaskConfig, contracts_config: ContractsConfig) -> list[dict[str, Any]]:
    """Every split of the task against the tasks contract, as the corpus shards are; raises on a critical failure.

    A token task is checked token by token (text = the token, label = its tag), so an empty token or a tag
    outside the train tag set is caught the same way as a bad sentence label.
    """
    data = load_task(task)
    reports = []
    for split in ("train", "validation", "test"):
        report = validate_task_table(_contract_rows(getattr(data, split)), data.labels, contracts_config)
        reports.append({"split": split, **report})
    failed = [f"{r['split']}: " + ", ".join(f"{e['type']}({e.get('column') or ''})" for e in r["expectations"]
                                          if not e["success"] and e["severity"] == "critical")
              for r in reports if r["critical_failed"]]
    if failed:
        raise TaskDataRejected(f"task {task.name!r} data breaks the {contracts_config.tasks_suite} contract: "
                               + "; ".join(failed))
    return reports


def _contract_rows(rows: Dataset) -> pa.Table:
    if "text" in rows.column_names:
        return pa.table({"text": pa.array(rows["text"], pa.string()), "label": pa.array(rows["label"], pa.string())})
    tokens = [token for sentence in rows["tokens"] for token in sentence]
    tags = [tag for sentence in rows["tags"] for tag in sentence]
    return pa.table({"text": pa.array(tokens, pa.string()), "label": pa.array(tags, pa.string())})
