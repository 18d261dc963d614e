"""Fine-tuning a tiny encoder on small hand-written tasks: metrics, baselines, early stopping, BIO alignment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.tasks import ner_task, sentiment_task, tiny_pretrained, write_sentiment_csv
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeline.config import ModelConfig
from pipeline.train.finetune import _encode_tokens, finetune, parameter_groups
from pipeline.train.loading import load_for_task
from pipeline.train.pretrain import save_random_init
from pipeline.train.tasks import load_task


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pretrained(tmp_path_factory.mktemp("pretrained"))


def test_sentiment_beats_majority_baseline(pretrained: Path, tmp_path: Path) -> None:
    task = sentiment_task(write_sentiment_csv(tmp_path / "reviews.csv"))
    result = finetune(task, pretrained, tmp_path / "model")

    assert set(result.metrics) == {"accuracy", "macro_f1", "majority_accuracy", "majority_macro_f1"}
    assert result.metrics["accuracy"] > result.metrics["majority_accuracy"]
    assert [row["label"] for row in result.evaluation["per_class"]] == ["0", "1"]
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "0", "1": "1"}
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / "tokenizer.json").exists()
    assert 1 <= result.best_epoch <= len(result.history)


def test_early_stopping_stops_when_dev_does_not_improve(pretrained: Path, tmp_path: Path) -> None:
    # lr 0: the dev score of epoch 1 can never be beaten, so training stops after `patience` more epochs
    task = sentiment_task(write_sentiment_csv(tmp_path / "reviews.csv"), epochs=10, patience=2, lr=0.0)
    result = finetune(task, pretrained, tmp_path / "model")

    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.best_epoch == 1
    assert set(result.curves()) == {"sentiment/train_loss", "sentiment/dev_accuracy"}


def test_ner_entity_metrics_next_to_all_o_baseline(pretrained: Path, tmp_path: Path) -> None:
    task = ner_task(tmp_path / "ner")
    result = finetune(task, pretrained, tmp_path / "model")

    metrics = result.metrics
    assert metrics["majority_entity_f1"] == 0.0
    assert 0.0 < metrics["majority_token_accuracy"] < 1.0
    assert metrics["entity_f1"] > 0.5
    assert {row["label"] for row in result.evaluation["per_class"]} == {"PER", "LOC"}


def test_ner_tags_go_to_first_subtoken_only(pretrained: Path, tmp_path: Path) -> None:
    task = ner_task(tmp_path / "ner")
    data = load_task(task)
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    label2id = {label: i for i, label in enumerate(data.labels)}
    rows = data.train.select([0]).map(lambda row: {"tokens": ["张伟", "去", "北京"], "tags": ["B-PER", "O", "B-LOC"]})

    example = _encode_tokens(rows, tokenizer, label2id, 32)[0]

    # [CLS] 张 伟 去 北 京 [SEP]: each word's tag on its first character, the rest and specials ignored
    assert example["labels"] == [-100, label2id["B-PER"], -100, label2id["O"], label2id["B-LOC"], -100, -100]


def _rate_of(groups: list[dict], model: torch.nn.Module) -> dict[str, float]:
    by_id = {id(p): group["lr"] for group in groups for p in group["params"]}
    assert sum(len(group["params"]) for group in groups) == len(by_id) == len(list(model.parameters()))
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_learning_rates_by_depth_and_a_faster_head(arch: str, pretrained: Path, tmp_path: Path) -> None:
    shape = ModelConfig(arch=arch, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, max_seq_len=32)
    encoder = save_random_init(shape, pretrained, tmp_path / arch, seed=0)
    model = load_for_task(AutoModelForSequenceClassification, encoder, num_labels=2)
    task = sentiment_task(tmp_path / "unused.csv", lr=1e-3, head_lr_scale=10.0, layer_lr_decay=0.5)

    rates = _rate_of(parameter_groups(model, task), model)

    prefix = model.base_model_prefix
    layer = "model.layers" if arch == "modernbert" else "bert.encoder.layer"
    assert rates[f"{layer}.2.attn.Wqkv.weight" if arch == "modernbert" else f"{layer}.2.attention.self.query.weight"] == pytest.approx(1e-3)
    def distinct(names: list[str]) -> list[float]:
        assert names
        return sorted({rates[name] for name in names})

    assert distinct([n for n in rates if n.startswith(f"{layer}.0.")]) == pytest.approx([2.5e-4])
    assert distinct([n for n in rates if n.startswith(f"{layer}.1.")]) == pytest.approx([5e-4])
    assert distinct([n for n in rates if ".embeddings." in n]) == pytest.approx([1.25e-4])
    head = [n for n in rates if not n.startswith(f"{prefix}.") or ".pooler." in n]
    assert "classifier.weight" in head and distinct(head) == pytest.approx([1e-2])
    if arch == "modernbert":
        assert rates["model.final_norm.weight"] == pytest.approx(1e-3)
        assert "head.dense.weight" in head  # the pretrained prediction head over the pooled tokens
    else:
        assert "bert.pooler.dense.weight" in head


def test_default_rates_are_one_rate_for_every_parameter(pretrained: Path) -> None:
    model = load_for_task(AutoModelForSequenceClassification, pretrained, num_labels=2)
    groups = parameter_groups(model, sentiment_task(Path("unused.csv"), lr=3e-3))
    assert [group["lr"] for group in groups] == [3e-3]


def test_a_steep_layer_decay_leaves_the_embeddings_where_pretraining_put_them(pretrained: Path, tmp_path: Path) -> None:
    csv_path = write_sentiment_csv(tmp_path / "reviews.csv")
    before = load_file(pretrained / "model.safetensors")["bert.embeddings.word_embeddings.weight"]

    def embeddings_after(**overrides: float) -> torch.Tensor:
        out = tmp_path / f"model-{len(list(tmp_path.iterdir()))}"
        finetune(sentiment_task(csv_path, epochs=2, patience=2, **overrides), pretrained, out)
        return load_file(out / "model.safetensors")["bert.embeddings.word_embeddings.weight"]

    assert (embeddings_after(layer_lr_decay=1e-4) - before).abs().max() < 1e-5
    assert (embeddings_after() - before).abs().max() > 1e-3


@pytest.mark.parametrize("field, value", [("head_lr_scale", 0.0), ("layer_lr_decay", 0.0), ("layer_lr_decay", 1.5)])
def test_rate_knobs_out_of_range_are_config_errors(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        sentiment_task(Path("unused.csv"), **{field: value})
