"""MinHash signatures: the stage's column, determinism, and the estimator on edited texts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.config import DedupConfig
from pipeline.dedup import MinHasher, MinHashStage
from pipeline.dedup.minhash import connected_components, lsh_bands, near_pairs

ZH_TEXT = (
    "今年夏天我们全家去了一趟云南，先在昆明住了两天，看了滇池和西山，然后坐火车到大理，"
    "在古城里慢慢地走，吃了很多当地的小吃，最后到丽江看了玉龙雪山，孩子们玩得非常开心，都说明年还想再来"
)
EN_TEXT = (
    "The committee met on Tuesday to review the budget for the coming year. After a long discussion about "
    "the costs of the new library, the members agreed to postpone the decision until the next meeting, when "
    "the final estimates from the architects will be available. The chair thanked everyone for their patience "
    "and asked the treasurer to prepare a short summary of the options for the public."
)


def jaccard(config: DedupConfig, first: str, second: str, lang: str) -> float:
    signatures, has_signature = MinHasher.from_config(config).signatures([first, second], [lang, lang])
    assert has_signature.all()
    return float((signatures[0] == signatures[1]).mean())


def test_stage_adds_a_fixed_size_uint32_list_null_for_short_texts() -> None:
    config = DedupConfig()
    batch = pa.RecordBatch.from_pydict({"text": [ZH_TEXT, "太短了", EN_TEXT], "lang": ["zh", "zh", "en"]})
    stage = MinHashStage(config)
    column = stage(batch).batch.column("minhash")
    assert column.type == pa.list_(pa.uint32(), config.num_perm)
    assert column.is_null().to_pylist() == [False, True, False]
    assert stage.reads == ("text", "lang") and stage.adds == ("minhash",)


def test_signatures_are_deterministic_and_depend_on_the_seed() -> None:
    config = DedupConfig()
    first, _ = MinHasher.from_config(config).signatures([ZH_TEXT, EN_TEXT], ["zh", "en"])
    again, _ = MinHasher.from_config(config).signatures([EN_TEXT, ZH_TEXT], ["en", "zh"])
    other_seed, _ = MinHasher.from_config(DedupConfig(seed=2)).signatures([ZH_TEXT], ["zh"])
    np.testing.assert_array_equal(first, again[::-1])
    assert (first[0] != other_seed[0]).mean() > 0.9


def test_estimate_tracks_small_edits_and_separates_different_texts() -> None:
    config = DedupConfig()
    two_changed = ZH_TEXT.replace("滇池", "洱海")
    assert jaccard(config, ZH_TEXT, two_changed, "zh") >= 0.8
    assert jaccard(config, ZH_TEXT, ZH_TEXT + "！", "zh") == 1.0
    assert jaccard(config, EN_TEXT, EN_TEXT.replace("Tuesday", "Monday"), "en") >= 0.8
    assert jaccard(config, ZH_TEXT, "今年冬天我们去了一趟海南，在三亚住了一个星期，每天都在海边游泳和晒太阳，非常舒服", "zh") < 0.3


def test_english_is_shingled_by_words_chinese_by_characters() -> None:
    config = DedupConfig()
    assert jaccard(config, EN_TEXT, EN_TEXT.upper().replace(".", " ."), "en") == 1.0
    reordered = " ".join(reversed(EN_TEXT.split()))
    assert jaccard(config, EN_TEXT, reordered, "en") < 0.2


def test_lsh_bands_fit_the_permutations() -> None:
    for threshold in (0.7, 0.8, 0.9):
        bands, rows = lsh_bands(threshold, 128, 0.8)
        assert bands * rows <= 128
        near = threshold + 0.05
        assert 1 - (1 - near**rows) ** bands > 0.9  # a pair just above the threshold is nearly always a candidate
    assert lsh_bands(0.9, 128)[1] > lsh_bands(0.7, 128)[1]


def test_near_pairs_finds_only_similar_rows() -> None:
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, size=(200, 128), dtype=np.uint32)
    signatures[150] = signatures[3]
    signatures[151] = signatures[3]
    signatures[151, :20] += 1  # 108/128 = 0.84 equal
    signatures[152] = signatures[7]
    signatures[152, :40] += 1  # 88/128 = 0.69 equal
    left, right = near_pairs(signatures, 0.8)
    assert sorted(zip(left.tolist(), right.tolist())) == [(3, 150), (3, 151), (150, 151)]


def test_big_buckets_stay_linked_without_all_pairs() -> None:
    signatures = np.tile(np.arange(128, dtype=np.uint32), (500, 1))  # 500 identical rows: one bucket
    left, right = near_pairs(signatures, 0.8, window=4)
    assert len(left) < 500 * 10
    assert (connected_components(500, left, right) == 0).all()


def test_connected_components_label_chains_with_their_smallest_member() -> None:
    labels = connected_components(7, np.array([5, 4, 3, 1]), np.array([6, 5, 4, 2]))
    assert labels.tolist() == [0, 1, 1, 3, 3, 3, 3]
