"""The readers on the public data in ../shared/data, read as shipped (skipped when it is absent)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.sources import read_rows, reasons, source_for

pytestmark = pytest.mark.shared_data


def test_enwiki_excerpt(shared_data: Path) -> None:
    source = source_for(shared_data / "wiki/enwiki-pages-articles-excerpt.xml.bz2", kind="wiki", lang="en",
                        format="mediawiki")
    documents, rejects = read_rows(source)
    assert len(documents) + len(rejects) == 206
    filtered = reasons(r for r in rejects if r["outcome"] == "filtered")
    assert filtered.count("redirect") >= 90
    articles = 206 - len(filtered)
    assert len(documents) >= 0.9 * articles
    leftovers = [(d["title"], marker) for d in documents for marker in ("{{", "[[", "<ref") if marker in d["text"]]
    assert leftovers == []
    anarchism = next(d for d in documents if d["title"] == "Anarchism")
    assert anarchism["url"] == "https://en.wikipedia.org/wiki/Anarchism"
    assert re.search(r"^Etymology and terminology$", anarchism["text"], re.M)
    # boilerplate sections go, the words of inline templates stay; disambiguation pages are filtered
    assert not re.search(r"^(?:References|External links|See also|Further reading)$", anarchism["text"], re.M)
    assert "from the Greek ἀναρχία" in anarchism["text"]
    assert filtered.count("disambiguation") == 8


def test_tnews_unlabeled_read_completely(shared_data: Path) -> None:
    path = shared_data / "news/tnews_unlabeled.json"
    lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    source = source_for(path, kind="news", format="jsonl", fields={"text": "sentence", "id": "id"})
    documents, rejects = read_rows(source)
    assert len(documents) == lines == 20_000 and rejects == []
    assert isinstance(documents[0]["meta"]["keywords"], list)


def test_chnsenticorp_read_completely(shared_data: Path) -> None:
    source = source_for(shared_data / "comments/ChnSentiCorp_htl_all.csv", fields={"text": "review", "label": "label"},
                        label_map={"1": "positive", "0": "negative"})
    documents, rejects = read_rows(source)
    assert len(documents) + len(rejects) == 7766
    assert reasons(rejects) == ["empty_text"]  # one review in the file is empty
    assert {d["label"] for d in documents} == {"positive", "negative"}


def test_online_shopping_zip_accounted(shared_data: Path) -> None:
    path = shared_data / "comments/online_shopping_10_cats.zip"
    source = source_for(path, fields={"text": "review", "label": "label"})
    documents, rejects = read_rows(source)
    assert len(documents) + len(rejects) == 62_774
    assert len(documents) >= 62_700
    assert not any("\ufeff" in d["text"] for d in documents)
    assert len({d["meta"]["category"] for d in documents}) == 10
