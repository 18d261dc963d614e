"""The on-disk global dedup step gives what the in-memory definition gives, whatever the bucket size."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import DedupConfig
from pipeline.dedup import (
    DUPLICATES_SCHEMA,
    PREVIOUS_RANK,
    DedupKeysWriter,
    KeyFile,
    RepeatedIdError,
    find_duplicates,
    find_duplicates_in_files,
    write_id_keys,
    write_text_keys,
)
from pipeline.dedup import external
from pipeline.dedup.exact import content_hashes
from pipeline.dedup.minhash import connected_components, estimated_jaccard, near_pairs, signature_array

CONFIG = DedupConfig()


def reference_duplicates(keys: pa.Table, config: DedupConfig, carried: frozenset[str] = frozenset()) -> pa.Table:
    """The rules stated in memory, one table: sort by (rank, id), exact groups, near clusters, union-find.

    `carried`: ids of current documents that a previous version also holds; they come before other current
    documents in ties."""
    preference = [-1 if doc_id in carried else 2 * rank
                  for doc_id, rank in zip(keys.column("id").to_pylist(), keys.column("rank").to_pylist())]
    keys = keys.append_column("preference", pa.array(preference, pa.int64()))
    keys = keys.sort_by([("preference", "ascending"), ("id", "ascending")])
    ids = keys.column("id").combine_chunks()
    n = len(ids)
    exact = np.arange(n)
    if config.exact:
        first: dict[str, int] = {}
        for row, digest in enumerate(keys.column("content_hash").to_pylist()):
            if digest is not None:
                exact[row] = first.setdefault(digest, row)
    minhash = keys.column("minhash").combine_chunks()
    has_signature = minhash.is_valid().to_numpy(zero_copy_only=False)
    signatures = np.zeros((n, config.num_perm), dtype=np.uint32)
    signatures[has_signature] = minhash.drop_null().flatten().to_numpy().reshape(-1, config.num_perm)
    final = exact.copy()
    if config.near:
        candidates = np.flatnonzero((exact == np.arange(n)) & has_signature)
        left, right = near_pairs(signatures[candidates], config.threshold)
        best = np.arange(n)
        best[candidates] = candidates[connected_components(len(candidates), left, right)]
        final = best[exact]
    rows = np.flatnonzero((final != np.arange(n)) & (keys.column("rank").to_numpy() != PREVIOUS_RANK))
    is_exact = exact[rows] == final[rows]
    similarity = np.ones(len(rows), dtype=np.float32)
    similarity[~is_exact] = estimated_jaccard(signatures, exact[rows[~is_exact]], final[rows[~is_exact]])
    return pa.table(
        {"id": ids.take(pa.array(rows, pa.int64())), "duplicate_of": ids.take(pa.array(final[rows], pa.int64())),
         "kind": pa.array(np.where(is_exact, "exact", "near"), pa.string()),
         "similarity": pa.array(similarity, pa.float32())},
        schema=DUPLICATES_SCHEMA,
    ).sort_by("id")


def synthetic_keys(n: int, seed: int, num_perm: int = 128) -> pa.Table:
    """Random signatures with planted exact copies, near copies, long near chains and one huge bucket."""
    rng = np.random.default_rng(seed)
    signatures = rng.integers(0, 2**32, size=(n, num_perm), dtype=np.uint32)
    hashes = ["".join(f"{part:016x}" for part in row) for row in rng.integers(0, 2**63, size=(n, 4)).tolist()]
    for row in rng.choice(n, size=n // 10, replace=False):  # exact copies (same hash) of an earlier document
        source = int(rng.integers(0, n))
        hashes[row], signatures[row] = hashes[source], signatures[source]
    for row in rng.choice(n, size=n // 10, replace=False):  # near copies: ~6% of minima differ
        source = int(rng.integers(0, n))
        signatures[row] = signatures[source]
        changed = rng.random(num_perm) < 0.06
        signatures[row, changed] = rng.integers(0, 2**32, size=changed.sum(), dtype=np.uint32)
    crowd = rng.choice(n, size=min(80, n // 4), replace=False)  # one bucket far wider than BUCKET_WINDOW
    signatures[crowd] = signatures[crowd[0]]
    signatures[crowd, -(num_perm // 10) :] = rng.integers(0, 2**32, size=(len(crowd), num_perm // 10), dtype=np.uint32)
    has_signature = rng.random(n) > 0.05
    nulls = rng.random(n) < 0.02
    return pa.table(
        {
            "id": [f"doc-{i:06d}-{rng.integers(0, 10**6)}" for i in rng.permutation(n)],
            "content_hash": pa.array([None if null else h for h, null in zip(hashes, nulls)], pa.string()),
            "minhash": signature_array(signatures, has_signature),
            "rank": pa.array(rng.choice([PREVIOUS_RANK, 0, 1, 2], size=n, p=[0.1, 0.4, 0.3, 0.2]), pa.int32()),
        }
    )


def write_key_files(keys: pa.Table, directory, files_per_rank: int, config: DedupConfig = CONFIG) -> list[KeyFile]:
    files = []
    for rank in sorted(pc.unique(keys.column("rank")).to_pylist()):
        part = keys.filter(pc.equal(keys.column("rank"), rank))
        for index, rows in enumerate(np.array_split(np.arange(part.num_rows), files_per_rank)):
            path = directory / f"rank{rank}-{index}.arrow"
            with DedupKeysWriter(path, config) as writer:
                for chunk in np.array_split(rows, 3):  # several record batches per file
                    writer.write(part.take(pa.array(chunk, pa.int64())))
            files.append(KeyFile(str(path), rank))
    return files


@pytest.fixture(scope="module")
def keys() -> pa.Table:
    return synthetic_keys(4000, seed=7)


@pytest.mark.parametrize(("bucket_rows", "exact_pass_docs"), [(300, 50), (300, 10_000_000), (10_000_000, 50)])
def test_on_disk_join_equals_the_in_memory_rules(keys: pa.Table, tmp_path, bucket_rows: int, exact_pass_docs: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(external, "EXACT_PASS_DOCS", exact_pass_docs)  # exact groups decided a few buckets a pass
    expected = reference_duplicates(keys, CONFIG)
    assert expected.num_rows > 500 and set(expected.column("kind").to_pylist()) == {"exact", "near"}
    files = write_key_files(keys, tmp_path, files_per_rank=3)
    result = find_duplicates_in_files(files, CONFIG, tmp_path, bucket_rows=bucket_rows).duplicates
    assert result.equals(expected)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # bucket files are cleaned up


@pytest.mark.parametrize("config", [DedupConfig(exact=False), DedupConfig(near=False), DedupConfig(threshold=0.6)])
def test_switches_and_thresholds_match_the_in_memory_rules(keys: pa.Table, tmp_path, config: DedupConfig) -> None:
    files = write_key_files(keys, tmp_path, files_per_rank=2, config=config)
    assert find_duplicates_in_files(files, config, tmp_path, bucket_rows=700).duplicates.equals(reference_duplicates(keys, config))


def test_table_entry_point_and_file_order_do_not_change_the_result(keys: pa.Table, tmp_path) -> None:
    expected = reference_duplicates(keys, CONFIG)
    assert find_duplicates(keys.take(pa.array(np.random.default_rng(1).permutation(keys.num_rows))), CONFIG).equals(
        expected)
    files = write_key_files(keys, tmp_path, files_per_rank=2)
    assert find_duplicates_in_files(files[::-1], CONFIG, tmp_path, bucket_rows=500).duplicates.equals(expected)


def test_previous_document_with_a_current_id_is_left_out_and_repeated_ids_fail(tmp_path) -> None:
    keys = synthetic_keys(200, seed=3).select(["id", "content_hash", "minhash", "rank"])
    current = keys.filter(pc.not_equal(keys.column("rank"), PREVIOUS_RANK))
    # the previous version held a document with the id of a current one, and the same text as another
    previous = pa.table({"id": [current.column("id")[0].as_py()],
                         "content_hash": [current.column("content_hash")[1].as_py()],
                         "minhash": current.column("minhash").take([1]),
                         "rank": pa.array([PREVIOUS_RANK], pa.int32())})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = write_key_files(current, tmp_path / "a", 1) + write_key_files(previous, tmp_path / "b", 1)
    carried = frozenset([current.column("id")[0].as_py()])
    assert find_duplicates_in_files(files, CONFIG, tmp_path).duplicates.equals(
        reference_duplicates(current, CONFIG, carried))
    twice = files[:1] + files[:1]
    with pytest.raises(RepeatedIdError, match=r"held more than once: .*no partition tells them apart"):
        find_duplicates_in_files(twice, CONFIG, tmp_path)


def test_key_files_of_another_config_are_refused(keys: pa.Table, tmp_path) -> None:
    files = write_key_files(keys.slice(0, 50), tmp_path, 1)
    with pytest.raises(ValueError, match="do not match the dedup config"):
        find_duplicates_in_files(files, DedupConfig(threshold=0.5), tmp_path)


def texts(ids: list[str], bodies: list[str]) -> pa.RecordBatch:
    """Documents as a previous version's shard holds them: text and content hash, no signature."""
    return pa.RecordBatch.from_pydict({"id": ids, "text": bodies, "lang": ["zh"] * len(ids),
                                       "content_hash": content_hashes(bodies)})


def test_previous_version_texts_become_a_key_file_that_wins_ties(tmp_path) -> None:
    text = ("今年夏天我们全家去了一趟云南，先在昆明住了两天，看了滇池和西山，然后坐火车到大理，在古城里慢慢地走，"
            "吃了很多当地的小吃，最后到丽江看了玉龙雪山，孩子们玩得非常开心")
    write_text_keys([texts(["old", "new-1"], [text, "另一篇完全不同的旧文章，讲的是别的事情。"])],
                    tmp_path / "previous.arrow", CONFIG)
    write_text_keys([texts(["new-1", "new-2"], [text + "！", text.replace("滇池", "洱海")])],
                    tmp_path / "current.arrow", CONFIG)
    files = [KeyFile(str(tmp_path / "current.arrow"), 0), KeyFile(str(tmp_path / "previous.arrow"), PREVIOUS_RANK)]
    result = {r["id"]: (r["duplicate_of"], r["kind"]) for r in find_duplicates_in_files(files, CONFIG).duplicates.to_pylist()}
    assert result == {"new-1": ("old", "exact"), "new-2": ("old", "near")}  # the old "new-1" gave way to the new


def test_a_document_keeping_a_previous_id_wins_ties_and_previous_ids_alone_take_nothing(tmp_path) -> None:
    text = "市政府今天上午召开新闻发布会，介绍今年城市轨道交通建设的最新进展和下一步的工作计划。"
    other = "本市第一家社区图书馆正式开放，居民可以凭身份证免费借阅图书，每天开放十二个小时。"
    write_id_keys([pa.record_batch({"id": ["b-original", "gone"]})], tmp_path / "previous.arrow", CONFIG)
    write_text_keys([texts(["a-copy", "b-original", "c-new"], [text, text, other])], tmp_path / "current.arrow", CONFIG)
    current = KeyFile(str(tmp_path / "current.arrow"), 0)
    plain = find_duplicates_in_files([current], CONFIG).duplicates.to_pylist()
    assert [(r["id"], r["duplicate_of"]) for r in plain] == [("b-original", "a-copy")], "by id alone the copy wins"
    files = [current, KeyFile(str(tmp_path / "previous.arrow"), PREVIOUS_RANK)]
    kept_ids = find_duplicates_in_files(files, CONFIG).duplicates.to_pylist()
    assert [(r["id"], r["duplicate_of"], r["kind"]) for r in kept_ids] == [("a-copy", "b-original", "exact")]
