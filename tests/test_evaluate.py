"""Evaluation: LM loss on manifest shards, metrics next to baselines, and the decontamination report."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pytest
from helpers.tasks import sentiment_task, write_sentiment_csv
from helpers.training import QUARANTINE_MARKER, tiny_train_config, write_dataset
from transformers import AutoTokenizer

from pipeline.train.evaluate import (
    decontamination_report,
    entity_metrics,
    evaluate_lm,
    iter_documents,
    sequence_metrics,
)
from pipeline.train.pretrain import build_model, pretrain
from pipeline.train.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_dataset(tmp_path_factory.mktemp("dataset")))


def test_sequence_metrics_and_majority_baseline() -> None:
    gold = ["pos", "pos", "pos", "neg"]
    metrics, table = sequence_metrics(gold, ["pos", "neg", "pos", "neg"], majority_label="pos")

    assert metrics["accuracy"] == 0.75
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)  # pos: p 1, r 2/3; neg: p 1/2, r 1
    assert metrics["majority_accuracy"] == 0.75
    assert metrics["majority_macro_f1"] == pytest.approx((6 / 7 + 0) / 2)  # "neg" is never guessed: F1 0
    assert [(row["label"], row["support"]) for row in table] == [("neg", 1), ("pos", 3)]


def test_entity_metrics_count_whole_spans_against_all_o() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "O", "O", "B-LOC"]]  # the person span is cut short: a miss, not half a hit
    metrics, table = entity_metrics(gold, predicted)

    assert metrics["entity_precision"] == 0.5 and metrics["entity_recall"] == 0.5
    assert metrics["majority_entity_f1"] == 0.0
    assert metrics["token_accuracy"] == 0.75 and metrics["majority_token_accuracy"] == 0.25
    assert {row["label"]: row["f1"] for row in table} == {"LOC": 1.0, "PER": 0.0}


def test_lm_loss_falls_with_pretraining_and_is_reproducible(manifest_path: str, tmp_path: Path) -> None:
    config = tiny_train_config(max_steps=40)
    tokenizer_dir = train_tokenizer(manifest_path, config.tokenizer, tmp_path / "tokenizer")
    untrained = tmp_path / "untrained"
    build_model(config.model, AutoTokenizer.from_pretrained(tokenizer_dir)).save_pretrained(untrained)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(untrained)
    trained = pretrain(manifest_path, tokenizer_dir, config, tmp_path / "pretrained").model_dir

    before = evaluate_lm(untrained, manifest_path)
    after = evaluate_lm(trained, manifest_path)

    assert after["objective"] == "mlm" and after["split"] == "validation"
    assert after["loss"] < before["loss"]
    assert after["perplexity"] == pytest.approx(2.718281828 ** after["loss"], rel=1e-6)
    assert evaluate_lm(trained, manifest_path) == after  # fixed masked positions
    assert evaluate_lm(trained, manifest_path, max_docs=5)["blocks"] < after["blocks"]


def test_lm_loss_of_a_decoder_is_causal(manifest_path: str, tmp_path: Path) -> None:
    config = tiny_train_config(kind="bpe", arch="llama", max_steps=2)
    tokenizer_dir = train_tokenizer(manifest_path, config.tokenizer, tmp_path / "tokenizer")
    model_dir = pretrain(manifest_path, tokenizer_dir, config, tmp_path / "decoder").model_dir

    result = evaluate_lm(model_dir, manifest_path, max_docs=20)

    assert result["objective"] == "clm" and result["scored_tokens"] > 0 and result["loss"] > 0


def test_decontamination_finds_planted_overlaps(manifest_path: str, tmp_path: Path) -> None:
    corpus = [doc["text"] for doc in iter_documents(manifest_path, "train")]
    zh_doc = next(text for text in corpus if len(text) >= 30 and not text.isascii())
    quarantined = _first_text(Path(manifest_path).parent / "train/fixture-zh-quarantined.arrow")
    assert quarantined.startswith(QUARANTINE_MARKER)
    test_rows = [
        ("1", "开头不同的话" + zh_doc[:20]),  # a 20-character passage of a train document: contaminated
        ("1", zh_doc[5:25] + "，结尾也不同"),  # another cut of it, with punctuation shifted: contaminated
        ("0", "这家酒店非常干净，很满意，强烈推荐"),  # text of our own: clean
        ("0", quarantined[:13]),  # only in a quarantined shard, which never reaches training: clean
        ("1", "太短了"),  # shorter than n: cannot be checked
    ]
    train_file = write_sentiment_csv(tmp_path / "train.csv")
    test_file = write_sentiment_csv(tmp_path / "test.csv", test_rows)
    task = sentiment_task(train_file, test=str(test_file), validation=str(train_file))

    report = decontamination_report(task, manifest_path, n=13)

    assert report["unit"] == "char" and report["test_items"] == 5 and report["too_short"] == 1
    assert report["contaminated"] == 2 and report["contaminated_fraction"] == pytest.approx(0.4)
    assert [item["id"] for item in report["items"]] == ["test.csv:0", "test.csv:1"]
    doc_chars = "".join(c for c in zh_doc if c.isalnum())  # n-grams are compared without punctuation
    assert all(len(item["ngram"]) == 13 and item["ngram"] in doc_chars for item in report["items"])


def test_decontamination_of_english_uses_word_ngrams(manifest_path: str, tmp_path: Path) -> None:
    corpus = [doc["text"] for doc in iter_documents(manifest_path, "train")]
    en_doc = next(text for text in corpus if text.isascii() and len(text.split()) >= 16)
    planted = " ".join(en_doc.split()[:14]).upper()  # case and spacing do not hide an overlap
    path = tmp_path / "reviews.tsv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([[planted, "1"], ["a review we wrote ourselves, clean", "0"]])
    task = sentiment_task(path, lang="en", format="tsv", fields={"text": "0", "label": "1"},
                          validation=str(path), test=str(path))

    report = decontamination_report(task, manifest_path, n=13)

    assert report["unit"] == "word" and report["contaminated"] == 1
    assert report["items"][0]["text"] == planted


def _first_text(shard: Path) -> str:
    with pa.OSFile(str(shard)) as source:
        return next(iter(pa.ipc.open_stream(source))).column("text")[0].as_py()
