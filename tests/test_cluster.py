"""The build on a Ray cluster of two nodes with its output on S3 (moto on 127.0.0.1): every task finds its
inputs and staging although the nodes run in another directory, and the version equals the local build's."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BUCKET = "corpusflow"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def s3_for_every_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 whose endpoint and credentials are in the environment, as every node of a cluster gets them."""
    pytest.importorskip("s3fs", reason="s3fs is part of the dev extra")
    import boto3
    import fsspec
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                        "FSSPEC_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint, "skip_instance_cache": True})
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield f"s3://{BUCKET}"
    server.stop()


@pytest.fixture()
def two_node_cluster(prefect_api: str, s3_for_every_process: str, tmp_path: Path) -> Iterator[str]:
    """Head and worker node, one CPU each, started from a directory that is not the repository."""
    from ray.cluster_utils import Cluster

    elsewhere = tmp_path / "nodes-start-here"
    elsewhere.mkdir()
    here = os.getcwd()
    os.chdir(elsewhere)  # the nodes' processes inherit it: relative paths would resolve under it
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    finally:
        os.chdir(here)
    yield cluster.address
    cluster.shutdown()


def _demo(tmp_path: Path, name: str, **overrides: object) -> Path:
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    data.update(run_dir=str(tmp_path / name), **overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.slow
def test_two_node_ray_cluster_with_s3_output_builds_the_local_version(
    two_node_cluster: str, s3_for_every_process: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.build_corpus import build_corpus
    from pipeline import storage
    from pipeline.versions import latest_version, load_manifest

    monkeypatch.chdir(REPO)  # the flow runs where the demo config's relative sample paths resolve
    datasets = f"{s3_for_every_process}/datasets"
    on_cluster = build_corpus(str(_demo(tmp_path, "cluster", output_uri=datasets,
                                        runner={"kind": "ray", "ray_address": two_node_cluster})))
    local = build_corpus(str(_demo(tmp_path, "local", runner={"kind": "local", "workers": 2})))

    cluster_manifest, local_manifest = load_manifest(on_cluster), load_manifest(local)
    assert on_cluster.startswith(f"{datasets}/demo/")
    assert cluster_manifest.version == local_manifest.version
    assert [(s.path, s.sha256) for s in cluster_manifest.shards + cluster_manifest.rejects] == \
           [(s.path, s.sha256) for s in local_manifest.shards + local_manifest.rejects]
    assert latest_version(datasets, "demo") == cluster_manifest.version
    assert not (tmp_path / "cluster" / "work").exists(), "staging went to the work URL on S3, not a local disk"
    assert storage.list_files(f"{datasets}/_work/partitions"), "partitions were staged beside the output"
    assert not [d for d in storage.list_dirs(f"{datasets}/_work") if d.startswith("build-")], \
        "the published staging is removed"
