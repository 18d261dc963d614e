"""The build flow end to end on the samples, against a real local Prefect server."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import pyarrow.compute as pc
import pytest
import yaml

from pipeline.config import load_config
from pipeline.schema import OUTCOMES
from pipeline.shards import load_manifest, read_shard

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, name: str, **overrides: object) -> Path:
    data = load_config(REPO / "configs" / "demo.yaml").model_dump(mode="json")
    data["run_dir"] = str(tmp_path / name)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def run_build(config_path: Path) -> str:
    from flows.build_corpus import build_corpus

    return build_corpus(str(config_path))


@pytest.fixture(scope="module")
def demo_build(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp_path = tmp_path_factory.mktemp("demo")
    config_path = write_config(tmp_path, "two-workers", runner__workers=2)
    return config_path, run_build(config_path)


def test_every_record_is_accounted_once(demo_build: tuple[Path, str]) -> None:
    _, manifest_path = demo_build
    manifest = load_manifest(manifest_path)
    totals = manifest.ledger_totals
    assert totals["read"] == sum(totals[o] for o in OUTCOMES) > 0
    assert all(totals[o] > 0 for o in OUTCOMES), f"the samples exercise every outcome: {totals}"
    root = Path(manifest_path).parent
    kept_rows = sum(read_shard(root / s.path).num_rows for s in manifest.shards + manifest.quarantined)
    rejects = [read_shard(root / s.path) for s in manifest.rejects]
    assert kept_rows == totals["kept"]
    assert sum(r.num_rows for r in rejects) == totals["read"] - totals["kept"]
    for source, by_source in manifest.ledger_by_source.items():
        assert by_source["read"] == sum(by_source[o] for o in OUTCOMES), source


def test_drops_carry_reasons_and_duplicates_point_at_kept_documents(demo_build: tuple[Path, str]) -> None:
    _, manifest_path = demo_build
    manifest = load_manifest(manifest_path)
    root = Path(manifest_path).parent
    rejects = [row for s in manifest.rejects for row in read_shard(root / s.path).to_pylist()]
    kept_ids = {i for s in manifest.shards for i in read_shard(root / s.path, ["id"]).column("id").to_pylist()}
    reasons = {r["reason"] for r in rejects}
    assert "redirect" in reasons and {"exact", "near"} <= reasons
    assert all(r["reason"] and r["stage"] for r in rejects)
    duplicates = [r for r in rejects if r["outcome"] == "duplicate"]
    assert duplicates and all(r["duplicate_of"] in kept_ids for r in duplicates)
    unreadable = [r for r in rejects if r["outcome"] == "rejected"]
    assert unreadable and all(r["file"] and r["position"] is not None for r in unreadable)


def test_shards_load_with_datasets_and_manifest_describes_them(demo_build: tuple[Path, str]) -> None:
    _, manifest_path = demo_build
    manifest = load_manifest(manifest_path)
    root = Path(manifest_path).parent
    assert manifest.version == manifest.content_hash()
    assert {s.split for s in manifest.shards} >= {"train"}
    for shard in manifest.shards:
        loaded = datasets.Dataset.from_file(str(root / shard.path))
        assert loaded.num_rows == shard.rows and shard.contract["success"] is not None
        assert set(loaded.unique("split")) == {shard.split} and set(loaded.unique("lang")) == {shard.lang}
    train_files = [str(root / s.path) for s in manifest.shards if s.split == "train"]
    loaded = datasets.load_dataset("arrow", data_files={"train": train_files}, cache_dir=str(root.parent / ".hf"))
    assert loaded["train"].num_rows == sum(s.rows for s in manifest.shards if s.split == "train")
    assert {i.source for i in manifest.inputs} == {s.name for s in load_config(demo_build[0]).sources}
    assert all(i.fingerprint for i in manifest.inputs)
    assert manifest.contracts == {"documents.v1": "1", "rejects.v1": "1"}
    assert all(s.contract["suite"] == "documents.v1" for s in manifest.shards)


def _kept_texts(manifest_path: str) -> list[str]:
    manifest = load_manifest(manifest_path)
    root = Path(manifest_path).parent
    return [t for s in manifest.shards for t in read_shard(root / s.path, ["text"]).column("text").to_pylist()]


def test_planted_pii_is_gone_and_traditional_text_is_simplified(demo_build: tuple[Path, str]) -> None:
    text = "\n".join(_kept_texts(demo_build[1]))
    for planted in ("13812345678", "11010519491231002X", "192.168.10.24", "@"):
        assert planted not in text, planted
    assert "<PHONE>" in text and "<ID_CARD>" in text and "<EMAIL>" in text and "<IP>" in text
    assert "110105194912310020" in text, "an order number with a wrong check digit is not an ID"
    assert "台湾铁路" in text and "臺灣鐵路" not in text
    assert "东西质量很好" in text and "東西質量很好" not in text


def test_spam_and_near_duplicates_are_dropped_with_the_right_reason(demo_build: tuple[Path, str]) -> None:
    manifest = load_manifest(demo_build[1])
    root = Path(demo_build[1]).parent
    rejects = [row for s in manifest.rejects for row in read_shard(root / s.path).to_pylist()]
    by_text = {r["text"]: r for r in rejects}
    spam = [r for t, r in by_text.items() if "加微信" in t or "加V信" in t]
    assert spam and all(r["reason"] == "quality:spam" for r in spam)
    repeated = [r for t, r in by_text.items() if "好好好好好好" in t or "好评好评好评好评" in t]
    assert len(repeated) == 2 and all(r["reason"] == "quality:repetition" for r in repeated)
    near = [r for r in rejects if r["reason"] == "near"]
    kept = {row["id"]: row["text"] for s in manifest.shards for row in read_shard(root / s.path, ["id", "text"]).to_pylist()}
    assert any("零下六度" in r["text"] and "零下五度" in kept[r["duplicate_of"]] for r in near) or \
           any("零下五度" in r["text"] and "零下六度" in kept[r["duplicate_of"]] for r in near)


def test_same_inputs_give_same_bytes_with_one_worker(demo_build: tuple[Path, str], tmp_path: Path) -> None:
    _, manifest_path = demo_build
    other = run_build(write_config(tmp_path, "one-worker", runner__workers=1))
    first, second = load_manifest(manifest_path), load_manifest(other)
    assert first.version == second.version
    assert [(s.path, s.sha256) for s in first.shards + first.rejects] == \
           [(s.path, s.sha256) for s in second.shards + second.rejects]


def test_refresh_with_unchanged_inputs_recomputes_no_partition(demo_build: tuple[Path, str]) -> None:
    config_path, manifest_path = demo_build
    staged = sorted((Path(load_config(config_path).run_dir) / "work" / "partitions").glob("*/ledger.json"))
    before = {p: p.stat().st_mtime_ns for p in staged}
    again = run_build(config_path)
    assert load_manifest(again).version == load_manifest(manifest_path).version
    assert {p: p.stat().st_mtime_ns for p in staged} == before


def test_interrupted_build_resumes_to_the_same_result(prefect_api: str, tmp_path: Path) -> None:
    # Many small partitions make the build long enough to be killed in the middle of it.
    config = load_config(REPO / "configs" / "demo.yaml").model_dump(mode="json")
    for source in config["sources"]:
        source["rows_per_partition"] = 5
        source["pages_per_partition"] = 2
    config["runner"]["workers"] = 1
    config_path = tmp_path / "small-partitions.yaml"
    config["run_dir"] = str(tmp_path / "killed")
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    partitions = tmp_path / "killed" / "work" / "partitions"
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "build", "--config", str(config_path)],
                               cwd=REPO, env=os.environ.copy(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(partitions.glob("*/ledger.json"))) < 2:
        assert process.poll() is None, "the build ended before it could be interrupted"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    datasets_dir = tmp_path / "killed" / "datasets"
    assert not list(datasets_dir.rglob("*.arrow")), "no shard is visible before its version is complete"

    resumed = run_build(config_path)
    config["run_dir"] = str(tmp_path / "uninterrupted")
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    uninterrupted = run_build(config_path)
    a, b = load_manifest(resumed), load_manifest(uninterrupted)
    assert a.version == b.version
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


def test_cli_inspect_and_verify(demo_build: tuple[Path, str]) -> None:
    config_path, manifest_path = demo_build
    inspect = subprocess.run([sys.executable, "-m", "pipeline.cli", "inspect", manifest_path, "--samples", "2"],
                             cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    assert inspect.returncode == 0, inspect.stderr
    assert load_manifest(manifest_path).version in inspect.stdout and "redirect" in inspect.stdout
    verify = subprocess.run([sys.executable, "-m", "pipeline.cli", "verify", manifest_path],
                            cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "reproduced" in verify.stdout


def test_verify_names_a_tampered_shard(demo_build: tuple[Path, str], tmp_path: Path) -> None:
    from pipeline.reproduce import compare_manifests

    _, manifest_path = demo_build
    manifest = json.loads(Path(manifest_path).read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    tampered = tmp_path / "manifest.json"
    tampered.write_text(json.dumps(manifest))
    differences = compare_manifests(str(tampered), manifest_path)
    assert len(differences) == 1 and manifest["shards"][0]["path"] in differences[0]


def test_dedup_against_previous_version_keeps_earlier_documents(
    demo_build: tuple[Path, str], tmp_path: Path
) -> None:
    _, manifest_path = demo_build
    manifest = load_manifest(manifest_path)
    shard = next(s for s in manifest.shards if s.lang == "zh" and s.source == "news_feed")
    earlier = read_shard(Path(manifest_path).parent / shard.path, ["id", "text"]).to_pylist()[0]
    feed = tmp_path / "feed.jsonl"
    new_text = "今年冬天北方多地迎来大范围降雪，交通部门提醒市民出行注意安全，尽量乘坐公共交通工具。"
    feed.write_text("\n".join(json.dumps({"id": i, "content": t}, ensure_ascii=False)
                              for i, t in (("copy", earlier["text"]), ("fresh", new_text))) + "\n")
    config = {"run_dir": str(tmp_path / "run"), "dedup": {"against_previous": manifest_path}, "sources": [
        {"name": "feed", "kind": "news", "lang": "zh", "uri": str(feed), "format": "jsonl",
         "fields": {"text": "content", "id": "id"}}]}
    config_path = tmp_path / "incremental.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    incremental = load_manifest(run_build(config_path))
    assert incremental.ledger_totals["kept"] == 1 and incremental.ledger_totals["duplicate"] == 1
    root = Path(run_build(config_path)).parent
    duplicate = read_shard(root / incremental.rejects[0].path).to_pylist()[0]
    assert duplicate["outcome"] == "duplicate" and duplicate["duplicate_of"] == earlier["id"]


class _FlakyFeed(http.server.BaseHTTPRequestHandler):
    """Serves one JSONL file; the first request fails with 503, as a busy server would."""

    body = "\n".join(json.dumps({"id": str(i), "content": f"第{i}条新闻：今天上午，市政府召开新闻发布会，介绍全市交通建设的最新进展。"},
                                ensure_ascii=False) for i in range(5)).encode() + b"\n"
    requests = 0

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        type(self).requests += 1
        if type(self).requests == 1:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("ETag", '"feed-v1"')
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: object) -> None:
        return


def test_remote_source_is_fetched_with_retries(prefect_api: str, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyFeed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/feed.jsonl"
    try:
        config = {"run_dir": str(tmp_path / "run"), "sources": [
            {"name": "remote", "kind": "news", "lang": "zh", "uri": url, "format": "jsonl",
             "fields": {"text": "content", "id": "id"}}]}
        config_path = tmp_path / "remote.yaml"
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        manifest = load_manifest(run_build(config_path))
    finally:
        server.shutdown()
    assert _FlakyFeed.requests >= 2, "the failed download was retried"
    assert manifest.ledger_totals["read"] == 5
    assert [i.uri for i in manifest.inputs] == [url], "inputs are named by URL, not by cache path"


def test_unreadable_source_fails_the_flow_naming_the_file(prefect_api: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    config = {"run_dir": str(tmp_path / "run"), "sources": [
        {"name": "broken", "kind": "news", "lang": "zh", "uri": str(empty), "format": "jsonl",
         "fields": {"text": "sentence"}}]}
    config_path = tmp_path / "broken.yaml"
    config_path.write_text(yaml.safe_dump(config))
    with pytest.raises(Exception, match="empty.jsonl"):
        run_build(config_path)


@pytest.mark.shared_data
@pytest.mark.slow
def test_shared_data_build(prefect_api: str, shared_data: Path, tmp_path: Path) -> None:
    data = load_config(REPO / "configs" / "shared_data.yaml").model_dump(mode="json")
    data["run_dir"] = str(tmp_path / "shared")
    config_path = tmp_path / "shared.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True))
    manifest_path = run_build(config_path)
    manifest = load_manifest(manifest_path)
    root = Path(manifest_path).parent
    assert manifest.ledger_totals["read"] == sum(manifest.ledger_totals[o] for o in OUTCOMES)
    reasons = {}
    for shard in manifest.rejects:
        table = read_shard(root / shard.path, ["source", "outcome", "reason"])
        for row in table.to_pylist():
            key = (row["source"], row["reason"])
            reasons[key] = reasons.get(key, 0) + 1
    shopping = [s.name for s in load_config(config_path).sources if "shopping" in s.name]
    assert shopping and reasons.get((shopping[0], "exact"), 0) >= 24, "dozens of exact duplicate reviews caught"
    for shard in manifest.shards:
        if shard.lang == "zh":
            table = read_shard(root / shard.path, ["n_words"])
            assert pc.min(table.column("n_words")).as_py() > 0, shard.path
