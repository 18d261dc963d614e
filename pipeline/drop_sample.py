"""A sample of the records one rule dropped, with where they came from, so an auditor can judge the rule.

The sample is deterministic and spread over the whole version: the records whose ids have the lowest
sha256, so the same version and reason always give the same records, and a larger sample contains a
smaller one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage, versions

SAMPLE_COLUMNS = ("id", "source", "kind", "label", "outcome", "reason", "text", "file", "position")


def sample_order(ids: list[str]) -> list[int]:
    """Row indices in sampling order: by sha256 of the record id."""
    return sorted(range(len(ids)), key=lambda i: hashlib.sha256(ids[i].encode()).hexdigest())


def sample_rows(table: pa.Table, n: int) -> pa.Table:
    """Up to `n` rows of `table`, the same ones whatever the table's order."""
    order = sample_order(table.column("id").to_pylist())[:n]
    return table.take(pa.array(order, pa.int64()))


def sample_drops(version_dir: str | Path, reason: str, n: int) -> list[dict]:
    """Up to `n` records of a version dropped with `reason` (e.g. "quality:min_chars", "exact"): their
    id, source, kind, label, outcome, reason, text, file and position."""
    root = str(version_dir)
    manifest = versions.load_manifest(storage.join(root, versions.MANIFEST))
    picked: list[pa.Table] = []
    for shard in manifest.rejects:
        rejects = storage.read_arrow_table(storage.join(root, shard.path), sha256=shard.sha256)
        rejects = rejects.filter(pc.equal(rejects.column("reason"), reason))
        if rejects.num_rows:
            columns = [c for c in SAMPLE_COLUMNS if c in rejects.column_names]
            picked.append(sample_rows(rejects.select(columns), n))
    if not picked:
        return []
    return sample_rows(pa.concat_tables(picked, promote_options="default"), n).to_pylist()
