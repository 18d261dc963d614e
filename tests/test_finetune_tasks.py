"""Task loaders on the real public files in ../shared/data: formats, field mapping, row counts, splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import TaskConfig
from pipeline.train.tasks import TaskData, load_task

pytestmark = pytest.mark.shared_data  # the `shared_data` fixture skips, with the reason, when it is absent


def _task(**settings: object) -> TaskConfig:
    return TaskConfig(**{"type": "sequence_classification", "lang": "zh", **settings})


def _total(data: TaskData) -> int:
    return len(data.train) + len(data.validation) + len(data.test)


def test_chnsenticorp_csv_held_out_by_hash(shared_data: Path) -> None:
    task = _task(name="chnsenticorp", train=str(shared_data / "comments/ChnSentiCorp_htl_all.csv"),
                 fields={"text": "review", "label": "label"})
    data = load_task(task)

    # 7,766 rows, one of them with an empty review, which is counted, not silently lost
    assert _total(data) + sum(data.skipped.values()) == 7766
    assert data.skipped == {"train:empty_text": 1}
    assert data.labels == ["0", "1"]
    assert 0.08 < len(data.test) / _total(data) < 0.12
    assert 0.08 < len(data.validation) / _total(data) < 0.12
    assert not set(data.test["text"]) & set(data.train["text"])  # duplicates land on one side
    assert load_task(task).test["id"] == data.test["id"]  # the same split every time


def test_tnews_jsonl_splits_and_word_labels(shared_data: Path) -> None:
    news = shared_data / "news"
    data = load_task(_task(
        name="tnews", format="jsonl", train=str(news / "tnews_train_few_all.json"),
        validation=str(news / "tnews_dev_few_all.json"), test=str(news / "tnews_test_public.json"),
        fields={"text": "sentence", "label": "label_desc", "id": "id"},
    ))
    assert (len(data.train), len(data.validation), len(data.test)) == (1185, 1098, 2010)
    assert len(data.labels) == 15 and "news_finance" in data.labels


def test_ag_news_csv_joins_title_and_description(shared_data: Path) -> None:
    data = load_task(_task(name="ag_news", lang="en", train=str(shared_data / "news/ag_news_test.csv"),
                           fields={"text": "title,description", "label": "label"}))
    assert _total(data) == 7600
    assert data.labels == ["1", "2", "3", "4"]
    assert any(text.startswith("Fears for T N pension after talks Unions") for text in data.train["text"])


def test_amazon_headerless_tsv(shared_data: Path) -> None:
    data = load_task(_task(name="amazon", lang="en", format="tsv",
                           train=str(shared_data / "comments/amazon_cells_labelled.txt"),
                           fields={"text": "0", "label": "1"}))
    assert _total(data) == 1000
    assert data.labels == ["0", "1"]


def test_online_shopping_zip_csv_strips_byte_order_marks(shared_data: Path) -> None:
    data = load_task(_task(name="shopping", format="zip_csv", max_examples=3000,
                           train=str(shared_data / "comments/online_shopping_10_cats.zip"),
                           fields={"text": "review", "label": "label"}))
    assert len(data.train) == 3000  # capped by a seeded sample
    assert data.labels == ["0", "1"]  # a sample, not the label-sorted head of the file
    assert not any("\ufeff" in text for text in data.train["text"])


def test_msra_zip_conll_sentences(shared_data: Path) -> None:
    data = load_task(TaskConfig(name="msra", type="token_classification", lang="zh", format="zip_conll",
                                train=str(shared_data / "ner/dh_msra.zip"), primary_metric="entity_f1"))
    assert _total(data) == 55289
    assert data.labels == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
    first = data.train[0]
    assert len(first["tokens"]) == len(first["tags"]) and all(len(char) == 1 for char in first["tokens"])
