"""The versions room on local disk and in memory:// (an fsspec object store): resolve, publish, set aside,
list; and integrity at rest: a flipped byte, a truncated shard and a missing shard are found wherever a
shard is read (training, diff, validation) and by `check_stored_files`."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from helpers.versions import write_version
from pipeline import contracts, storage, versions
from pipeline.config import ContractsConfig
from pipeline.diff import diff_versions
from pipeline.schema import DOCUMENT_SCHEMA, InputRecord, Manifest, document_id
from pipeline.shards import write_shard
from pipeline.train.data import iter_record_batches, iter_texts, shard_urls

REPO = Path(__file__).resolve().parents[1]


def _documents(n: int) -> pa.Table:
    rows = [{"id": document_id("s", str(i)), "source": "s", "kind": "news", "lang": "zh", "text": f"文本{i}",
             "meta": "{}"} for i in range(n)]
    return pa.Table.from_pylist(rows, DOCUMENT_SCHEMA)


def _manifest(version: str) -> Manifest:
    return Manifest(dataset="d", version=version, config_hash="c", code_version="x", libraries={}, inputs=[],
                    shards=[], rejects=[], ledger_totals={}, ledger_by_source={})


def _staged(root: Path, version: str) -> Path:
    write_shard(_documents(5), root / "data" / "train" / "s-zh-00000.arrow")
    versions.write_manifest(root, _manifest(version))
    return root


@pytest.fixture()
def version(tmp_path: Path) -> Path:
    """A version with two shards of several record batches each; returns its manifest path."""
    docs = [{"source": "news", "lang": "zh", "id": f"n{i}", "text": f"第{i}条新闻，市场今天上涨。"} for i in range(9)]
    docs += [{"source": "wiki", "lang": "en", "id": f"w{i}", "text": f"Article number {i} about rivers."} for i in range(7)]
    ledger = [{"source": s, "partition": f"{s}-00000", "outcome": "kept", "reason": "", "count": c}
              for s, c in (("news", 9), ("wiki", 7))]
    return write_version(tmp_path / "datasets", docs, ledger, [InputRecord(source="news", uri="n.jsonl", fingerprint="f")])


# ---- publish, set aside, resolve ----------------------------------------------------------------------


def test_publish_moves_whole_version_and_keeps_identical_one(tmp_path: Path) -> None:
    datasets = str(tmp_path / "datasets")
    staging = _staged(tmp_path / "work" / "build-1", "v1")
    uri = versions.publish(staging, datasets, "d", "v1")
    assert Path(uri).exists() and not staging.exists()
    assert versions.latest_version(datasets, "d") == "v1"
    again = _staged(tmp_path / "work" / "build-2", "v1")
    before = os.stat(uri).st_mtime_ns
    versions.publish(again, datasets, "d", "v1")
    assert os.stat(uri).st_mtime_ns == before and not again.exists()


def test_publish_replaces_a_remnant_without_manifest(tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    remnant = datasets / "d" / "v1" / "data" / "train"
    remnant.mkdir(parents=True)
    (remnant / "half.arrow").write_bytes(b"partial upload")
    versions.publish(_staged(tmp_path / "build", "v1"), str(datasets), "d", "v1")
    assert sorted(p.name for p in remnant.iterdir()) == ["s-zh-00000.arrow"]
    assert not list((datasets / "d").glob(".*")), "no retired copy is left behind"


def test_object_store_gets_files_then_manifest_then_latest(tmp_path: Path) -> None:
    uri = versions.publish(_staged(tmp_path / "build", "v2"), "memory://bucket/datasets", "d", "v2")
    assert uri == "memory://bucket/datasets/d/v2/manifest.json"
    assert storage.read_arrow_table(uri.replace("manifest.json", "data/train/s-zh-00000.arrow")).num_rows == 5
    assert versions.latest_version("memory://bucket/datasets", "d") == "v2"
    assert versions.resolve_manifest("latest", "memory://bucket/datasets", "d") == uri
    assert versions.resolve_manifest("memory://bucket/datasets/d") == uri
    assert versions.list_versions("memory://bucket/datasets", "d") == ["v2"]


def test_a_failed_build_is_set_aside_and_latest_stays(tmp_path: Path) -> None:
    datasets = str(tmp_path / "datasets")
    versions.publish(_staged(tmp_path / "good", "v1"), datasets, "d", "v1")
    kept_at = versions.set_aside(_staged(tmp_path / "bad", "v2"), datasets, "d", "v2")
    assert kept_at == str(tmp_path / "datasets" / "d" / "failed" / "v2" / "manifest.json")
    assert versions.load_manifest(kept_at).version == "v2"
    assert versions.latest_version(datasets, "d") == "v1"
    assert versions.list_versions(datasets, "d") == ["v1"]
    with pytest.raises(versions.VersionNotFound):
        versions.resolve_manifest("v2", datasets, "d")


def test_resolve_manifest_follows_every_kind_of_reference(version: Path, tmp_path: Path) -> None:
    datasets, dataset_dir, version_id = str(tmp_path / "datasets"), version.parent.parent, version.parent.name
    assert versions.resolve_manifest(str(version)) == str(version)
    assert versions.resolve_manifest(str(version.parent)) == str(version)
    assert versions.resolve_manifest(str(dataset_dir)) == str(version)
    assert versions.resolve_manifest("latest", datasets, "demo") == str(version)
    assert versions.resolve_manifest(version_id, datasets, "demo") == str(version)
    with pytest.raises(versions.VersionNotFound, match="0123456789abcdef"):
        versions.resolve_manifest("0123456789abcdef", datasets, "demo")
    with pytest.raises(versions.VersionNotFound, match="run `corpusflow build` first"):
        versions.resolve_manifest("latest", datasets, "never-built")
    with pytest.raises(versions.VersionNotFound, match="no such manifest"):
        versions.resolve_manifest(str(tmp_path / "missing" / "manifest.json"))


# ---- integrity at rest --------------------------------------------------------------------------------


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _news_shard(manifest_path: Path) -> Path:
    return manifest_path.parent / "data" / "train" / "news-zh-00000.arrow"


@pytest.mark.parametrize("damage", [_flip_middle_byte, _truncate, Path.unlink], ids=["flipped", "truncated", "missing"])
def test_damaged_shard_is_named_by_every_reader(version: Path, damage) -> None:
    shard = _news_shard(version)
    damage(shard)
    (problem,) = versions.check_stored_files(str(version))
    assert problem.startswith("data/train/news-zh-00000.arrow: ")
    manifest = versions.load_manifest(version)
    with pytest.raises(storage.IntegrityError, match="news-zh-00000.arrow"):
        list(iter_texts(str(version), manifest, "train"))
    with pytest.raises(storage.IntegrityError, match="news-zh-00000.arrow"):
        diff_versions(str(version), str(version))
    results = contracts.validate_path(version.parent, ContractsConfig(directory=str(REPO / "data_contracts")))
    by_shard = {Path(r["shard"]).name: r for r in results}
    assert by_shard["news-zh-00000.arrow"]["critical_failed"] and by_shard["news-zh-00000.arrow"]["error"]
    wiki = by_shard["wiki-en-00000.arrow"]
    assert wiki["rows"] == 7 and "error" not in wiki, "one bad shard does not hide the others"


def test_flipped_byte_error_names_both_hashes(version: Path) -> None:
    shard = _news_shard(version)
    expected = storage.file_sha256(shard)
    _flip_middle_byte(shard)
    (ref,) = [r for r in shard_urls(str(version), versions.load_manifest(version), "train") if "news" in r.url]
    with pytest.raises(storage.IntegrityError) as caught:
        list(iter_record_batches(ref))
    assert caught.value.expected == expected and caught.value.actual == storage.file_sha256(shard)
    assert expected in str(caught.value) and caught.value.actual in str(caught.value)


def test_intact_shards_read_with_their_hash_and_resume_mid_shard(version: Path) -> None:
    assert versions.check_stored_files(str(version)) == []
    (ref,) = [r for r in shard_urls(str(version), versions.load_manifest(version), "train") if "news" in r.url]
    rows = [row for batch in iter_record_batches(ref, start_row=4) for row in batch.column("id").to_pylist()]
    assert rows == [f"n{i}" for i in range(4, 9)]  # the skipped batches still went through the checksum


def test_invalid_utf8_in_a_shard_is_one_failed_row_without_its_text(tmp_path: Path) -> None:
    shard = tmp_path / "data" / "train" / "s-zh-00000.arrow"
    write_shard(_documents(3), shard)
    data = shard.read_bytes()
    shard.write_bytes(data.replace("文本1".encode(), b"\xff\xfe\xfd\xfc\xfb\xfa\xf9"))
    (result,) = contracts.validate_path(shard, ContractsConfig(directory=str(REPO / "data_contracts")))
    assert result["critical_failed"] and "UTF8" in result["error"].upper().replace("-", "")
    assert "文本" not in result["error"]
