"""Fine-tuning a tiny encoder on small hand-written tasks: metrics, baselines, early stopping, BIO alignment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.tasks import ner_task, sentiment_task, tiny_pretrained, write_sentiment_csv
from transformers import AutoTokenizer

from pipeline.train.finetune import _encode_tokens, finetune
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
