"""The model card: a fine-tuned model folder's README.md, for the people who pick a model and use it.

The card has the shape of a Hugging Face model card: a YAML header a hub indexes (`language`, `license`,
`library_name`, `pipeline_tag`, `model-index` with the test scores), then the model's own account: what it
does and with which labels, its test scores next to the majority and random-init baselines, the data it
came from (dataset version, manifest hash, task files, decontamination), what pretraining cost, what it is
for and where it stops, and how to load it with transformers, with MLflow, or as a served endpoint.

It is written into the folder before the folder is registered, so every registered version carries the card
of its own figures. The license is the training corpus's (`card.license` of the config).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open
from transformers import AutoConfig

from pipeline.config import TaskConfig
from pipeline.train.tasks import SEQUENCE

CARD = "README.md"
WEIGHTS = "model.safetensors"
PIPELINE_TAGS = {"sequence_classification": "text-classification", "token_classification": "token-classification"}
# metric key -> (model-index type, words); the index takes a metric's type from the Hub's list
METRICS = {
    "accuracy": ("accuracy", "accuracy"),
    "macro_f1": ("f1", "macro F1"),
    "entity_f1": ("f1", "entity F1 (exact span and type)"),
    "entity_precision": ("precision", "entity precision"),
    "entity_recall": ("recall", "entity recall"),
    "token_accuracy": ("accuracy", "token accuracy"),
}
LANGUAGES = {"zh": "Chinese", "en": "English"}


@dataclass(frozen=True)
class Pretraining:
    """How the encoder under the task head was made, and what it cost."""

    arch: str
    steps: int
    tokens_seen: int
    train_seconds: float
    tokens_per_s: float
    validation_loss: float | None = None
    validation_perplexity: float | None = None


def write_model_card(
    model_dir: Path,
    *,
    name: str,
    task: TaskConfig,
    evaluation: dict[str, Any],
    gain: dict[str, float],
    lineage: dict[str, str],
    pretraining: Pretraining,
    license_id: str,
) -> Path:
    """README.md in `model_dir` (a fine-tuned model folder); `gain` holds random_init_<m> and
    pretraining_gain_<m> (empty when no random-init baseline was trained)."""
    model_config = AutoConfig.from_pretrained(model_dir)
    labels = [label for _, label in sorted(model_config.id2label.items())]
    window = min(task.max_seq_len, getattr(model_config, "max_position_embeddings", task.max_seq_len))
    parameters = _parameter_count(Path(model_dir) / WEIGHTS)
    card = "\n".join([
        "---", yaml.safe_dump(card_metadata(name, task, evaluation["metrics"], license_id), sort_keys=False,
                              allow_unicode=True).rstrip(), "---",
        "", *_summary(name, task, labels, parameters, pretraining, lineage),
        "", *_labels(labels),
        "", *_evaluation(task, evaluation, gain),
        "", *_data(task, evaluation, lineage),
        "", *_pretraining_cost(pretraining),
        "", *_use_and_limits(task, window),
        "", *_how_to_load(name, task),
    ]) + "\n"
    path = Path(model_dir) / CARD
    path.write_text(card, encoding="utf-8")
    return path


def card_metadata(name: str, task: TaskConfig, metrics: dict[str, float], license_id: str) -> dict[str, Any]:
    """The YAML header: what a hub indexes, the test scores as a `model-index`."""
    pipeline_tag = PIPELINE_TAGS[task.type]
    return {
        "language": [task.lang],
        "license": license_id,
        "library_name": "transformers",
        "pipeline_tag": pipeline_tag,
        "tags": ["corpusflow", "mlflow", task.name],
        "metrics": sorted({METRICS[key][0] for key in metrics if key in METRICS}),
        "model-index": [{
            "name": name,
            "results": [{
                "task": {"type": pipeline_tag, "name": pipeline_tag.replace("-", " ")},
                "dataset": {"type": task.name, "name": f"{task.name} (test split)", "split": "test"},
                "metrics": [{"type": METRICS[key][0], "value": round(float(value), 4), "name": METRICS[key][1]}
                            for key, value in metrics.items() if key in METRICS],
            }],
        }],
    }


def _parameter_count(weights: Path) -> int:
    with safe_open(str(weights), framework="pt") as tensors:
        return sum(prod(tensors.get_slice(key).get_shape()) for key in tensors.keys())


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]


def _summary(name: str, task: TaskConfig, labels: list[str], parameters: int, pretraining: Pretraining,
             lineage: dict[str, str]) -> list[str]:
    kind = (f"sequence classification into {len(labels)} classes" if task.type == SEQUENCE
            else f"named-entity tagging ({len(_entity_types(labels))} entity types, BIO tags)")
    return [
        f"# {name}",
        "",
        f"Task `{task.name}`: {kind} of {LANGUAGES[task.lang]} text. A {pretraining.arch} encoder of "
        f"{parameters / 1e6:.2f}M parameters, pretrained by corpusflow on dataset `{lineage.get('dataset', '?')}` "
        f"version `{lineage.get('dataset_version', '?')}`, then fine-tuned on the task's train split.",
    ]


def _entity_types(labels: list[str]) -> list[str]:
    return sorted({label[2:] for label in labels if label[:2] in ("B-", "I-")})


def _labels(labels: list[str]) -> list[str]:
    return ["## Labels", "", "The model's `id2label`; predictions name these.", "",
            *_table(("id", "label"), list(enumerate(labels)))]


def _evaluation(task: TaskConfig, evaluation: dict[str, Any], gain: dict[str, float]) -> list[str]:
    metrics = evaluation["metrics"]
    rows = []
    for key in (k for k in metrics if k in METRICS):
        random_init = gain.get(f"random_init_{key}")
        rows.append((f"**{key}**" if key == task.primary_metric else key, _figure(metrics[key]),
                     _figure(metrics.get(f"majority_{key}")), _figure(random_init),
                     "" if random_init is None else f"{gain[f'pretraining_gain_{key}']:+.4f}"))
    majority = "the most frequent train class" if task.type == SEQUENCE else '"O" for every token'
    per_class = [(row["label"], _figure(row["precision"]), _figure(row["recall"]), _figure(row["f1"]), row["support"])
                 for row in evaluation.get("per_class", [])]
    return [
        f"## Evaluation ({evaluation.get('examples', '?')} test examples)", "",
        *_table(("metric", "this model", "majority baseline", "random-init baseline", "gain from pretraining"), rows),
        "",
        f"The majority baseline always answers {majority}. The random-init baseline is the same architecture "
        "fine-tuned from untrained weights with the same data, settings and seed, so the gain is what pretraining "
        f"adds. The champion alias moves on **{task.primary_metric}**.",
        "", "Per class:", "", *_table(("label", "precision", "recall", "F1", "support"), per_class),
    ]


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _data(task: TaskConfig, evaluation: dict[str, Any], lineage: dict[str, str]) -> list[str]:
    files = ", ".join(f"{split} `{path}`" for split, path in
                      (("train", task.train), ("validation", task.validation), ("test", task.test)) if path)
    lines = [
        "## Training data", "",
        f"- Pretraining corpus: dataset `{lineage.get('dataset', '?')}` "
        f"version `{lineage.get('dataset_version', '?')}`, "
        f"manifest `{lineage.get('manifest_uri', '?')}` (sha256 `{lineage.get('manifest_sha256', '?')}`); "
        f"contracts {lineage.get('contracts', '?')}: {lineage.get('contract_results', '?')}.",
        f"- Task data: {files}" + ("" if task.validation and task.test else
                                   "; missing splits are held out of train by a hash of each row") + ".",
        f"- Config hash `{lineage.get('config_hash', '?')}`, code `{lineage.get('git_commit', '?')}`.",
    ]
    contamination = evaluation.get("decontamination")
    if contamination:
        lines.append(f"- Decontamination: {contamination['contaminated']} of {contamination['test_items']} test items "
                     f"share a {contamination['n']}-{contamination['unit']} n-gram with the pretraining corpus.")
    return lines


def _pretraining_cost(pretraining: Pretraining) -> list[str]:
    row = (pretraining.steps, f"{pretraining.tokens_seen / 1e6:.2f}M", f"{pretraining.train_seconds:.0f} s",
           f"{pretraining.tokens_per_s:,.0f}", _figure(pretraining.validation_loss),
           "" if pretraining.validation_perplexity is None else f"{pretraining.validation_perplexity:.1f}")
    return ["## Pretraining cost", "",
            *_table(("steps", "tokens", "training time", "tokens/s", "validation loss", "perplexity"), [row])]


def _use_and_limits(task: TaskConfig, window: int) -> list[str]:
    """`window`: the tokens the model reads at once, as in fine-tuning (the task's length, within the model's)."""
    if task.type == SEQUENCE:
        length = f"Only the first {window} tokens of a text count; the rest is cut."
        scope = "It answers one of the labels above for every text, including texts that fit none of them."
    else:
        length = f"Texts longer than {window} tokens are tagged in overlapping windows of that length."
        scope = "It finds only the entity types above."
    return [
        "## Intended use and limits", "",
        f"- For {LANGUAGES[task.lang]} text like the task's own data: the scores above hold for its test split, "
        "not for another domain, script or language, which should be measured before use.",
        f"- {scope}",
        f"- {length}",
        "- A score is a probability from the model, not a calibrated confidence; decisions about people need a "
        "person's review.",
    ]


def _how_to_load(name: str, task: TaskConfig) -> list[str]:
    auto = "AutoModelForSequenceClassification" if task.type == SEQUENCE else "AutoModelForTokenClassification"
    answer = ("a DataFrame of `label` and `score` per text" if task.type == SEQUENCE
              else "per text, a list of entity spans `{entity, text, start, end, score}`")
    uri = f"models:/{name}@champion"
    return [
        "## How to use", "",
        "This folder is both a transformers model and an MLflow model (see `MLmodel`).", "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        f"model = {auto}.from_pretrained(\"<this folder>\")",
        "tokenizer = AutoTokenizer.from_pretrained(\"<this folder>\")",
        "",
        "import mlflow  # with MLFLOW_TRACKING_URI set to the run's store",
        f"model = mlflow.pyfunc.load_model(\"{uri}\")",
        f"model.predict([\"...\", \"...\"])  # {answer}",
        "```", "",
        "As an HTTP endpoint on this machine (`corpusflow serve-model` does this with the run's tracking URI):", "",
        "```bash",
        f"mlflow models serve -m \"{uri}\" --env-manager local --host 127.0.0.1 --port 5001",
        "curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' "
        "-d '{\"inputs\": [\"...\", \"...\"]}'",
        "```",
    ]
