"""Exact dedup: the canonical form and the content_hash stage."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from pipeline.dedup import ContentHashStage, canonical_texts, content_hashes
from pipeline.stages import check_chain


def test_canonical_form_folds_case_space_and_punctuation() -> None:
    assert canonical_texts(["Hello,  World!", "hello world", "物流很快。 好评！", "物流很快,好评"]) == [
        "helloworld", "helloworld", "物流很快好评", "物流很快好评",
    ]


def test_canonical_form_keeps_what_changes_meaning() -> None:
    forms = canonical_texts(["价格3.5元", "价格35元", "10:30到", "1030到", "👍", "👎"])
    assert len(set(forms)) == 6


def test_punctuation_only_texts_stay_apart() -> None:
    assert canonical_texts(["!!!", "???", "  "]) == ["!!!", "???", ""]


def test_content_hash_is_sha256_hex_of_the_canonical_form() -> None:
    (digest,) = content_hashes(["Good Book!"])
    assert digest == hashlib.sha256("goodbook".encode()).hexdigest()
    assert len(digest) == 64 and digest == digest.lower()


def test_stage_adds_content_hash_and_leaves_the_batch_alone() -> None:
    batch = pa.RecordBatch.from_pydict({"id": ["a", "b", "c"], "text": ["很好!", "很好。", "很差"]})
    stage = ContentHashStage()
    result = stage(batch)
    assert result.drop_reasons is None
    assert batch.schema.names == ["id", "text"]
    hashes = result.batch.column("content_hash").to_pylist()
    assert hashes[0] == hashes[1] != hashes[2]
    assert result.batch.schema.field("content_hash").type == pa.string()
    assert check_chain([stage], ["id", "text"]) == ["id", "text", "content_hash"]


def test_empty_batch() -> None:
    batch = pa.RecordBatch.from_pydict({"text": pa.array([], pa.string())})
    assert ContentHashStage()(batch).batch.column("content_hash").to_pylist() == []
