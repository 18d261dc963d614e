"""Arrow schemas of documents, rejects and the ledger, and the manifest model.

A document's `id` is stable: derived from its source name and the id it has in its source (page id,
row id, URL), so the same record gets the same id in every build.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import orjson
import pyarrow as pa
from pydantic import BaseModel, Field

Outcome = Literal["kept", "filtered", "duplicate", "rejected"]
OUTCOMES: tuple[Outcome, ...] = ("kept", "filtered", "duplicate", "rejected")

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("lang", pa.string()),  # null until language identification for `lang: auto` sources
        pa.field("title", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("published_at", pa.timestamp("s", tz="UTC")),
        pa.field("label", pa.string()),
        pa.field("meta", pa.string()),  # JSON object: where the record came from (file, position) and extras
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("lang", pa.string()),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),  # the text as it was when dropped; raw bytes (escaped) for rejects
        pa.field("label", pa.string()),  # the document's label, so drop rates can be compared per label
        pa.field("outcome", pa.string(), nullable=False),  # filtered | duplicate | rejected
        pa.field("reason", pa.string(), nullable=False),  # e.g. "redirect", "quality:min_chars", "exact"
        pa.field("stage", pa.string(), nullable=False),  # the stage that dropped it: read, pii, quality, dedup..
        pa.field("duplicate_of", pa.string()),  # the representative's id, for duplicates
        pa.field("file", pa.string()),
        pa.field("position", pa.string()),  # line, row, byte offset or page number inside the file
        pa.field("meta", pa.string()),
    ]
)

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("partition", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # "" for kept
        pa.field("count", pa.int64(), nullable=False),
    ]
)


def document_id(source: str, native_id: str) -> str:
    """Stable id of a record: 32 hex chars of sha256(source, native id)."""
    return hashlib.sha256(f"{source}\x1f{native_id}".encode()).hexdigest()[:32]


_META_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str)  # one per record: reuse it


def dumps_meta(meta: Mapping[str, Any]) -> str:
    return _META_ENCODER.encode(meta)


def documents_batch(rows: Iterable[Mapping[str, Any]]) -> pa.RecordBatch:
    """Rows (dicts with the document fields; missing ones are null) to a batch of DOCUMENT_SCHEMA."""
    return _batch(rows, DOCUMENT_SCHEMA)


def rejects_batch(rows: Iterable[Mapping[str, Any]]) -> pa.RecordBatch:
    return _batch(rows, REJECT_SCHEMA)


def _batch(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Column by column: a batch is built once per thousand records, so no dict per row is copied."""
    rows = list(rows)
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    if "meta" in columns:
        columns["meta"] = [dumps_meta(m) if isinstance(m, Mapping) else m for m in columns["meta"]]
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def rejects_from_documents(
    documents: pa.RecordBatch | pa.Table,
    *,
    outcome: Outcome,
    reasons: Sequence[str] | pa.Array | str,
    stage: str,
    duplicate_of: Sequence[str | None] | pa.Array | None = None,
) -> pa.Table:
    """Dropped documents as reject rows; file and position come from the document's meta."""
    n = documents.num_rows
    metas = [_parsed_meta(m) for m in documents.column("meta").to_pylist()]
    columns = {
        "id": documents.column("id"),
        "source": documents.column("source"),
        "kind": documents.column("kind"),
        "lang": documents.column("lang"),
        "title": documents.column("title"),
        "text": documents.column("text"),
        "label": documents.column("label"),
        "outcome": pa.array([outcome] * n, pa.string()),
        "reason": pa.array([reasons] * n, pa.string()) if isinstance(reasons, str) else _strings(reasons),
        "stage": pa.array([stage] * n, pa.string()),
        "duplicate_of": pa.nulls(n, pa.string()) if duplicate_of is None else _strings(duplicate_of),
        "file": pa.array([m.get("file") for m in metas], pa.string()),
        "position": pa.array([None if m.get("position") is None else str(m["position"]) for m in metas]),
        "meta": documents.column("meta"),
    }
    return pa.table(columns, schema=REJECT_SCHEMA)


def _strings(values: Sequence[str | None] | pa.Array) -> pa.Array:
    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())


def _parsed_meta(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN and Infinity: json writes them, orjson refuses them
        return json.loads(text)  # (integers past 64 bits it reads as floats; no position comes near)


class Ledger(Counter):
    """Counts of outcomes keyed by (outcome, reason); reason is "" for kept."""

    def add(self, outcome: Outcome, reason: str = "", count: int = 1) -> None:
        if count:
            self[(outcome, reason)] += count

    def add_rejects(self, rejects: pa.Table | pa.RecordBatch) -> None:
        for (outcome, reason), count in Counter(
            zip(rejects.column("outcome").to_pylist(), rejects.column("reason").to_pylist())
        ).items():
            self.add(outcome, reason, count)

    def totals(self) -> dict[str, int]:
        totals = {outcome: 0 for outcome in OUTCOMES}
        for (outcome, _), count in self.items():
            totals[outcome] += count
        totals["read"] = sum(totals[o] for o in OUTCOMES)
        return totals

    def to_rows(self, source: str, partition: str) -> list[dict[str, Any]]:
        return [
            {"source": source, "partition": partition, "outcome": o, "reason": r, "count": c}
            for (o, r), c in sorted(self.items())
        ]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Ledger:
        ledger = cls()
        for row in rows:
            ledger.add(row["outcome"], row["reason"], row["count"])
        return ledger


InputStatus = Literal["read", "empty", "skipped"]


class InputRecord(BaseModel):
    source: str
    uri: str
    fingerprint: str
    encoding: str | None = None  # the codec a text input was decoded with
    status: InputStatus = "read"  # empty: zero bytes, zero records; skipped: unreadable, one rejected record
    reason: str | None = None  # why it was skipped: "input:<code>: what was wrong"

    def content(self) -> dict[str, Any]:
        """What identifies the input in the version id; fields at their default are left out, so versions
        built before they existed keep their id."""
        return self.model_dump(mode="json", exclude_defaults=True)


class ShardRecord(BaseModel):
    path: str  # relative to the dataset version directory
    split: str
    source: str
    lang: str
    rows: int
    bytes: int
    sha256: str
    contract: dict[str, Any] | None = None  # suite name, version, success, failed expectations
    usable: bool = True  # False when quarantined by its contract


class Manifest(BaseModel):
    dataset: str
    version: str = ""  # filled by finalize(): hash of the content below
    config_hash: str
    code_version: str
    libraries: dict[str, str]
    inputs: list[InputRecord]
    shards: list[ShardRecord]
    rejects: list[ShardRecord]
    quarantined: list[ShardRecord] = Field(default_factory=list)
    ledger_totals: dict[str, int]
    ledger_by_source: dict[str, dict[str, int]]
    # Per source, counts of what stages did to kept rows without dropping them, e.g. {"pii:email": 3}.
    notes_by_source: dict[str, dict[str, int]] = Field(default_factory=dict)
    # Labelled sources: per label, records read and filtered, and the rate; a skew (one label filtered more
    # than twice as often as another) is a warning that a model trained on the rest learns a biased sample.
    drop_rate_by_label: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    label_skews: list[str] = Field(default_factory=list)
    contracts: dict[str, str] = Field(default_factory=dict)  # suite name -> version
    created_at: datetime | None = None  # excluded from the version id

    def content_hash(self) -> str:
        """The dataset version id: what is in the dataset, not when or with which library it was built."""
        excluded = {"version", "created_at", "code_version", "libraries"}
        # fields added after the first versions: left out while empty, so those versions keep their id
        excluded |= {name for name in ("notes_by_source", "drop_rate_by_label", "label_skews") if not getattr(self, name)}
        content = self.model_dump(mode="json", exclude=excluded)
        content["inputs"] = [record.content() for record in self.inputs]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def usable_shards(self, split: str | None = None) -> list[ShardRecord]:
        return [s for s in self.shards if s.usable and (split is None or s.split == split)]
