"""Evaluation: language-model loss on held-out shards, task metrics next to a baseline, decontamination.

A task score means little alone, so every task evaluation carries the score of the constant guess next to
it: the majority class for classification, all-"O" for NER. Predictions are compared with the gold labels
as strings, so a label the model never saw in training counts as a miss instead of disappearing.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from seqeval.metrics import (
    classification_report,
    f1_score,
    precision_score,
    recall_score,
)
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pipeline.config import TaskConfig
from pipeline.versions import load_manifest
from pipeline.train.data import iter_record_batches, shard_urls
from pipeline.train.loading import load_pretrained
from pipeline.train.tasks import SEQUENCE, TaskData, item_text, load_task

EVAL_BATCH_SIZE = 64
LM_MASK_PROB = 0.15
LM_SEED = 0  # the masked positions are fixed, so two checkpoints are scored on the same problem
LM_MAX_BLOCK = 512
LM_BATCH_SIZE = 16


# --- tasks ---------------------------------------------------------------------------------------------


def evaluate_task(model_dir: Path, task: TaskConfig, data: TaskData | None = None) -> dict[str, Any]:
    """Test-split metrics of a fine-tuned model directory, with the baseline and a per-class table."""
    model, tokenizer = load_task_model(model_dir, task)
    return evaluate_split(model, tokenizer, task, data or load_task(task), "test")


def load_task_model(model_dir: Path, task: TaskConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    auto = AutoModelForSequenceClassification if task.type == SEQUENCE else AutoModelForTokenClassification
    return load_pretrained(auto, model_dir), AutoTokenizer.from_pretrained(model_dir)


def evaluate_split(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskConfig, data: TaskData, split: str
) -> dict[str, Any]:
    rows: Dataset = getattr(data, split)
    max_len = input_length(model, task)
    if task.type == SEQUENCE:
        gold = list(rows["label"])
        predicted = predict_sequence(model, tokenizer, list(rows["text"]), max_len)
        metrics, per_class = sequence_metrics(gold, predicted, data.majority_label)
    else:
        gold = [list(tags) for tags in rows["tags"]]
        predicted = predict_tokens(model, tokenizer, [list(t) for t in rows["tokens"]], max_len)
        metrics, per_class = entity_metrics(gold, predicted)
    return {"task": task.name, "split": split, "examples": len(rows), "metrics": metrics, "per_class": per_class}


def input_length(model: PreTrainedModel, task: TaskConfig) -> int:
    """The task's max_seq_len, cut to the positions the model has (longer inputs would not fit)."""
    return min(task.max_seq_len, getattr(model.config, "max_position_embeddings", task.max_seq_len))


@torch.no_grad()
def predict_sequence(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int
) -> list[str]:
    model.eval()
    predicted: list[str] = []
    for start in range(0, len(texts), EVAL_BATCH_SIZE):
        batch = tokenizer(
            texts[start : start + EVAL_BATCH_SIZE], truncation=True, max_length=max_len, padding=True,
            return_tensors="pt",
        )
        ids = model(**batch).logits.argmax(-1).tolist()
        predicted += [model.config.id2label[i] for i in ids]
    return predicted


@torch.no_grad()
def predict_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: list[list[str]], max_len: int
) -> list[list[str]]:
    """One tag per word, read from the word's first sub-token; a word that got no token (cut by truncation,
    or whitespace the tokenizer drops) is tagged "O"."""
    model.eval()
    predicted: list[list[str]] = []
    for start in range(0, len(sentences), EVAL_BATCH_SIZE):
        chunk = sentences[start : start + EVAL_BATCH_SIZE]
        batch = tokenizer(
            chunk, is_split_into_words=True, truncation=True, max_length=max_len, padding=True, return_tensors="pt"
        )
        token_ids = model(**batch).logits.argmax(-1).tolist()
        for row, words in enumerate(chunk):
            tags = ["O"] * len(words)
            for position, word in reversed(list(enumerate(batch.word_ids(row)))):
                if word is not None:
                    tags[word] = model.config.id2label[token_ids[row][position]]
            predicted.append(tags)
    return predicted


def sequence_metrics(
    gold: list[str], predicted: list[str], majority_label: str
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    table = per_class_table(gold, predicted)
    baseline = per_class_table(gold, [majority_label] * len(gold))
    metrics = {
        "accuracy": _accuracy(gold, predicted),
        "macro_f1": _macro_f1(table),
        "majority_accuracy": _accuracy(gold, [majority_label] * len(gold)),
        "majority_macro_f1": _macro_f1(baseline),
    }
    return metrics, table


def per_class_table(gold: list[str], predicted: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class; classes are those in gold or predicted (as sklearn)."""
    pairs = Counter(zip(gold, predicted))
    gold_counts, predicted_counts = Counter(gold), Counter(predicted)
    table = []
    for label in sorted(set(gold) | set(predicted)):
        hits = pairs[(label, label)]
        precision = hits / predicted_counts[label] if predicted_counts[label] else 0.0
        recall = hits / gold_counts[label] if gold_counts[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table.append(
            {"label": label, "precision": precision, "recall": recall, "f1": f1, "support": gold_counts[label]}
        )
    return table


def entity_metrics(
    gold: list[list[str]], predicted: list[list[str]]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Entity-level (exact span and type, conlleval rules) scores with seqeval; baseline: all "O"."""
    all_o = [["O"] * len(tags) for tags in gold]
    metrics = {
        "entity_precision": float(precision_score(gold, predicted, zero_division=0)),
        "entity_recall": float(recall_score(gold, predicted, zero_division=0)),
        "entity_f1": float(f1_score(gold, predicted, zero_division=0)),
        "token_accuracy": _accuracy(_flat(gold), _flat(predicted)),
        "majority_entity_f1": float(f1_score(gold, all_o, zero_division=0)),
        "majority_token_accuracy": _accuracy(_flat(gold), _flat(all_o)),
    }
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    table = [
        {"label": name, "precision": float(row["precision"]), "recall": float(row["recall"]),
         "f1": float(row["f1-score"]), "support": int(row["support"])}
        for name, row in sorted(report.items())
        if "avg" not in name
    ]
    return metrics, table


def _accuracy(gold: list[str], predicted: list[str]) -> float:
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0


def _macro_f1(table: list[dict[str, Any]]) -> float:
    return sum(row["f1"] for row in table) / len(table) if table else 0.0


def _flat(sentences: list[list[str]]) -> list[str]:
    return [tag for sentence in sentences for tag in sentence]


# --- language model ------------------------------------------------------------------------------------


def evaluate_lm(model_dir: Path, manifest_path: str, split: str = "validation", max_docs: int | None = None) -> dict:
    """Token-weighted loss and perplexity of a pretrained LM on a manifest split.

    Documents are packed into blocks as in pretraining. A masked LM is scored on 15% of the tokens
    masked at fixed positions (every chosen token becomes [MASK], single tokens, not whole words, so the
    figure compares checkpoints whatever masking they were trained with); a causal LM on every next token.
    """
    causal = _is_causal(model_dir)
    model = load_pretrained(AutoModelForCausalLM if causal else AutoModelForMaskedLM, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model.eval()
    block_len = min(model.config.max_position_embeddings, LM_MAX_BLOCK)
    blocks = _pack(tokenizer, iter_documents(manifest_path, split, max_docs), block_len, add_specials=not causal)
    generator = torch.Generator().manual_seed(LM_SEED)
    loss_sum, scored, block_count = 0.0, 0, 0
    for batch in _batches(blocks, LM_BATCH_SIZE):
        input_ids, attention = _pad(batch, tokenizer.pad_token_id or 0)
        if causal:
            batch_sum, batch_count = _causal_loss(model, input_ids, attention)
        else:
            batch_sum, batch_count = _masked_loss(model, input_ids, attention, tokenizer, generator)
        loss_sum, scored, block_count = loss_sum + batch_sum, scored + batch_count, block_count + len(batch)
    if not scored:
        raise ValueError(f"split {split!r} of {manifest_path} has no text to evaluate on")
    loss = loss_sum / scored
    return {
        "objective": "clm" if causal else "mlm",
        "split": split,
        "blocks": block_count,
        "scored_tokens": scored,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),  # capped: an untrained model must not overflow the report
    }


def iter_documents(manifest_path: str, split: str, max_docs: int | None = None) -> Iterator[dict[str, str]]:
    """Stream {id, text} of a split's usable shards, one record batch at a time."""
    manifest = load_manifest(manifest_path)
    served = 0
    for url in shard_urls(manifest_path, manifest, split):
        for batch in iter_record_batches(url):
            for row in batch.select(["id", "text"]).to_pylist():
                if max_docs is not None and served >= max_docs:
                    return
                served += 1
                yield row


def _is_causal(model_dir: Path) -> bool:
    architectures = AutoConfig.from_pretrained(model_dir).architectures or []
    return any(name.endswith("ForCausalLM") for name in architectures)


def _pack(
    tokenizer: PreTrainedTokenizerBase, rows: Iterator[dict[str, str]], block_len: int, add_specials: bool
) -> Iterator[list[int]]:
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    body_len = block_len - 2 if add_specials else block_len
    buffer: list[int] = []
    for row in rows:
        # verbose=False: a document longer than the model's positions is expected here, packing cuts it
        # into blocks; the tokenizer would otherwise warn about indexing errors that cannot happen.
        buffer += tokenizer(row["text"], add_special_tokens=False, verbose=False)["input_ids"] + [separator]
        while len(buffer) >= body_len:
            yield _wrap(tokenizer, buffer[:body_len], add_specials)
            buffer = buffer[body_len:]
    if buffer:
        yield _wrap(tokenizer, buffer, add_specials)


def _batches(blocks: Iterator[list[int]], size: int) -> Iterator[list[list[int]]]:
    batch: list[list[int]] = []
    for block in blocks:
        batch.append(block)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _wrap(tokenizer: PreTrainedTokenizerBase, ids: list[int], add_specials: bool) -> list[int]:
    return [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id] if add_specials else ids


def _pad(blocks: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask; the mask comes from lengths because a decoder's tokenizer may have no
    pad token of its own."""
    width = max(len(b) for b in blocks)
    input_ids = torch.tensor([b + [pad_id] * (width - len(b)) for b in blocks])
    attention = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in blocks])
    return input_ids, attention


@torch.no_grad()
def _masked_loss(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    generator: torch.Generator,
) -> tuple[float, int]:
    special = torch.tensor(tokenizer.all_special_ids)
    candidates = ~torch.isin(input_ids, special) & attention.bool()
    chosen = (torch.rand(input_ids.shape, generator=generator) < LM_MASK_PROB) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = torch.where(chosen, torch.full_like(input_ids, tokenizer.mask_token_id), input_ids)
    logits = model(input_ids=masked, attention_mask=attention).logits
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    return float(loss), int(chosen.sum())


@torch.no_grad()
def _causal_loss(model: PreTrainedModel, input_ids: torch.Tensor, attention: torch.Tensor) -> tuple[float, int]:
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
    targets = torch.where(attention[:, 1:].bool(), input_ids[:, 1:], torch.full_like(input_ids[:, 1:], -100))
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    return float(loss), int((targets != -100).sum())


# --- decontamination -----------------------------------------------------------------------------------


def decontamination_report(task: TaskConfig, manifest_path: str, n: int = 13) -> dict[str, Any]:
    """Test items of a task that share an n-gram with the pretraining corpus (the manifest's train split).

    Chinese is compared on character n-grams, English on word n-grams, both after NFKC and lower-casing
    and without punctuation or spaces, so the corpus's normalisation does not hide an overlap. Memory holds
    the test set's n-gram hashes only; the corpus is streamed document by document.
    """
    test = load_task(task).test
    items = [{"id": row["id"], "text": item_text(row, task.lang)} for row in test]
    index: dict[int, list[int]] = {}
    too_short = 0
    for position, item in enumerate(items):
        grams = ngrams(item["text"], task.lang, n)
        too_short += not grams
        for gram in grams:
            index.setdefault(hash(gram), []).append(position)
    first_hit: dict[int, dict[str, str]] = {}
    corpus_docs = 0
    for doc in iter_documents(manifest_path, "train"):
        corpus_docs += 1
        grams = ngrams(doc["text"], task.lang, n)
        by_hash = {hash(gram): gram for gram in grams}
        for key in index.keys() & by_hash.keys():
            for position in index[key]:
                first_hit.setdefault(position, {"ngram": by_hash[key], "corpus_id": doc["id"]})
    listed = [{**items[p], **hit} for p, hit in sorted(first_hit.items())]
    return {
        "task": task.name,
        "n": n,
        "unit": "char" if task.lang == "zh" else "word",
        "test_items": len(items),
        "too_short": too_short,  # items with fewer than n units cannot match at this n
        "corpus_docs": corpus_docs,
        "contaminated": len(listed),
        "contaminated_fraction": len(listed) / len(items) if items else 0.0,
        "items": listed,
    }


def ngrams(text: str, lang: str, n: int) -> set[str]:
    normalized = unicodedata.normalize("NFKC", text).lower()
    if lang == "zh":
        units = [c for c in normalized if c.isalnum()]
        return {"".join(units[i : i + n]) for i in range(len(units) - n + 1)}
    words = re.findall(r"\w+", normalized)
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}
