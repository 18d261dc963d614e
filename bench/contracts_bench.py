"""How long the data contracts take next to building, on real Chinese reviews.

Builds a documents shard of `--rows` rows from ../shared/data/comments/online_shopping_10_cats.zip (reviews
are reused with a numbered suffix once the file runs out, so ids and hashes stay unique), segments it with
jieba as the build does, then validates it with documents.v1 and reports where the time goes:
GX import, suite loading, the Arrow -> pandas frame, the validation, Data Docs, and each expectation alone.

Build time here is only jieba segmentation, the largest single cost of a build (REFERENCES: ~1 MB/s), so
the reported fraction is an upper bound of validation's share of a real build.

    python bench/contracts_bench.py [--rows 100000] [--out bench/results]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import io
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import contracts  # noqa: E402  (the repository root is put on the path above)
from pipeline.schema import DOCUMENT_SCHEMA, document_id  # noqa: E402

REVIEWS = ROOT.parent / "shared" / "data" / "comments" / "online_shopping_10_cats.zip"
CONTRACTS = ROOT / "data_contracts"
SUITE = "documents.v1"


def read_reviews(limit: int) -> list[str]:
    with zipfile.ZipFile(REVIEWS) as archive, archive.open(archive.namelist()[0]) as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig"))
        reviews = [row["review"].strip() for row in reader if (row.get("review") or "").strip()]
    return [reviews[i % len(reviews)] + ("" if i < len(reviews) else f" ({i // len(reviews)})") for i in range(limit)]


def cjk_ratio(text: str) -> float:
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text) / max(len(text), 1)


def documents_table(texts: list[str], words: list[list[str]]) -> pa.Table:
    n = len(texts)
    columns = {
        "id": pa.array([document_id("bench", str(i)) for i in range(n)]),
        "source": pa.array(["bench"] * n),
        "kind": pa.array(["comments"] * n),
        "lang": pa.array(["zh"] * n),
        "title": pa.nulls(n, pa.string()),
        "text": pa.array(texts),
        "url": pa.nulls(n, pa.string()),
        "published_at": pa.nulls(n, DOCUMENT_SCHEMA.field("published_at").type),
        "label": pa.nulls(n, pa.string()),
        "meta": pa.array([json.dumps({"file": "bench", "position": i}) for i in range(n)]),
        "lang_score": pa.array([0.99] * n, pa.float32()),
        "pii": pa.array(["{}"] * n),
        "words": pa.array(words, pa.list_(pa.string())),
        "n_words": pa.array([len(w) for w in words], pa.int32()),
        "n_chars": pa.array([len(t) for t in texts], pa.int32()),
        "cjk_ratio": pa.array([cjk_ratio(t) for t in texts], pa.float32()),
        "content_hash": pa.array([hashlib.sha256(t.encode()).hexdigest() for t in texts]),
        "split": pa.array(["train"] * n),
    }
    return pa.table(columns)


def write_stream(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def per_expectation(table: pa.Table, work: Path) -> list[dict]:
    """Each expectation of the suite alone, on the same table: which ones cost the time."""
    suite = contracts.read_suite_file(CONTRACTS, SUITE)
    rows = []
    for index, entry in enumerate(suite["expectations"]):
        single = {**suite, "expectations": [entry]}
        (work / f"{SUITE}.json").write_text(json.dumps(single), encoding="utf-8")
        seconds, _ = timed(contracts.validate_table, table, SUITE, work)
        column = entry["kwargs"].get("column") or entry["kwargs"].get("column_A", "")
        rows.append({"index": index, "type": entry["type"], "column": column, "seconds": round(seconds, 3)})
    # every call pays the same fixed cost (context, frame, GX's fingerprint of the batch); the cheapest
    # expectation alone approximates it, and what lies above it is the expectation's own cost
    fixed = min(row["seconds"] for row in rows)
    return [{**row, "above_fixed_cost": round(row["seconds"] - fixed, 3)} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    import jieba

    texts = read_reviews(args.rows)
    jieba.initialize()
    segment_s, words = timed(lambda: [jieba.lcut(t) for t in texts])
    table = documents_table(texts, words)
    mb = sum(len(t.encode()) for t in texts) / 1e6

    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    gx_import_s, _ = timed(importlib.import_module, "great_expectations")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shard = work / "bench-zh-00000.arrow"
        write_stream(table, shard)
        load_s, _ = timed(contracts.load_suite, CONTRACTS, SUITE)
        frame_s, _ = timed(contracts.scalar_frame, table)
        warmup_s, _ = timed(contracts.validate_shard, shard, SUITE, CONTRACTS)
        runs = [timed(contracts.validate_shard, shard, SUITE, CONTRACTS) for _ in range(3)]
        validate_s = min(seconds for seconds, _ in runs)
        summary = runs[0][1]
        docs_s, _ = timed(contracts.validate_shard, shard, SUITE, CONTRACTS, work / "docs")
        (work / "single").mkdir()
        costs = per_expectation(table, work / "single")

    per_100k = 100_000 / args.rows
    result = {
        "date": date.today().isoformat(),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "rows": args.rows,
        "text_mb": round(mb, 2),
        "suite": SUITE,
        "expectations": len(summary["expectations"]),
        "success": summary["success"],
        "seconds": {
            "gx_import_once_per_process": round(gx_import_s, 2),
            "suite_load": round(load_s, 3),
            "arrow_to_pandas_frame": round(frame_s, 3),
            "validate_shard_first_call": round(warmup_s, 3),
            "validate_shard": round(validate_s, 3),
            "validate_shard_with_data_docs": round(docs_s, 3),
            "segmentation_jieba": round(segment_s, 2),
        },
        "validate_shard_per_100k_rows_s": round(validate_s * per_100k, 3),
        "segmentation_per_100k_rows_s": round(segment_s * per_100k, 2),
        "validation_fraction_of_segmentation": round(validate_s / segment_s, 4),
        "validation_with_docs_fraction_of_segmentation": round(docs_s / segment_s, 4),
        "per_expectation_seconds": costs,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "per_expectation_seconds"}, indent=2))
    print("\nexpectation alone (s; above the fixed per-call cost), slowest first:")
    for row in sorted(costs, key=lambda r: -r["seconds"]):
        print(f"  {row['seconds']:7.3f} ({row['above_fixed_cost']:+.3f})  {row['type']} {row['column']}")
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"contracts-{result['date']}.json"
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {target}")


if __name__ == "__main__":
    main()
