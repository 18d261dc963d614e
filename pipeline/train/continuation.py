"""Retraining that continues a registered model instead of starting over.

A scheduled refresh usually adds a little text to a large corpus. Continuing keeps the parent's tokenizer,
starts from its pretrained encoder (logged with every registered version under the artifact path
`pretrained`) and trains on the documents that are new or changed since the parent's dataset version
(matched by id and content hash, as `corpusflow diff` does), mixed with a replay share of the old ones.

It falls back to a fresh run, and says why, when the parent cannot be continued: the model shape in the
config changed, or its tokenizer no longer covers the corpus (more [UNK] tokens, or more characters that a
byte-level BPE splits into bytes, on the new documents than on the old ones, by more than a threshold).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from pipeline.config import ContinuationConfig, ModelConfig, PretrainConfig, TrainConfig
from pipeline.diff import document_keys
from pipeline.train.data import id_array, iter_record_batches, keep_documents, shard_urls
from pipeline.versions import load_manifest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
PRETRAINED_ARTIFACT = "pretrained"  # where a registered version's run keeps the encoder it was fine-tuned from
NEW_IDS_FILE = "new_document_ids.txt"


@dataclass(frozen=True)
class ParentModel:
    """A registered version to continue from, with its pretrained encoder downloaded."""

    model_name: str
    version: str
    pretrained_dir: Path
    manifest_uri: str
    dataset_version: str

    @property
    def reference(self) -> str:
        return f"{self.model_name}/{self.version}"


@dataclass(frozen=True)
class Continuation:
    """What a continued pretraining starts from: the parent's encoder and the ids of the documents it never saw."""

    parent: ParentModel
    new_ids_file: Path

    def new_ids(self) -> frozenset[str]:
        return frozenset(self.new_ids_file.read_text().split())


def plan_continuation(config: TrainConfig, model_name: str, tracking_uri: str, manifest_path: str,
                      work_dir: Path) -> tuple[Continuation | None, str]:
    """How this run starts: (the continuation, or None for a fresh run; a note that says which and why)."""
    from mlflow.exceptions import MlflowException

    try:
        parent = find_parent(tracking_uri, model_name, str(config.continue_from), work_dir / "parent")
        new_ids = changed_document_ids(parent.manifest_uri, manifest_path)
    except (MlflowException, KeyError, OSError) as error:
        return None, f"fresh run: {model_name} {config.continue_from} cannot be continued ({error})"
    if (mismatch := config_mismatch(parent.pretrained_dir, config.model)) is not None:
        return None, f"fresh run: {mismatch}"
    if not new_ids:
        return None, f"fresh run: no document is new or changed since dataset version {parent.dataset_version}"
    tokenizer = Tokenizer.from_file(str(parent.pretrained_dir / "tokenizer.json"))
    reason, shares = coverage_verdict(tokenizer, manifest_path, new_ids, config.continuation)
    if reason is not None:
        return None, f"fresh run: {reason}"
    coverage = ", ".join(f"{name} {value:.4f}" for name, value in shares.items())
    return (Continuation(parent, write_ids(new_ids, work_dir / NEW_IDS_FILE)),
            f"continued from {parent.reference} (dataset version {parent.dataset_version}): {len(new_ids)} new or "
            f"changed documents; tokenizer coverage {coverage}")


def find_parent(tracking_uri: str, model_name: str, reference: str, dest: Path) -> ParentModel:
    """The version `reference` ("champion", "candidate" or a number) of `model_name`, its encoder under `dest`."""
    from mlflow import MlflowClient  # MLflow loads in a second; only continued runs need it here

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = (client.get_model_version(model_name, reference) if reference.isdigit()
               else client.get_model_version_by_alias(model_name, reference))
    dest.mkdir(parents=True, exist_ok=True)
    local = client.download_artifacts(version.run_id, PRETRAINED_ARTIFACT, str(dest))
    return ParentModel(model_name, str(version.version), Path(local), version.tags["manifest_uri"],
                       version.tags["dataset_version"])


def changed_document_ids(parent_manifest: str, manifest: str) -> frozenset[str]:
    """Ids of the documents of `manifest` that the parent's version lacks or holds with other content."""
    old = document_keys(parent_manifest, load_manifest(parent_manifest))
    new = document_keys(manifest, load_manifest(manifest))
    return frozenset(doc_id for doc_id, (_, content_hash) in new.items() if old.get(doc_id, (None, None))[1] != content_hash)


def write_ids(ids: frozenset[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sorted(ids)) + "\n")
    return path


def tokenizer_coverage(tokenizer: Tokenizer, manifest_path: str, docs: int, only_ids: frozenset[str] | None = None,
                       except_ids: frozenset[str] | None = None) -> dict[str, float]:
    """Share of [UNK] tokens and of characters split into several tokens (bytes), on the first `docs` train
    documents the id filter keeps."""
    unk_id = tokenizer.token_to_id("[UNK]")
    tokens = unknown = chars = split_chars = seen = 0
    id_set = id_array(only_ids, except_ids)
    for shard in shard_urls(manifest_path, load_manifest(manifest_path), "train"):
        for batch in iter_record_batches(shard):
            kept = keep_documents(batch, id_set, keep_listed=only_ids is not None)
            texts = kept.column("text").to_pylist()[: docs - seen]
            for text, encoding in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False)):
                tokens += len(encoding.ids)
                unknown += sum(1 for i in encoding.ids if i == unk_id) if unk_id is not None else 0
                chars += sum(1 for c in text if not c.isspace())
                per_span = Counter(span for span in encoding.offsets if span[1] - span[0] == 1)
                split_chars += sum(1 for count in per_span.values() if count > 1)
            seen += len(texts)
            if seen >= docs:
                return _shares(unknown, tokens, split_chars, chars)
    return _shares(unknown, tokens, split_chars, chars)


def _shares(unknown: int, tokens: int, split_chars: int, chars: int) -> dict[str, float]:
    return {"unk_share": unknown / tokens if tokens else 0.0, "split_char_share": split_chars / chars if chars else 0.0}


def coverage_verdict(tokenizer: Tokenizer, manifest_path: str, new_ids: frozenset[str],
                     config: ContinuationConfig) -> tuple[str | None, dict[str, float]]:
    """(why the tokenizer no longer covers the corpus, or None; the shares measured on new and old text)."""
    new = tokenizer_coverage(tokenizer, manifest_path, config.coverage_docs, only_ids=new_ids)
    old = tokenizer_coverage(tokenizer, manifest_path, config.coverage_docs, except_ids=new_ids)
    shares = {**{f"new_{k}": v for k, v in new.items()}, **{f"old_{k}": v for k, v in old.items()}}
    for share, limit in (("unk_share", config.max_unk_rise), ("split_char_share", config.max_split_char_rise)):
        if new[share] - old[share] > limit:
            return (f"the parent's tokenizer no longer covers the corpus: {share} {new[share]:.4f} on new documents vs "
                    f"{old[share]:.4f} on old ones (allowed rise {limit:g})"), shares
    return None, shares


def config_mismatch(parent_dir: Path, model: ModelConfig) -> str | None:
    """Why the parent's encoder is not the model `train.model` describes, or None when it is."""
    saved = json.loads((parent_dir / "config.json").read_text())
    expected = {"model_type": model.arch, "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers,
                "num_attention_heads": model.num_heads, "intermediate_size": model.intermediate_size,
                "max_position_embeddings": model.max_seq_len}
    differing = {key: (saved.get(key), value) for key, value in expected.items() if saved.get(key) != value}
    if differing:
        return "train.model changed since the parent: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in differing.items())
    return None


def load_parent_weights(model: torch.nn.Module, parent_dir: Path) -> None:
    """The parent's pretrained weights into a model built from the same config. A saved model stores a tied
    tensor (output embedding, decoder bias) once, so a name missing from the file must be one of those."""
    from safetensors.torch import load_file

    saved = load_file(str(parent_dir / "model.safetensors"))
    missing, unexpected = model.load_state_dict(saved, strict=False)
    tensors = model.state_dict(keep_vars=True)
    untied = [name for name in missing if not any(tensors[name] is tensors[other] for other in saved)]
    if untied or unexpected:
        raise ValueError(f"{parent_dir}: weights missing {untied}, unexpected {unexpected}")


def continued_replay_share(settings: ContinuationConfig, new_tokens: int, budget_tokens: int) -> float:
    """The share of a continued run's tokens that replays old text: `replay_share`, or more when the budget
    (set in steps) holds more than `new_text_passes` passes over the new text. The rest of such a budget
    replays old text rather than reading the new documents over and over: a model drifts towards a slice of
    text it is shown for many epochs, and after a refresh that slice is a few per cent of the corpus."""
    if settings.max_steps is None:  # a budget made from the passes holds them, and no more
        return settings.replay_share
    new_share = min(1 - settings.replay_share, new_tokens * settings.new_text_passes / budget_tokens)
    return 1 - new_share


def continued_schedule(config: TrainConfig, new_tokens: int, tokens_per_step: int) -> PretrainConfig:
    """The pretraining loop of a continued run: its budget, its lower peak, and warmup re-done over a tenth of
    the budget at most."""
    settings = config.continuation
    steps = settings.max_steps or math.ceil(new_tokens * settings.new_text_passes / (1 - settings.replay_share)
                                            / tokens_per_step)
    steps = max(1, min(steps, config.pretrain.max_steps))
    return config.pretrain.model_copy(update={"max_steps": steps, "lr": config.pretrain.lr * settings.peak_lr_ratio,
                                              "warmup_steps": max(1, min(config.pretrain.warmup_steps, steps // 10))})
