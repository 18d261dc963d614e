"""pipeline.storage on local disk and on an S3 API served by moto on 127.0.0.1: an Arrow shard written
through s3fs reads back equal, a writer that fails leaves no object and no file behind, and a dataset kept on
S3 is built, trained from its LATEST, diffed and inspected."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from pipeline import storage

BUCKET = "corpusflow-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs", reason="s3fs is part of the dev extra")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """s3:// URLs resolve to the moto server, configured the way a deployment would (fsspec config)."""
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint, "skip_instance_cache": True})
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}"


def _shard() -> pa.Table:
    return pa.table({
        "id": ["a", "b", "c"],
        "text": ["长城是中国古代的军事防御工程", "Markets rose.", "服务太慢了"],
        "words": [["长城", "是"], ["Markets", "rose"], ["服务", "太慢"]],
        "n_chars": [14, 13, 5],
    })


def _write_stream(handle: io.RawIOBase, table: pa.Table) -> None:
    with pa.ipc.new_stream(handle, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)


def test_arrow_shard_round_trip_on_s3(s3: str) -> None:
    shard_uri = storage.join(s3, "datasets", "demo", "v1", "data", "train", "wiki-zh-00000.arrow")
    assert shard_uri == f"{s3}/datasets/demo/v1/data/train/wiki-zh-00000.arrow"
    assert not storage.is_local(shard_uri)
    storage.makedirs(storage.parent(shard_uri))
    with storage.open_output(shard_uri) as handle:
        _write_stream(handle, _shard())
    assert storage.exists(shard_uri)
    assert storage.read_arrow_table(shard_uri).equals(_shard())
    with storage.open_arrow(shard_uri) as (schema, batches):
        assert schema == _shard().schema
        assert [b.num_rows for b in batches] == [2, 1]  # streamed batch by batch
    assert storage.read_arrow_table(shard_uri, columns=["id"]).column("id").to_pylist() == ["a", "b", "c"]


def test_failed_write_leaves_no_object_on_s3(s3: str) -> None:
    uri = storage.join(s3, "datasets", "demo", "v2", "manifest.json")
    with pytest.raises(RuntimeError):
        with storage.open_output(uri) as handle:
            handle.write(b'{"half": ')
            raise RuntimeError("writer died")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b'{"whole": true}')
    assert storage.read_bytes(uri) == b'{"whole": true}'


def test_local_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    target = storage.join(str(tmp_path), "v1", "data", "train", "news-en-00000.arrow")
    with storage.open_output(target) as handle:
        _write_stream(handle, _shard())
    assert storage.read_arrow_table(target).equals(_shard())
    with pytest.raises(RuntimeError):
        with storage.open_output(target) as handle:
            handle.write(b"garbage")
            raise RuntimeError("writer died")
    assert storage.read_arrow_table(target).equals(_shard())  # the old content survived
    assert sorted(p.name for p in Path(target).parent.iterdir()) == ["news-en-00000.arrow"]


def test_durable_writes_reach_the_disk_before_their_name_and_intermediates_skip_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    storage.write_bytes(str(tmp_path / "kept.bin"), b"a")
    assert len(synced) == 2  # the file, then its directory
    storage.write_bytes(str(tmp_path / "scratch.bin"), b"b", durable=False)
    assert len(synced) == 2 and (tmp_path / "scratch.bin").read_bytes() == b"b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.bin", "scratch.bin"]


def test_arrow_file_format_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "ledger.arrow"
    with pa.ipc.new_file(str(path), _shard().schema) as writer:
        writer.write_table(_shard())
    assert storage.read_arrow_table(str(path)).equals(_shard())


@pytest.mark.slow
def test_build_train_diff_and_inspect_with_the_dataset_on_s3(
    s3: str, s3_endpoint: str, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path with `output_uri: s3://...`: LATEST, manifests and shards are read through the store."""
    import subprocess
    import sys

    import yaml

    from flows.build_corpus import build_corpus
    from flows.train_models import train_models
    from pipeline.config import load_config
    from pipeline.diff import diff_versions
    from pipeline.versions import latest_version, load_manifest, resolve_manifest

    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", s3_endpoint)  # worker and CLI processes find the store too
    repo = Path(__file__).resolve().parents[1]
    data = load_config(repo / "configs" / "demo.yaml").model_dump(mode="json")
    datasets = f"{s3}/e2e"
    data.update(run_dir=str(tmp_path / "run"), output_uri=datasets)
    data["train"]["pretrain"].update(max_steps=6, checkpoint_every=6, log_every=3)
    data["train"]["tasks"] = [dict(data["train"]["tasks"][0], epochs=1)]
    config_path = tmp_path / "s3.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True))

    manifest_uri = build_corpus(str(config_path))
    version = load_manifest(manifest_uri).version
    assert manifest_uri == f"{datasets}/demo/{version}/manifest.json"
    assert latest_version(datasets, "demo") == version and not (tmp_path / "run" / "datasets").exists()

    trained = train_models(str(config_path))  # no manifest given: LATEST on the object store
    assert trained["dataset_version"] == version

    latest = resolve_manifest("latest", datasets, "demo")
    assert diff_versions(latest, manifest_uri)["totals"]["unchanged"] == load_manifest(latest).ledger_totals["kept"]
    inspect = subprocess.run([sys.executable, "-m", "flows.cli", "inspect", f"{datasets}/demo"], cwd=repo,
                             capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert inspect.returncode == 0, inspect.stdout + inspect.stderr
    assert version in inspect.stdout
