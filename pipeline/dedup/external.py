"""The global dedup step over key files, as bucket tasks and one resolution, memory bounded by a bucket.

Every document is numbered by its row in the key files taken in the given order (its `doc`). Three joins
find what is shared: ids (documents that arrived under an id another already has, settled by the rules
of ids.py on those few documents alone), content hashes (exact duplicates) and LSH band keys
(near-duplicate candidates). Each key file has its join records laid out by key range (buckets.py), so
the joins split into B independent bucket tasks (`bucket_collisions`): each reads its range of every file,
sorts it and keeps only the keys held by two or more documents. Those collisions are the duplicates and
their candidates, a small share of the corpus; one resolution (`resolve_collisions`) gathers only their
ids, hashes and signatures from the key files (signatures into a file on disk, read per pair) and applies
the rules of `find_duplicates`: each cluster keeps its smallest (rank, id), exact groups first, then near
clusters over the exact representatives by banding, estimated-Jaccard verification and union-find. In
that order a current document that keeps an id of the previous version comes before the other current
documents.
"""

from __future__ import annotations

import io
import mmap
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import sortedsets, storage
from pipeline.config import DedupConfig
from pipeline.dedup import buckets
from pipeline.dedup.buckets import JOIN_BAND, JOIN_HASH, JOIN_ID
from pipeline.dedup.ids import RENAMED_SCHEMA, RepeatedIdError, describe_repeated, repeated_ids, resolve_repeated_ids
from pipeline.dedup.keyfiles import band_layout, keys_schema
from pipeline.dedup.minhash import BUCKET_WINDOW, bucket_pairs, connected_components, estimated_jaccard

PREVIOUS_RANK = -1  # rank of the previous dataset version's documents: they win every tie, and stay
CARRIED_PREFERENCE = -1  # in ties (ranks doubled), a current doc keeping a previous id: after those, before the rest
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string(), nullable=False),  # the kept representative of its cluster
        pa.field("kind", pa.string(), nullable=False),  # exact | near
        pa.field("similarity", pa.float32(), nullable=False),  # estimated Jaccard to the representative
    ]
)
# Join records a bucket task holds: 21 bytes each, so ~40 MB plus the sort's index and copies at a time.
DEFAULT_BUCKET_ROWS = 2_000_000
# Join records below which a bucket's sort costs less than the round trip of one more task (~50 ms).
SHARED_BUCKET_ROWS = 250_000
_PAIRS_PER_READ = 4_096  # pairs verified at once: at most 2 x 4k signatures (4 MB) in memory
# Signature rows gathered per mapping of their file. Each row read maps its page and, by the kernel's
# fault-around, up to 15 more (64 KB): 512 rows keep that under 32 MB while a map is open.
_ROWS_PER_MAP = 512
# Documents whose ids and content hashes are gathered at once to decide exact groups: ~25 MB of Arrow memory.
EXACT_PASS_DOCS = 100_000


@dataclass(frozen=True)
class KeyFile:
    """A partition's key file, the rank its documents take (source order; -1 for the previous version), and
    the partition and source it belongs to (they address a renamed document: partition + row)."""

    path: str
    rank: int
    partition: str = ""
    source: str = ""


# A duplicate row and the partition its document lies in, so each writing task reads only its own.
_LOCATED_SCHEMA = DUPLICATES_SCHEMA.append(pa.field("partition", pa.string(), nullable=False))


@dataclass(frozen=True)
class DedupResult:
    duplicates: pa.Table  # DUPLICATES_SCHEMA, by id as renamed
    renamed: pa.Table  # RENAMED_SCHEMA: (partition, row) -> new id of documents whose id was taken
    repeated_by_source: dict[str, int]  # per source, documents that arrived with an id already taken
    partitions: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # per duplicate row


def find_duplicates_in_files(
    files: Sequence[KeyFile], config: DedupConfig, spill_dir: str | Path | None = None,
    bucket_rows: int = DEFAULT_BUCKET_ROWS,
) -> DedupResult:
    """Repeated ids settled, then one row per duplicate document (DUPLICATES_SCHEMA), sorted by id.

    Documents not listed are kept. A current document that arrives under an id an earlier one holds is
    renamed (ids.py), or is an exact duplicate of it when its text is the same; a previous-version document
    (rank -1) whose id a current document also holds is left out, as the current one replaces it. Ids are
    settled even with exact and near dedup off. The bucket tasks and the resolution run here one after the
    other, their files in a temporary directory under `spill_dir`; the build runs them as separate tasks.
    """
    with tempfile.TemporaryDirectory(prefix="dedup-", dir=spill_dir) as scratch:
        count = bucket_count(files, bucket_rows=bucket_rows)
        collisions = []
        for bucket in range(count):
            path = str(Path(scratch) / f"collisions-{bucket:04d}.npy")
            write_collisions(path, bucket_collisions(files, bucket, count))
            collisions.append(path)
        return resolve_collisions(files, config, collisions, scratch)


def bucket_count(files: Sequence[KeyFile], workers: int = 1, bucket_rows: int = DEFAULT_BUCKET_ROWS) -> int:
    """Buckets for these key files: enough that none holds much more than `bucket_rows` join records, and
    one per worker once a bucket would take longer than handing it to a task (SHARED_BUCKET_ROWS)."""
    records = sum(int(buckets.read_header(buckets.records_path(f.path))[1][-1]) for f in files)
    by_size = -(-records // bucket_rows)
    by_workers = min(workers, records // SHARED_BUCKET_ROWS)
    return int(min(buckets.SLOTS, max(1, by_size, by_workers)))


def bucket_collisions(files: Sequence[KeyFile], bucket: int, count: int) -> np.ndarray:
    """One bucket task: the join records of its key range, from every file, whose key two or more documents
    share; sorted by (join, band, key, doc). Its memory is its range's records, not the corpus."""
    lo, hi = buckets.slot_range(bucket, count)
    paths = [buckets.records_path(file.path) for file in files]
    headers = [buckets.read_header(path) for path in paths]
    # read straight into one array (not a piece per file, then joined): half the peak, and no heap left
    # fragmented by a hundred pieces in a worker that runs bucket after bucket
    ends = np.cumsum([0] + [int(offsets[hi] - offsets[lo]) for _, offsets in headers])
    records = np.empty(int(ends[-1]), dtype=buckets.RECORD)
    start = 0
    for path, (rows, offsets), at, until in zip(paths, headers, ends[:-1].tolist(), ends[1:].tolist()):
        buckets.read_slots_into(path, offsets, lo, hi, records[at:until])
        records["doc"][at:until] += start
        start += rows
    joins = records["join"]
    found = [_shared_keys(_take(records, np.flatnonzero(joins == join))) for join in (JOIN_ID, JOIN_HASH, JOIN_BAND)]
    return np.concatenate(found)


def write_collisions(uri: str, records: np.ndarray) -> str:
    """A bucket task's output, through storage so it can lie on any store the resolution reads; not fsynced,
    as every build writes it anew (storage.open_output)."""
    buffer = io.BytesIO()
    np.save(buffer, records, allow_pickle=False)
    storage.write_bytes(uri, buffer.getvalue(), durable=False)
    return uri


def resolve_collisions(
    files: Sequence[KeyFile], config: DedupConfig, collisions: Sequence[str], scratch: str | Path,
) -> DedupResult:
    """The resolution task: repeated ids settled, exact groups and near clusters decided, over the docs met
    in the bucket tasks' collisions only (the rest of the corpus is never read)."""
    corpus = _Corpus(files, config, Path(scratch))
    if corpus.size == 0:
        return DedupResult(DUPLICATES_SCHEMA.empty_table(), RENAMED_SCHEMA.empty_table(), {})
    settled = _settle_ids(corpus, _Collisions(collisions, JOIN_ID), keep_same_text=not config.exact)
    corpus.renamed, corpus.carried = settled.new_ids, settled.carried
    duplicates = _LOCATED_SCHEMA.empty_table()
    exact_doc = _EMPTY
    if config.exact or config.near:
        ignored = settled.ignored
        exact_rep = _EMPTY
        if config.exact:
            exact_doc, exact_rep = _exact_groups(corpus, _Collisions(collisions, JOIN_HASH),
                                                 sortedsets.Bitmap(ignored, corpus.size))
        near = _NearClusters.empty()
        if config.near:
            excluded = sortedsets.Bitmap(np.concatenate([ignored, exact_doc]), corpus.size)
            near = _near_clusters(corpus, _Collisions(collisions, JOIN_BAND), excluded, config, Path(scratch))
        duplicates = _duplicate_rows(corpus, exact_doc, exact_rep, near)
    located = settled.with_repeats(duplicates)
    return DedupResult(located.drop_columns(["partition"]), settled.renamed, settled.repeated_by_source,
                       located.column("partition").combine_chunks())


_EMPTY = np.zeros(0, dtype=np.int64)


class _Corpus:
    """The key files as one numbered sequence of documents, read batch by batch, one file at a time.

    Row counts come from the join records' headers. A key file on a remote store is downloaded into
    `scratch` the first time a gather needs it (only files holding colliding documents are).
    """

    def __init__(self, files: Sequence[KeyFile], config: DedupConfig, scratch: Path) -> None:
        self.files = list(files)
        self.schema = expected = keys_schema(config)
        for file in self.files:
            with storage.open_input(file.path) as stream:
                schema = pa.ipc.open_file(stream).schema
            if not schema.equals(expected):
                raise ValueError(f"{file.path}: dedup keys do not match the dedup config (num_perm, threshold); "
                                 f"write them again: schema {schema} != {expected}")
        self.ranks = np.array([f.rank for f in self.files], dtype=np.int64)
        rows = [buckets.read_rows(buckets.records_path(f.path)) for f in self.files]
        self.ends = np.cumsum(rows, dtype=np.int64)
        self.renamed: dict[int, str] = {}  # doc -> the id it was given because an earlier doc holds its own
        self.carried = _EMPTY  # sorted current docs whose id the previous version holds: they win ties
        self._scratch = scratch
        self._local: dict[int, str] = {}

    def local_path(self, index: int) -> str:
        path = self.files[index].path
        if storage.is_local(path):
            return storage.filesystem(path)[1]
        if index not in self._local:
            local = self._scratch / f"keys-{index:05d}.arrow"
            with storage.open_input(path) as remote, open(local, "wb") as out:
                shutil.copyfileobj(remote, out, storage.READ_BLOCK)
            self._local[index] = str(local)
        return self._local[index]

    @property
    def size(self) -> int:
        return int(self.ends[-1]) if self.ends is not None and len(self.ends) else 0

    def file_of(self, docs: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ends, docs, side="right")

    def rank_of(self, docs: np.ndarray) -> np.ndarray:
        return self.ranks[self.file_of(docs)]

    def preference_of(self, docs: np.ndarray) -> np.ndarray:
        """The order of docs in ties: the previous version's first, then current docs that keep one of its
        ids, then the rest by rank. So a text ingested again under another id is the duplicate, and readers
        keep the id they know."""
        preference = self.rank_of(docs) * 2  # previous: -2, sources: 0, 2, 4 ...
        if len(self.carried):
            preference[_is_member(docs, self.carried)] = CARRIED_PREFERENCE
        return preference

    def batches(self, columns: Sequence[str], only_files: Sequence[int] | None = None,
                ) -> Iterator[tuple[np.ndarray, pa.RecordBatch]]:
        """(doc numbers, batch of those columns) in doc order, over all files or the given ones."""
        for index in range(len(self.files)):
            if only_files is not None and index not in only_files:
                continue
            start = self.start_of(index)
            # mapped, so only the pages of the columns asked for are read; unmapped after each file, so
            # the pages read count as this process's memory for one file at a time, not for the corpus
            with pa.memory_map(self.local_path(index)) as stream:
                reader = pa.ipc.open_file(stream)
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i).select(list(columns))
                    yield np.arange(start, start + batch.num_rows, dtype=np.int64), batch
                    start += batch.num_rows

    def gather(self, docs: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """The given columns of `docs` (sorted, unique), in that order, with their `doc` numbers; `id` as renamed."""
        pieces = list(self.gathered(docs, columns))
        if not pieces:
            return self.schema.empty_table().select(list(columns)).append_column("doc", pa.array([], pa.int64()))
        table = pa.concat_tables(pieces)
        if "id" in columns and self.renamed:
            numbers = table.column("doc").to_numpy()
            ids = [self.renamed.get(doc, doc_id) for doc, doc_id in zip(numbers.tolist(), table.column("id").to_pylist())]
            index = table.schema.get_field_index("id")
            table = table.set_column(index, table.schema.field(index), pa.array(ids, pa.string()))
        return table

    def start_of(self, file_index: int) -> int:
        return int(self.ends[file_index - 1]) if file_index else 0

    def gathered(self, docs: np.ndarray, columns: Sequence[str]) -> Iterator[pa.Table]:
        """`gather` piece by piece, one per record batch holding some of `docs`, in doc order."""
        for numbers, batch in self.batches(columns, set(sortedsets.unique(self.file_of(docs)).tolist())):
            lo, hi = np.searchsorted(docs, [numbers[0], numbers[-1] + 1]) if len(numbers) else (0, 0)
            if hi > lo:
                rows = pa.array(docs[lo:hi] - numbers[0])
                yield pa.Table.from_batches([batch.take(rows)]).append_column("doc", pa.array(docs[lo:hi]))


class _Collisions:
    """The records of one join that the bucket tasks found shared, read back one bucket file at a time."""

    def __init__(self, paths: Sequence[str], join: int) -> None:
        self.paths, self.join = paths, join

    def collisions(self, excluded: sortedsets.Bitmap | None = None) -> Iterator[np.ndarray]:
        """Per bucket, the records whose (band, key) two or more non-excluded documents share, sorted so."""
        for path in self.paths:
            records = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
            records = records[records["join"] == self.join]
            if excluded:
                records = _shared_keys(records[~excluded.contains(records["doc"])])
            if len(records):
                yield records


def _shared_keys(records: np.ndarray) -> np.ndarray:
    """The records whose (band, key) two or more of them hold, sorted by (band, key, doc).

    The records must come in doc order within each (band, key), as they do from the key files taken in
    order (each file's records keep their doc order within a slot) and from a bucket task's output; the
    sorts are stable, so doc order needs no sort of its own.
    """
    if len(records) < 2:
        return records[:0]
    # keys alone first, then bands (small integers: numpy's stable sort of them is a radix sort), on plain
    # copies of the fields, moving indices: a lexsort of three fields is ~3x slower.
    keys = np.ascontiguousarray(records["key"])
    order = np.argsort(keys, kind="stable")
    shared = order[_held_twice(keys[order])]
    if not len(shared):
        return records[:0]
    bands = np.ascontiguousarray(records["band"])[shared]
    by_band = np.argsort(bands.astype(np.min_scalar_type(int(bands.max()))), kind="stable")
    shared, bands = shared[by_band], bands[by_band]
    keys = keys[shared]
    same = (keys[1:] == keys[:-1]) & (bands[1:] == bands[:-1])
    return _take(records, shared[_held_twice_from(same)])


def _take(records: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """records[rows], gathered as opaque items: ~3x faster than numpy's field-by-field copy of packed records."""
    return records.view(f"V{records.dtype.itemsize}")[rows].view(records.dtype)


def _held_twice(sorted_values: np.ndarray) -> np.ndarray:
    """Mask of the sorted values that equal a neighbour."""
    return _held_twice_from(sorted_values[1:] == sorted_values[:-1])


def _held_twice_from(same_as_next: np.ndarray) -> np.ndarray:
    shared = np.zeros(len(same_as_next) + 1, dtype=bool)
    shared[1:] |= same_as_next
    shared[:-1] |= same_as_next
    return shared


def _is_member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    positions = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[positions] == values


@dataclass
class _SettledIds:
    """What the id join decided: docs left out of the hash and band joins, new ids, same-text repeats."""

    ignored: np.ndarray  # sorted: previous docs whose id a current doc holds, and same-text repeats
    new_ids: dict[int, str]  # doc -> new id, for every later occurrence of a taken id
    carried: np.ndarray  # sorted: current docs that keep an id the previous version holds
    renamed: pa.Table  # RENAMED_SCHEMA
    repeats: pa.Table  # same-text repeats: (id: the new id, first: the id of the first occurrence)
    repeated_by_source: dict[str, int]

    def with_repeats(self, duplicates: pa.Table) -> pa.Table:
        """Same-text repeats as exact duplicates of their first occurrence's representative."""
        if not self.repeats.num_rows:
            return duplicates
        representative = dict(zip(duplicates.column("id").to_pylist(), duplicates.column("duplicate_of").to_pylist()))
        partition_of = dict(zip(self.renamed.column("new_id").to_pylist(), self.renamed.column("partition").to_pylist()))
        firsts = self.repeats.column("first").to_pylist()
        repeats = pa.table({
            "id": self.repeats.column("id"),
            "duplicate_of": pa.array([representative.get(first, first) for first in firsts], pa.string()),
            "kind": pa.array(["exact"] * len(firsts), pa.string()),
            "similarity": pa.array([1.0] * len(firsts), pa.float32()),
            "partition": pa.array([partition_of[i] for i in self.repeats.column("id").to_pylist()], pa.string()),
        }, schema=_LOCATED_SCHEMA)
        return pa.concat_tables([duplicates, repeats]).sort_by("id")


def _settle_ids(corpus: _Corpus, id_spill: _Collisions, keep_same_text: bool) -> _SettledIds:
    """Settle the few docs whose id another doc also holds; every other doc is untouched."""
    candidates = sortedsets.unique(np.concatenate([_EMPTY, *(r["doc"] for r in id_spill.collisions())]))
    none = _SettledIds(_EMPTY, {}, _EMPTY, RENAMED_SCHEMA.empty_table(), pa.table({"id": pa.array([], pa.string()),
                                                                            "first": pa.array([], pa.string())}), {})
    if not len(candidates):
        return none
    shared = corpus.gather(candidates, ["id", "content_hash"])
    docs = shared.column("doc").to_numpy()
    files = corpus.file_of(docs)
    ranks = corpus.ranks[files]
    is_current = ranks != PREVIOUS_RANK
    current_ids = set(pc.filter(shared.column("id"), pa.array(is_current)).to_pylist())
    ids = shared.column("id").to_pylist()
    ignored = [doc for doc, doc_id, current in zip(docs.tolist(), ids, is_current.tolist())
               if not current and doc_id in current_ids]
    previous = shared.filter(pa.array(~is_current))
    if repeated_ids(previous) is not None:
        raise RepeatedIdError(f"the previous version's {describe_repeated(previous, repeated_ids(previous))}")
    located = shared.filter(pa.array(is_current)).append_column("rank", pa.array(ranks[is_current]))
    current_files = files[is_current].tolist()
    located = located.append_column("partition", pa.array([corpus.files[f].partition for f in current_files]))
    located = located.append_column("source", pa.array([corpus.files[f].source for f in current_files]))
    rows = located.column("doc").to_numpy() - np.array([corpus.start_of(f) for f in current_files], dtype=np.int64)
    located = located.append_column("row", pa.array(rows, pa.int64()))
    if not any(corpus.files[f].partition for f in current_files) and repeated_ids(located) is not None:
        raise RepeatedIdError(describe_repeated(located, repeated_ids(located)) + "; no partition tells them apart")
    resolved = resolve_repeated_ids(located, keep_same_text)
    start_of_partition = {corpus.files[f].partition: corpus.start_of(f) for f in set(current_files)}
    renamed = resolved.renamed
    new_ids = {start_of_partition[p] + r: new for p, r, new in zip(
        renamed.column("partition").to_pylist(), renamed.column("row").to_pylist(), renamed.column("new_id").to_pylist())}
    same_text = set(resolved.repeats.column("id").to_pylist())
    ignored += [doc for doc, new in new_ids.items() if new in same_text]
    previous_ids = set(pc.filter(shared.column("id"), pa.array(~is_current)).to_pylist())
    carried = [doc for doc, doc_id, current in zip(docs.tolist(), ids, is_current.tolist())
               if current and doc not in new_ids and doc_id in previous_ids]
    return _SettledIds(np.array(sorted(ignored), dtype=np.int64), new_ids, np.array(sorted(carried), dtype=np.int64),
                       renamed, resolved.repeats, resolved.repeated_by_source())


def _exact_groups(corpus: _Corpus, hash_spill: _Collisions, ignored: sortedsets.Bitmap,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(doc, its exact representative) for every doc that is not its group's representative, by doc.

    A content hash's documents all lie in one bucket, so buckets are decided a few at a time: each pass
    gathers the ids and hashes of at most about EXACT_PASS_DOCS documents, whatever the corpus."""
    found = [(_EMPTY, _EMPTY)]
    for candidates in _passes(hash_spill.collisions(ignored)):
        found.append(_exact_groups_among(corpus, candidates))
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps what a pass freed, unless told
    docs, representatives = (np.concatenate(parts) for parts in zip(*found))
    order = np.argsort(docs)
    return docs[order], representatives[order]


def _passes(bucket_records: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The documents of consecutive buckets' records, sorted, in runs of about EXACT_PASS_DOCS (a bucket is
    never split: its groups are decided together)."""
    held: list[np.ndarray] = []
    count = 0
    for records in bucket_records:
        held.append(records["doc"])
        count += len(records)
        if count >= EXACT_PASS_DOCS:
            yield sortedsets.unique(np.concatenate(held))
            held, count = [], 0
    if held:
        yield sortedsets.unique(np.concatenate(held))


def _exact_groups_among(corpus: _Corpus, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(doc, its exact representative) for the candidates that are not their group's representative; every
    member of their groups is among the candidates."""
    table = corpus.gather(candidates, ["id", "content_hash"])
    table = table.append_column("rank", pa.array(corpus.preference_of(candidates)))
    # an order and small codes rather than a sorted copy of the table: the hashes are most of its bytes
    sorted_rows = pc.sort_indices(
        table, [("content_hash", "ascending"), ("rank", "ascending"), ("id", "ascending")]).to_numpy()
    hashes = table.column("content_hash").combine_chunks().dictionary_encode().indices.to_numpy()[sorted_rows]
    docs = table.column("doc").to_numpy()[sorted_rows]
    del table
    first = np.flatnonzero(np.diff(hashes, prepend=-1) != 0)
    representative = np.repeat(docs[first], np.diff(np.append(first, len(docs))))
    is_duplicate = representative != docs
    return docs[is_duplicate], representative[is_duplicate]


@dataclass
class _NearClusters:
    """Docs met in near-duplicate candidate buckets: their best (rank, id) cluster member and signatures."""

    docs: np.ndarray  # sorted doc numbers
    best: np.ndarray  # per doc: doc number of its cluster's kept document
    signatures: _SignatureFile | None

    @classmethod
    def empty(cls) -> _NearClusters:
        return cls(_EMPTY, _EMPTY, None)

    def best_of(self, docs: np.ndarray) -> np.ndarray:
        """Cluster's kept document for each doc; a doc met in no cluster is its own."""
        if not len(self.docs):
            return docs.copy()
        found = _is_member(docs, self.docs)
        result = docs.copy()
        result[found] = self.best[np.searchsorted(self.docs, docs[found])]
        return result

    def similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self.signatures.similarity(np.searchsorted(self.docs, left), np.searchsorted(self.docs, right))


class _SignatureFile:
    """Signatures of a sorted set of docs, kept on disk and read a few thousand pairs at a time."""

    def __init__(self, path: Path, corpus: _Corpus, docs: np.ndarray, num_perm: int) -> None:
        self.path, self.num_perm = path, num_perm
        with open(path, "wb") as out:
            for piece in corpus.gathered(docs, ["minhash"]):
                piece.column("minhash").combine_chunks().flatten().to_numpy().astype("<u4").tofile(out)

    def similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        result = np.empty(len(left), dtype=np.float32)
        for lo in range(0, len(left), _PAIRS_PER_READ):
            rows, inverse = np.unique(np.concatenate([left[lo : lo + _PAIRS_PER_READ],
                                                      right[lo : lo + _PAIRS_PER_READ]]), return_inverse=True)
            half = len(inverse) // 2
            result[lo : lo + half] = estimated_jaccard(self._rows(rows), inverse[:half], inverse[half:])
        return result

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """The signatures of these rows, gathered from the file mapped a few hundred rows at a time: the pages
        a mapping touches count as this process's memory until it is unmapped (a read per row is 5x slower)."""
        signatures = np.empty((len(rows), self.num_perm), dtype="<u4")
        with open(self.path, "rb") as file:
            for lo in range(0, len(rows), _ROWS_PER_MAP):
                with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    table = np.frombuffer(mapped, "<u4").reshape(-1, self.num_perm)
                    signatures[lo : lo + _ROWS_PER_MAP] = table[rows[lo : lo + _ROWS_PER_MAP]]
                    del table  # the map cannot close while an array still points into it
        return signatures


def _near_clusters(
    corpus: _Corpus, band_spill: _Collisions, excluded: sortedsets.Bitmap, config: DedupConfig, scratch: Path
) -> _NearClusters:
    """Clusters of exact representatives whose estimated Jaccard chains reach config.threshold.

    The candidate pairs are those of `bucket_pairs` in the in-memory step: a bucket of up to
    BUCKET_WINDOW + 1 members gives all its pairs whatever their order, so those are taken straight from
    the bucket files; only the rare wider buckets need their members' (rank, id) order. A pair verifies
    alike in every band, so the candidates of all bands are verified once, together.
    """
    candidates, wide = _candidate_pairs(band_spill, excluded, corpus.size)
    if len(wide):
        candidates = sortedsets.union(candidates, _wide_bucket_pairs(corpus, wide))
    if not len(candidates):
        return _NearClusters.empty()
    left, right = candidates // corpus.size, candidates % corpus.size
    docs = sortedsets.union(left, right)
    signatures = _SignatureFile(scratch / "signatures.bin", corpus, docs, config.num_perm)
    similar = signatures.similarity(np.searchsorted(docs, left), np.searchsorted(docs, right)) >= config.threshold
    left, right = left[similar], right[similar]
    clustered = sortedsets.union(left, right)
    places, preference = _preference(corpus, clustered)
    labels = connected_components(len(clustered), places[np.searchsorted(clustered, left)],
                                  places[np.searchsorted(clustered, right)])
    best = docs.copy()
    best[np.searchsorted(docs, clustered)] = clustered[preference[labels[places]]]
    return _NearClusters(docs, best, signatures)


def _candidate_pairs(band_spill: _Collisions, excluded: sortedsets.Bitmap, size: int,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pair codes (left * size + right, left < right, unique) of the buckets of up to BUCKET_WINDOW + 1
    members, and the records of the wider buckets."""
    codes, wide = [_EMPTY], []  # per bucket, its distinct pairs: one pair may come from several buckets' bands
    for records in band_spill.collisions(excluded):  # sorted by (band, key, doc), shared keys only
        keys, bands = records["key"], records["band"]
        begins = np.ones(len(records), dtype=bool)
        begins[1:] = (keys[1:] != keys[:-1]) | (bands[1:] != bands[:-1])
        starts = np.flatnonzero(begins)
        sizes = np.diff(np.append(starts, len(records)))
        group = np.repeat(np.arange(len(starts)), sizes)
        is_wide = (sizes > BUCKET_WINDOW + 1)[group]
        wide.append(records[is_wide])
        docs, group = records["doc"][~is_wide], group[~is_wide]
        found = [_EMPTY]
        for distance in range(1, min(int(sizes.max()), BUCKET_WINDOW + 1)):
            same = np.flatnonzero(group[:-distance] == group[distance:])
            if not len(same):
                break
            found.append(docs[same] * size + docs[same + distance])  # docs ascend inside a bucket
        codes.append(sortedsets.unique(np.concatenate(found)))
    return sortedsets.union(*codes), np.concatenate(wide) if wide else np.zeros(0, dtype=buckets.RECORD)


def _wide_bucket_pairs(corpus: _Corpus, records: np.ndarray) -> np.ndarray:
    """Pair codes of the buckets wider than BUCKET_WINDOW + 1, paired in (rank, id) order by bucket_pairs."""
    docs = sortedsets.unique(records["doc"])
    places, preference = _preference(corpus, docs)
    codes = [_EMPTY]
    for band in sortedsets.unique(records["band"]).tolist():
        members = records[records["band"] == band]
        member_places = places[np.searchsorted(docs, members["doc"])]
        order = np.argsort(member_places)
        left, right = bucket_pairs(members["key"][order], BUCKET_WINDOW)
        left, right = docs[preference[member_places[order][left]]], docs[preference[member_places[order][right]]]
        codes.append(np.minimum(left, right) * corpus.size + np.maximum(left, right))
    return sortedsets.unique(np.concatenate(codes))


def _preference(corpus: _Corpus, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted docs: each one's place in (rank, id) order (`preference_of` for the rank), and the index
    of the doc at each place."""
    table = corpus.gather(docs, ["id"]).append_column("rank", pa.array(corpus.preference_of(docs)))
    preference = pc.sort_indices(table, [("rank", "ascending"), ("id", "ascending")]).to_numpy()
    places = np.empty(len(docs), dtype=np.int64)
    places[preference] = np.arange(len(docs))
    return places, preference


def _duplicate_rows(corpus: _Corpus, exact_doc: np.ndarray, exact_rep: np.ndarray, near: _NearClusters) -> pa.Table:
    """Rows for exact duplicates (pointing past their representative to its cluster's kept document) and
    for exact representatives that a near cluster merged into another document."""
    near_rows = near.docs[near.best != near.docs]  # exact representatives all: the others never got banded
    rows = np.concatenate([exact_doc, near_rows])
    representative = np.concatenate([exact_rep, near_rows])  # each row's exact group representative
    final = near.best_of(representative)
    reported = corpus.rank_of(rows) != PREVIOUS_RANK
    rows, representative, final = rows[reported], representative[reported], final[reported]
    is_exact = representative == final
    similarity = np.ones(len(rows), dtype=np.float32)
    if (~is_exact).any():
        similarity[~is_exact] = near.similarity(representative[~is_exact], final[~is_exact])
    named = sortedsets.unique(np.concatenate([rows, final]))
    ids = corpus.gather(named, ["id"]).column("id").combine_chunks()
    table = pa.table(
        {
            "id": ids.take(pa.array(np.searchsorted(named, rows))),
            "duplicate_of": ids.take(pa.array(np.searchsorted(named, final))),
            "kind": pa.array(np.where(is_exact, "exact", "near"), pa.string()),
            "similarity": pa.array(similarity, pa.float32()),
            "partition": pa.array([corpus.files[f].partition for f in corpus.file_of(rows).tolist()], pa.string()),
        },
        schema=_LOCATED_SCHEMA,
    )
    return table.sort_by("id")
