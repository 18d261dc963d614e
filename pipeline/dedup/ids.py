"""Documents that arrive under an id an earlier document already has.

A document's id comes from its source and its native id (page id, URL, the export's id column), so the
same record gets the same id in every build and versions can be compared document by document. Field
data repeats native ids: a page crawled twice lands in two WARC files under one URL, an export repeats
its `id` column. Partitions are read apart, so only the global step sees every id; it settles them here,
before deduplication:

- Documents are taken in build order (source rank, partition, row). The first of an id keeps it.
- A later one with the same text (equal content hash) is the same record again: an exact duplicate of
  the first (when exact dedup is on), `duplicate_of` naming the first's representative.
- A later one with other text is a distinct document and is kept. Its id is derived from the id and its
  content hash (plus a counter for the same text seen again with exact dedup off). That is stable and
  deterministic: it depends on neither file names nor positions, so a re-crawl that moves a page to
  another file or offset gives it the same id, and two versions of one URL both stay, each under an id of
  its own. What it does depend on is the text after cleaning, so changing the cleaning config renames
  these (only these) documents.

Every later occurrence is renamed, duplicates included, so the ids handed to deduplication and to the
shards are unique. Renames are addressed by (partition, row): the row number of the document in its
partition's staged documents, which is the same on every read.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LOCATOR_COLUMNS = ("partition", "row")
RENAMED_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),  # the id it arrived with, which an earlier document holds
        pa.field("new_id", pa.string(), nullable=False),
        pa.field("first_id_text", pa.bool_(), nullable=False),  # same text as an earlier document of that id
    ]
)
# The note under which the build counts, per source, documents that arrived with an id already taken.
REPEATED_ID_NOTE = "repeated_id"


class RepeatedIdError(ValueError):
    """Document ids repeat where they cannot be told apart; names the ids and their sources."""


@dataclass(frozen=True)
class ResolvedIds:
    keys: pa.Table  # the keys with unique ids: later occurrences renamed, same-text repeats left out
    renamed: pa.Table  # RENAMED_SCHEMA, one row per later occurrence
    repeats: pa.Table  # same-text repeats as (id: its new id, first: the id of the first occurrence)

    def repeated_by_source(self) -> dict[str, int]:
        """Per source, how many documents arrived under an id an earlier document already had."""
        return dict(sorted(Counter(self.renamed.column("source").to_pylist()).items()))


def resolve_repeated_ids(keys: pa.Table, keep_same_text: bool = False) -> ResolvedIds:
    """Make the keys' ids unique as the module docstring says.

    `keys` needs id, source, content_hash and rank, and, when any id repeats, the locator columns
    partition and row. With `keep_same_text` (exact dedup off) a same-text repeat is renamed and kept
    in the keys like any other, instead of being set apart as a duplicate of the first.
    """
    repeated = repeated_ids(keys)
    if repeated is None:
        return ResolvedIds(keys, RENAMED_SCHEMA.empty_table(), _repeats_table([], []))
    missing = [column for column in LOCATOR_COLUMNS if column not in keys.column_names]
    if missing:
        raise RepeatedIdError(describe_repeated(keys, repeated) + f"; keys lack {missing} to tell them apart")
    positions = np.flatnonzero(pc.is_in(keys.column("id"), value_set=repeated).to_numpy(zero_copy_only=False))
    involved = keys.take(pa.array(positions)).append_column("position", pa.array(positions, pa.int64()))
    involved = involved.sort_by([("rank", "ascending"), ("partition", "ascending"), ("row", "ascending")])
    renamed, repeats = _rename(involved, keep_same_text)
    new_keys = _renamed_keys(keys, renamed, keep_same_text)
    renamed_table = pa.Table.from_pylist([{k: r[k] for k in RENAMED_SCHEMA.names} for r in renamed], RENAMED_SCHEMA)
    still = repeated_ids(new_keys)
    if still is not None:
        raise RepeatedIdError(describe_repeated(new_keys, still))
    return ResolvedIds(new_keys, renamed_table, _repeats_table(*repeats))


def repeated_ids(keys: pa.Table) -> pa.Array | None:
    """The ids held by more than one row of `keys`; None when every id is unique (checked first, cheaply)."""
    ids = keys.column("id")
    if pc.count_distinct(ids).as_py() == len(ids):
        return None
    counts = keys.group_by("id").aggregate([("id", "count")])
    return counts.filter(pc.greater(counts.column("id_count"), 1)).column("id").combine_chunks()


def describe_repeated(keys: pa.Table, repeated: pa.Array, shown: int = 5) -> str:
    """'document id(s) held more than once: <id> (sources a, b), ...' for an error message."""
    rows = keys.filter(pc.is_in(keys.column("id"), value_set=repeated)).select(["id", "source"]).to_pylist()
    sources: dict[str, set[str]] = {}
    for row in rows:
        sources.setdefault(row["id"], set()).add(row["source"])
    listed = ", ".join(f"{i} (source {', '.join(sorted(s))})" for i, s in sorted(sources.items())[:shown])
    more = f" and {len(sources) - shown} more" if len(sources) > shown else ""
    return f"{len(sources)} document id(s) held more than once: {listed}{more}"


def _rename(involved: pa.Table, keep_same_text: bool) -> tuple[list[dict], tuple[list[str], list[str]]]:
    renamed: list[dict] = []
    repeat_ids: list[str] = []
    repeat_firsts: list[str] = []
    first_hash: dict[str, str | None] = {}
    seen: Counter = Counter()  # (id, content hash) -> occurrences so far
    for row in involved.select(["id", "source", "content_hash", *LOCATOR_COLUMNS, "position"]).to_pylist():
        doc_id, text_hash = row["id"], row["content_hash"]
        occurrence = seen[(doc_id, text_hash)]
        seen[(doc_id, text_hash)] += 1
        if doc_id not in first_hash:
            first_hash[doc_id] = text_hash
            continue
        same_text = text_hash is not None and text_hash == first_hash[doc_id]
        new_id = _derived_id(doc_id, text_hash, occurrence)
        renamed.append({"partition": row["partition"], "row": row["row"], "source": row["source"], "id": doc_id,
                        "new_id": new_id, "first_id_text": same_text, "position": row["position"]})
        if same_text and not keep_same_text:
            repeat_ids.append(new_id)
            repeat_firsts.append(doc_id)
    return renamed, (repeat_ids, repeat_firsts)


def _derived_id(doc_id: str, text_hash: str | None, occurrence: int) -> str:
    return hashlib.sha256(f"{doc_id}\x1f{text_hash or ''}\x1f{occurrence}".encode()).hexdigest()[:32]


def _renamed_keys(keys: pa.Table, renamed: list[dict], keep_same_text: bool) -> pa.Table:
    """The keys with each later occurrence under its new id; same-text repeats dropped unless kept."""
    renamed = sorted(renamed, key=lambda r: r["position"])
    mask = np.zeros(keys.num_rows, dtype=bool)
    mask[[r["position"] for r in renamed]] = True
    ids = pc.replace_with_mask(
        keys.column("id").combine_chunks(), pa.array(mask), pa.array([r["new_id"] for r in renamed], pa.string())
    )
    index = keys.schema.get_field_index("id")
    updated = keys.set_column(index, keys.schema.field(index), ids)
    if keep_same_text:
        return updated
    keep = np.ones(keys.num_rows, dtype=bool)
    keep[[r["position"] for r in renamed if r["first_id_text"]]] = False
    return updated.filter(pa.array(keep))


def _repeats_table(ids: list[str], firsts: list[str]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.string()), "first": pa.array(firsts, pa.string())})


def apply_renames(documents: pa.Table, renamed: pa.Table, partition: str) -> pa.Table:
    """A partition's staged documents with the ids the global step gave its later occurrences."""
    mine = renamed.filter(pc.equal(renamed.column("partition"), partition))
    if mine.num_rows == 0:
        return documents
    mine = mine.sort_by("row")
    mask = np.zeros(documents.num_rows, dtype=bool)
    mask[mine.column("row").to_numpy()] = True
    new_ids = mine.column("new_id").combine_chunks()
    ids = pc.replace_with_mask(documents.column("id").combine_chunks(), pa.array(mask), new_ids)
    index = documents.schema.get_field_index("id")
    return documents.set_column(index, documents.schema.field(index), ids)
