"""The build flow end to end on the samples, against a real local Prefect server."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import datasets
import pyarrow.compute as pc
import pytest
import yaml

from pipeline.config import load_config
from pipeline.plots import DATASET_PICTURES, plot_dataset
from pipeline.schema import OUTCOMES
from pipeline.storage import read_arrow_table
from pipeline.versions import load_manifest

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
    kept_rows = sum(read_arrow_table(root / s.path).num_rows for s in manifest.shards + manifest.quarantined)
    rejects = [read_arrow_table(root / s.path) for s in manifest.rejects]
    assert kept_rows == totals["kept"]
    assert sum(r.num_rows for r in rejects) == totals["read"] - totals["kept"]
    for source, by_source in manifest.ledger_by_source.items():
        assert by_source["read"] == sum(by_source[o] for o in OUTCOMES), source


def test_drops_carry_reasons_and_duplicates_point_at_kept_documents(demo_build: tuple[Path, str]) -> None:
    _, manifest_path = demo_build
    manifest = load_manifest(manifest_path)
    root = Path(manifest_path).parent
    rejects = [row for s in manifest.rejects for row in read_arrow_table(root / s.path).to_pylist()]
    kept_ids = {i for s in manifest.shards for i in read_arrow_table(root / s.path, ["id"]).column("id").to_pylist()}
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
    # the demo plants bad records of every reader (not HTML, empty extraction, broken JSON ...): each lands in
    # rejects with a reason its contract knows, so every shard, kept or reject, passes
    failing = {s.path: s.contract["failed"] for s in manifest.shards + manifest.rejects if not s.contract["success"]}
    assert failing == {}
    assert {r.contract["suite"] for r in manifest.rejects} == {"rejects.v1"}


def test_version_card_tells_datasets_which_shards_make_each_split(
    demo_build: tuple[Path, str], tmp_path: Path
) -> None:
    _, manifest_path = demo_build
    manifest = load_manifest(manifest_path)
    root = Path(manifest_path).parent
    card = (root / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "other" and header["language"] == ["en", "zh"]
    assert header["size_categories"] == ["n<1K"] and header["task_categories"]
    files = {entry["split"]: entry["path"] for entry in header["configs"][0]["data_files"]}
    assert list(files) == ["train", "validation", "test"]

    loaded = datasets.load_dataset(str(root), cache_dir=str(tmp_path / "hf"))
    assert set(loaded) == set(files)
    for split, dataset in loaded.items():
        assert dataset.num_rows == sum(s.rows for s in manifest.usable_shards(split)) > 0, split
        assert set(dataset.unique("split")) == {split}
    for section in ("## Sources", "## Ledger", "## Drops by reason", "## Contracts", "corpusflow verify"):
        assert section in card
    assert all(i.fingerprint in card for i in manifest.inputs)
    assert "| rejected | malformed_json | 1 |" in card
    assert all((root / "reports" / name).exists() for name in ("lengths.png", "funnel.png", "duplicates.png"))
    assert "README.md" not in Path(manifest_path).read_text(), "the card is not part of the version's content"


def _artifacts(api_url: str, **artifact_filter: object) -> list[dict]:
    body = {"artifacts": artifact_filter, "sort": "CREATED_DESC"}
    request = urllib.request.Request(f"{api_url}/artifacts/filter", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_build_run_carries_its_progress_and_partition_table(demo_build: tuple[Path, str], prefect_api: str) -> None:
    _, manifest_path = demo_build
    # newest first: another test may rebuild the same version (the same manifest) through the CLI
    summaries = [a for a in _artifacts(prefect_api, key={"any_": ["build-summary"]}) if manifest_path in a["data"]]
    assert summaries
    run = {"flow_run_id": {"any_": [summaries[0]["flow_run_id"]]}}
    progress = _artifacts(prefect_api, key={"any_": ["build-progress"]}, **run)
    partitions = len(load_config(demo_build[0]).sources)
    assert [a["data"] for a in progress] == [100.0]
    assert f"partitions {partitions}/{partitions} (100%)" in progress[0]["description"]
    table = json.loads(_artifacts(prefect_api, key={"any_": ["partitions"]}, **run)[0]["data"])
    assert len(table) == partitions
    assert sum(row["read"] for row in table) == load_manifest(manifest_path).ledger_totals["read"]


def test_cli_build_prints_progress_lines_and_failures_without_tracebacks(
    demo_build: tuple[Path, str], tmp_path: Path
) -> None:
    config_path, manifest_path = demo_build
    rebuilt = _cli("build", "--config", str(config_path))  # output is a pipe: plain lines, no live display
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    partitions = len(load_config(config_path).sources)
    assert re.search(rf"partitions {partitions}/{partitions} \(100%\) .* ETA 0:00:00", rebuilt.stdout), rebuilt.stdout
    assert re.search(r"partitions 1/\d+ .* ETA \d+:\d\d:\d\d", rebuilt.stdout), rebuilt.stdout
    assert load_manifest(manifest_path).version in rebuilt.stdout
    assert "Traceback" not in rebuilt.stdout + rebuilt.stderr and "Logging error" not in rebuilt.stderr

    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 20)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "sources": [
        {"name": "broken", "kind": "news", "lang": "zh", "uri": str(binary), "format": "jsonl",
         "fields": {"text": "sentence"}, "on_bad_input": "fail"}]}))
    failed = _cli("build", "--config", str(broken))
    output = failed.stdout + failed.stderr
    assert failed.returncode == 2, output
    assert "Task run failed with exception: SourceUnreadable" in output and "what to do" in failed.stdout
    assert "Traceback" not in output and "Logging error" not in output


def _kept_texts(manifest_path: str) -> list[str]:
    manifest = load_manifest(manifest_path)
    root = Path(manifest_path).parent
    return [t for s in manifest.shards for t in read_arrow_table(root / s.path, ["text"]).column("text").to_pylist()]


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
    rejects = [row for s in manifest.rejects for row in read_arrow_table(root / s.path).to_pylist()]
    by_text = {r["text"]: r for r in rejects}
    spam = [r for t, r in by_text.items() if "加微信" in t or "加V信" in t]
    assert spam and all(r["reason"] == "quality:spam" for r in spam)
    repeated = [r for t, r in by_text.items() if "好好好好好好" in t or "好评好评好评好评" in t]
    assert len(repeated) == 2 and all(r["reason"] == "quality:repetition" for r in repeated)
    near = [r for r in rejects if r["reason"] == "near"]
    kept = {row["id"]: row["text"] for s in manifest.shards for row in read_arrow_table(root / s.path, ["id", "text"]).to_pylist()}
    assert any("零下六度" in r["text"] and "零下五度" in kept[r["duplicate_of"]] for r in near) or \
           any("零下五度" in r["text"] and "零下六度" in kept[r["duplicate_of"]] for r in near)


def test_same_inputs_give_same_bytes_with_one_worker(demo_build: tuple[Path, str], tmp_path: Path) -> None:
    _, manifest_path = demo_build
    other = run_build(write_config(tmp_path, "one-worker", runner__workers=1))
    first, second = load_manifest(manifest_path), load_manifest(other)
    assert first.version == second.version
    assert [(s.path, s.sha256) for s in first.shards + first.rejects] == \
           [(s.path, s.sha256) for s in second.shards + second.rejects]


def _global_steps_outputs(run_dir: Path) -> dict[Path, int]:
    """The dedup step's files and the version's ledger, by modification time: rewritten by the global steps."""
    files = [*(run_dir / "work" / "dedup").rglob("*.*"), *(run_dir / "datasets").rglob("ledger.arrow")]
    return {p: p.stat().st_mtime_ns for p in files}


def test_refresh_with_unchanged_inputs_recomputes_nothing(demo_build: tuple[Path, str]) -> None:
    config_path, manifest_path = demo_build
    run_dir = Path(load_config(config_path).run_dir)
    staged = sorted((run_dir / "work" / "partitions").glob("*/ledger.json"))
    before = {p: p.stat().st_mtime_ns for p in staged}
    global_before = _global_steps_outputs(run_dir)
    again = run_build(config_path)
    assert again == manifest_path and load_manifest(again).version == load_manifest(manifest_path).version
    assert {p: p.stat().st_mtime_ns for p in staged} == before
    assert global_before and _global_steps_outputs(run_dir) == global_before  # the same version, taken again


def test_an_edited_suite_or_a_lost_shard_builds_in_full(prefect_api: str, tmp_path: Path) -> None:
    contracts = tmp_path / "contracts"
    shutil.copytree(REPO / "data_contracts", contracts)
    config = write_config(tmp_path, "rebuilds", contracts__directory=str(contracts))
    first = load_manifest(run_build(config))
    run_dir = Path(load_config(config).run_dir)
    dedup_files = {p: m for p, m in _global_steps_outputs(run_dir).items() if "dedup" in p.parts}
    (run_dir / "datasets" / first.dataset / first.version / first.shards[0].path).unlink()
    assert load_manifest(run_build(config)).version == first.version
    rewritten = _global_steps_outputs(run_dir)
    assert all(rewritten[path] != mtime for path, mtime in dedup_files.items())  # the global steps ran again

    suite = json.loads((contracts / "rejects.v1.json").read_text())
    suite["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "source"},
                                  "meta": {"severity": "warning"}})
    (contracts / "rejects.v1.json").write_text(json.dumps(suite))  # same name and version, new content
    assert load_manifest(run_build(config)).version == first.version  # a passing warning changes nothing stored
    assert all(_global_steps_outputs(run_dir)[path] != mtime for path, mtime in rewritten.items()
               if "dedup" in path.parts)


@pytest.fixture(scope="module")
def small_partitions(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """A config of many small partitions (long enough to kill mid-way) and its uninterrupted manifest."""
    tmp_path = tmp_path_factory.mktemp("small-partitions")
    config = load_config(REPO / "configs" / "demo.yaml").model_dump(mode="json")
    for source in config["sources"]:
        source["rows_per_partition"] = 5
        source["pages_per_partition"] = 2
    config["runner"]["workers"] = 1
    config["runner"]["dedup_buckets"] = 8  # several bucket tasks, so a kill can land between two of them
    config["run_dir"] = str(tmp_path / "uninterrupted")
    config_path = tmp_path / "uninterrupted.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return config, run_build(config_path)


def _partitions_written(run_dir: Path) -> bool:
    return len(list((run_dir / "work" / "partitions").glob("*/ledger.json"))) >= 2


def _bucket_tasks_running(run_dir: Path) -> bool:
    return any((run_dir / "work" / "dedup").glob("*/collisions-*"))


def _writing_shards(run_dir: Path) -> bool:
    return any((run_dir / "work").glob("build-*/data"))


@pytest.mark.parametrize("moment", [_partitions_written, _bucket_tasks_running, _writing_shards],
                         ids=["partitions", "dedup-buckets", "writing"])
def test_build_killed_mid_way_resumes_to_the_same_result(small_partitions: tuple[dict, str], tmp_path: Path,
                                                         moment) -> None:
    config, uninterrupted = small_partitions
    run_dir = tmp_path / "killed"
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(yaml.safe_dump({**config, "run_dir": str(run_dir)}, allow_unicode=True))
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "build", "--config", str(config_path)],
                               cwd=REPO, env=os.environ.copy(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not moment(run_dir):
        assert process.poll() is None, "the build ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the CLI, the flow and every worker process at once
    process.wait()
    datasets_dir = run_dir / "datasets"
    assert not list(datasets_dir.rglob("*.arrow")) and not (datasets_dir / "demo" / "LATEST").exists(), \
        "nothing is visible to a reader before its version is complete"

    resumed = run_build(config_path)
    a, b = load_manifest(resumed), load_manifest(uninterrupted)
    assert a.version == b.version
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    work = run_dir / "work"
    assert not list(work.glob("partitions/*.tmp")) and len(list(work.glob("build-*"))) == 0, \
        f"no partial partition or staging directory is left behind: {sorted(p.relative_to(work) for p in work.rglob('*') if 'partitions' not in p.parts)}"


def test_glob_of_good_and_bad_files_skips_the_bad_and_accounts_the_good(prefect_api: str, tmp_path: Path) -> None:
    from helpers.inputs import write_bad_files, write_good_files

    inputs = tmp_path / "reviews"
    good_records = write_good_files(inputs, 50)
    expected = write_bad_files(inputs)
    config_path = tmp_path / "glob.yaml"
    config_path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "runner": {"workers": 2},
        "sources": [{"name": "reviews", "kind": "comments", "lang": "zh", "uri": str(inputs / "*.csv"),
                     "format": "csv", "fields": {"text": "review", "label": "label"}}]}, allow_unicode=True))
    manifest_path = Path(run_build(config_path))
    manifest = load_manifest(manifest_path)
    outcome = {Path(i.uri).name: i.reason.split(": ")[0] if i.status == "skipped" else i.status
               for i in manifest.inputs}
    assert {name: outcome[name] for name in expected} == expected
    skipped = [i for i in manifest.inputs if i.status == "skipped"]
    assert len(skipped) == len([r for r in expected.values() if r.startswith("input:")])
    assert sum(1 for i in manifest.inputs if i.status == "read") == 50
    totals = manifest.ledger_totals
    assert totals["read"] == good_records + len(skipped)
    assert totals["rejected"] >= len(skipped) and totals["read"] == sum(totals[o] for o in OUTCOMES)
    rejects = [row for s in manifest.rejects for row in read_arrow_table(manifest_path.parent / s.path).to_pylist()]
    skipped_rows = {Path(row["file"]).name: row["reason"] for row in rejects if row["reason"].startswith("input:")}
    assert skipped_rows == {n: r for n, r in expected.items() if r.startswith("input:")}


def test_cli_inspect_and_verify(demo_build: tuple[Path, str]) -> None:
    config_path, manifest_path = demo_build
    inspect = subprocess.run([sys.executable, "-m", "flows.cli", "inspect", manifest_path, "--samples", "2"],
                             cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    assert inspect.returncode == 0, inspect.stderr
    assert load_manifest(manifest_path).version in inspect.stdout and "redirect" in inspect.stdout
    assert "PII redactions by source" in inspect.stdout and "email" in inspect.stdout
    assert "filtered share per label" in inspect.stdout
    drops = _cli("inspect", manifest_path, "--reason", "exact", "--sample", "2")
    assert drops.returncode == 0 and drops.stdout.count("(duplicate)") == 2, drops.stdout
    verify = subprocess.run([sys.executable, "-m", "flows.cli", "verify", manifest_path],
                            cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "reproduced" in verify.stdout


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_finds_a_flipped_byte_without_rebuilding(demo_build: tuple[Path, str], tmp_path: Path) -> None:
    _, manifest_path = demo_build
    copy = tmp_path / "copy"
    shutil.copytree(Path(manifest_path).parent, copy)
    shard = copy / load_manifest(manifest_path).shards[0].path
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x20
    shard.write_bytes(bytes(data))

    verify = _cli("verify", str(copy), "--no-rebuild")
    assert verify.returncode == 1 and "corrupt" in verify.stdout
    assert shard.relative_to(copy).as_posix() in verify.stdout, verify.stdout
    validate = _cli("validate", str(copy))
    assert validate.returncode == 1 and "Traceback" not in validate.stdout + validate.stderr
    assert "unreadable" in validate.stdout and shard.name in validate.stdout
    assert validate.stdout.count(" no ") == 1  # the flipped shard fails, nothing else
    healthy = _cli("validate", str(Path(manifest_path).parent))
    manifest = load_manifest(manifest_path)
    assert healthy.returncode == 0, healthy.stdout
    assert healthy.stdout.count(" yes ") == len(manifest.shards) + len(manifest.rejects)
    assert "ledger" not in healthy.stdout  # the version's ledger is not a shard
    intact = _cli("verify", str(Path(manifest_path).parent), "--no-rebuild")
    assert intact.returncode == 0 and "intact" in intact.stdout and "reproduced" not in intact.stdout


def test_cli_prints_a_user_error_as_a_short_block(tmp_path: Path) -> None:
    missing = _cli("inspect", str(tmp_path / "nothing-here"))
    assert missing.returncode == 2
    assert "VersionNotFound" in missing.stdout and "what to do" in missing.stdout
    assert "Traceback" not in missing.stdout + missing.stderr and len(missing.stdout.splitlines()) <= 8
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("sources: []\nshards: {max_rowz: 3}\n")
    config_error = _cli("build", "--config", str(bad_config))
    assert config_error.returncode == 2 and "max_rowz" in config_error.stdout and "Traceback" not in config_error.stderr


def test_cli_prints_an_unexpected_error_as_a_short_block(tmp_path: Path) -> None:
    not_a_manifest = tmp_path / "manifest.json"
    not_a_manifest.write_text('{"dataset": "demo"}')  # JSON, but no manifest: an error no rule names yet
    unexpected = _cli("diff", str(not_a_manifest), str(not_a_manifest))
    assert unexpected.returncode == 1
    assert "unexpected error ValidationError" in unexpected.stdout and "where: " in unexpected.stdout
    assert "last-error.log" in unexpected.stdout and "--debug" in unexpected.stdout
    assert "Traceback" not in unexpected.stdout + unexpected.stderr and len(unexpected.stdout.splitlines()) <= 8
    debug = _cli("--debug", "diff", str(not_a_manifest), str(not_a_manifest))
    assert debug.returncode == 1 and "Traceback" in debug.stdout + debug.stderr


def _published_events(api_url: str, dataset: str) -> list[dict]:
    from flows.events import DATASET_PUBLISHED, dataset_resource_id

    body = {"filter": {"event": {"name": [DATASET_PUBLISHED]}, "resource": {"id": [dataset_resource_id(dataset)]}},
            "limit": 50}
    request = urllib.request.Request(f"{api_url}/events/filter", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["events"]


def test_build_over_its_contract_limits_publishes_nothing(
    prefect_api: str, demo_build: tuple[Path, str], tmp_path: Path
) -> None:
    from flows.build_corpus import build_corpus
    from prefect import get_client

    demo_config, _ = demo_build
    run_dir = load_config(demo_config).run_dir  # its partitions are cached: only the last steps run again
    good = run_build(write_config(tmp_path, "good", run_dir=run_dir, dataset="limits"))
    datasets = Path(run_dir) / "datasets" / "limits"
    assert (datasets / "LATEST").read_text().strip() == load_manifest(good).version
    deadline = time.monotonic() + 120  # events travel through a background worker: slow on a busy machine
    while not _published_events(prefect_api, "limits") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(_published_events(prefect_api, "limits")) == 1

    strict = tmp_path / "strict_contracts"
    shutil.copytree(REPO / "data_contracts", strict)
    suite = json.loads((strict / "documents.v1.json").read_text())
    suite["expectations"].append({"type": "expect_table_row_count_to_be_between",
                                  "kwargs": {"min_value": 10**9}, "meta": {"severity": "critical"}})
    (strict / "documents.v1.json").write_text(json.dumps(suite))
    config = write_config(tmp_path, "strict", run_dir=run_dir, dataset="limits", contracts__directory=str(strict))
    state = build_corpus(str(config), return_state=True)
    assert state.is_failed() and "quarantined, over the limits" in state.message

    assert (datasets / "LATEST").read_text().strip() == load_manifest(good).version
    (failed,) = (datasets / "failed").iterdir()
    kept = load_manifest(failed / "manifest.json")
    assert kept.quarantined and not kept.shards
    assert len(list((failed / "quarantine").rglob("*.report.json"))) == len(kept.quarantined)
    # drawn while the shards were validated, then again without the quarantined ones: as the version reads
    drawn = {p.name: p.read_bytes() for p in (failed / "reports").glob("*.png")}
    assert len(drawn) == len(DATASET_PICTURES)
    assert {Path(p).name: Path(p).read_bytes() for p in plot_dataset(str(failed))} == drawn
    time.sleep(3)  # events are sent in the background: give a wrongly sent one time to arrive
    assert len(_published_events(prefect_api, "limits")) == 1
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.is_failed()  # what the failure automation (the alert) fires on


def test_a_label_filtered_twice_as_often_is_reported(prefect_api: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    rows = [("positive", f"第{i}次入住，房间干净，早餐丰富，前台服务也很热情周到") for i in range(120)]
    rows += [("negative", f"第{i}次入住，房间很旧，隔音太差，晚上一直睡不好觉") for i in range(90)]
    rows += [("negative", "差" * (12 + i)) for i in range(30)]  # one repeated character: junk, filtered
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("label,review\n" + "".join(f"{label},{text}\n" for label, text in rows), encoding="utf-8")
    config_path = tmp_path / "skew.yaml"
    config_path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "dataset": "skew", "dedup": {"exact": False, "near": False},
        "sources": [{"name": "hotel", "kind": "comments", "lang": "zh", "uri": str(reviews), "format": "csv",
                     "fields": {"text": "review", "label": "label"}}]}, allow_unicode=True))
    manifest = load_manifest(run_build(config_path))
    rates = manifest.drop_rate_by_label["hotel"]
    assert rates["negative"]["dropped"] == 30 and rates["positive"]["dropped"] == 0
    (skew,) = manifest.label_skews
    assert skew.startswith("hotel: label 'negative' is dropped at 25.0%")
    with get_client(sync_client=True) as client:
        (summary,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["build-summary"])),
                                           sort=ArtifactSort.CREATED_DESC, limit=1)
    assert f"**label skew**: {skew}" in summary.data


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
    earlier = read_arrow_table(Path(manifest_path).parent / shard.path, ["id", "text"]).to_pylist()[0]
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
    duplicate = read_arrow_table(root / incremental.rejects[0].path).to_pylist()[0]
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
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 20)
    config = {"run_dir": str(tmp_path / "run"), "sources": [
        {"name": "broken", "kind": "news", "lang": "zh", "uri": str(binary), "format": "jsonl",
         "fields": {"text": "sentence"}, "on_bad_input": "fail"}]}
    config_path = tmp_path / "broken.yaml"
    config_path.write_text(yaml.safe_dump(config))
    from pipeline.sources import SourceUnreadable

    with pytest.raises(SourceUnreadable, match="binary.jsonl"):
        run_build(config_path)
    shown = _cli("build", "--config", str(config_path))
    assert shown.returncode == 2, shown.stdout + shown.stderr
    block = shown.stdout[shown.stdout.index("SourceUnreadable"):]
    assert "binary.jsonl" in block and "what to do" in block and "Traceback" not in block


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
        table = read_arrow_table(root / shard.path, ["source", "outcome", "reason"])
        for row in table.to_pylist():
            key = (row["source"], row["reason"])
            reasons[key] = reasons.get(key, 0) + 1
    shopping = [s.name for s in load_config(config_path).sources if "shopping" in s.name]
    assert shopping and reasons.get((shopping[0], "exact"), 0) >= 24, "dozens of exact duplicate reviews caught"
    for shard in manifest.shards:
        if shard.lang == "zh":
            table = read_arrow_table(root / shard.path, ["n_words"])
            assert pc.min(table.column("n_words")).as_py() > 0, shard.path
