"""Small synthetic dataset versions written the way the build writes them (IPC stream shards, ledger,
manifest), so the diff and the plots are tested without running the build."""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.schema import LEDGER_SCHEMA, InputRecord, Manifest, ShardRecord

SHARD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("lang", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("words", pa.list_(pa.string())),
        ("n_words", pa.int64()),
        ("n_chars", pa.int64()),
        ("content_hash", pa.string()),
        ("split", pa.string()),
    ]
)


def _stream_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=3)  # several batches: readers must stream them all
    return sink.getvalue()


def _shard_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    text = doc["text"]
    words = list(text.replace(" ", "")) if doc["lang"] == "zh" else text.split()
    return {
        "id": doc["id"],
        "source": doc["source"],
        "kind": doc.get("kind", "news"),
        "lang": doc["lang"],
        "title": doc.get("title"),
        "text": text,
        "words": words,
        "n_words": len(words),
        "n_chars": len(text),
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "split": "train",
    }


def write_version(
    datasets_dir: Path,
    docs: Iterable[Mapping[str, Any]],
    ledger_rows: Iterable[Mapping[str, Any]],
    inputs: Iterable[InputRecord],
    dataset: str = "demo",
) -> Path:
    """Write one version; returns its manifest path. Shards are grouped by (source, lang)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        groups[(doc["source"], doc["lang"])].append(_shard_row(doc))
    files: dict[str, bytes] = {}
    shards = []
    for (source, lang), rows in sorted(groups.items()):
        path = f"data/train/{source}-{lang}-00000.arrow"
        files[path] = _stream_bytes(pa.Table.from_pylist(sorted(rows, key=lambda r: r["id"]), schema=SHARD_SCHEMA))
        shards.append(
            ShardRecord(
                path=path, split="train", source=source, lang=lang, rows=len(rows),
                bytes=len(files[path]), sha256=hashlib.sha256(files[path]).hexdigest(),
            )
        )
    ledger = pa.Table.from_pylist(list(ledger_rows), schema=LEDGER_SCHEMA)
    files["ledger.arrow"] = _stream_bytes(ledger)
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in ledger.to_pylist():
        by_source[row["source"]][row["outcome"]] += row["count"]
        by_source[row["source"]]["read"] += row["count"]
    totals: dict[str, int] = defaultdict(int)
    for counts in by_source.values():
        for outcome, count in counts.items():
            totals[outcome] += count
    manifest = Manifest(
        dataset=dataset, config_hash="c" * 64, code_version="test", libraries={"pyarrow": pa.__version__},
        inputs=list(inputs), shards=shards, rejects=[], ledger_totals=dict(totals),
        ledger_by_source={s: dict(c) for s, c in by_source.items()},
    )
    manifest.version = manifest.content_hash()
    version_dir = datasets_dir / dataset / manifest.version
    for path, data in files.items():
        (version_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (version_dir / path).write_bytes(data)
    (version_dir / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
    (datasets_dir / dataset / "LATEST").write_text(manifest.version)
    return version_dir / "manifest.json"
