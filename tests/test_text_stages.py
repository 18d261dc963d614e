"""Text stages 1-6 on hand-written cases, including the nasty ones (PII: tests/test_pii.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import QualityConfig, QualityRules, parse_config
from pipeline.schema import DOCUMENT_SCHEMA, documents_batch
from pipeline.stages import check_chain
from pipeline.text import build_text_stages
from pipeline.text.langid import IdentifyLanguage
from pipeline.text.normalize import Normalize
from pipeline.text.quality import QualityFilter, QualitySignals
from pipeline.text.script import ConvertScript
from pipeline.text.segment import Segment, chunk_bounds, shutdown_segment_pools

CONFIG = parse_config(
    {"sources": [{"name": "s", "kind": "news", "uri": "x.jsonl", "format": "jsonl", "fields": {"text": "t"}}]}
)


def batch_of(*texts: str, lang: str | None = None, kind: str = "news") -> pa.RecordBatch:
    return documents_batch(
        [{"id": str(i), "source": "s", "kind": kind, "lang": lang, "text": t} for i, t in enumerate(texts)]
    )


def texts_after(stage, batch: pa.RecordBatch) -> list[str]:
    return stage(batch).batch.column("text").to_pylist()


# normalize

def test_normalize_folds_full_width_ascii_but_keeps_chinese_punctuation() -> None:
    out = texts_after(Normalize(CONFIG.normalize), batch_of("ＡＢＣ１２３，你好！「引号」（括号）……ｅｍａｉｌ＠ｘ．ｃｏｍ"))
    assert out == ["ABC123，你好！「引号」（括号）……email@x.com"]


def test_normalize_removes_invisible_characters_and_collapses_whitespace() -> None:
    text = "\ufeff零\u200b宽\u200d字符\x07  and\t\u3000spaces \r\n\r\n\n\n second  paragraph \n"
    assert texts_after(Normalize(CONFIG.normalize), batch_of(text)) == ["零宽字符 and spaces\n\nsecond paragraph"]


def test_normalize_cleans_html_remnants_and_entities() -> None:
    text = "<p class='x'>A&amp;B&nbsp;&lt;3 &#20320;&#x597D;</p><br/>next<!-- c -->line"
    assert texts_after(Normalize(CONFIG.normalize), batch_of(text)) == ["A&B <3 你好\n\nnextline"]  # </p> and <br/>: a paragraph break


def test_normalize_keeps_emoji_and_nulls() -> None:
    batch = documents_batch([{"id": "1", "source": "s", "kind": "news", "text": "好评👍😀", "title": None}])
    result = Normalize(CONFIG.normalize)(batch).batch
    assert result.column("text").to_pylist() == ["好评👍😀"]
    assert result.column("title").to_pylist() == [None]


# script

def test_script_converts_traditional_in_chinese_documents_only() -> None:
    stage = ConvertScript(CONFIG.script, CONFIG.langid)
    mixed = "後來這裡發生了变化，於是我們用Python寫了程式"
    out = texts_after(stage, batch_of(mixed, "今日は東京の學校に行きました", "English text 後來", lang=None))
    assert out[0] == "后来这里发生了变化，于是我们用Python写了程式"
    assert out[1] == "今日は東京の學校に行きました"  # Japanese keeps its kanji
    assert out[2] == "English text 後來"  # not mostly Han
    assert texts_after(stage, batch_of("後來", lang="en")) == ["後來"]  # declared en: untouched
    assert texts_after(stage, batch_of("後來", lang="zh")) == ["后来"]


# language id

def test_langid_script_rule_model_and_drops() -> None:
    stage = IdentifyLanguage(CONFIG.langid)
    batch = batch_of(
        "我今天用Python写了一个script来处理data",
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "今日は東京に行きました。とても楽しかったです。",
        "！！！？？？……",
        "Der schnelle braune Fuchs springt über den faulen Hund und läuft weiter.",
    )
    result = stage(batch)
    assert result.batch.column("lang").to_pylist()[:3] == ["zh", "en", "ja"]
    assert result.drop_reasons.to_pylist() == [None, None, "lang:ja", "lang:other", "lang:de"]
    assert result.batch.schema.field("lang_score").type == pa.float32()


def test_langid_keeps_declared_language_but_scores_it() -> None:
    result = IdentifyLanguage(CONFIG.langid)(batch_of("Great phone!", lang="en"))
    assert result.batch.column("lang").to_pylist() == ["en"]
    assert result.drop_reasons.to_pylist() == [None]
    assert 0 < result.batch.column("lang_score")[0].as_py() <= 1


# segmentation

def test_segment_zh_en_and_placeholders() -> None:
    batch = documents_batch([
        {"id": "1", "source": "s", "kind": "news", "lang": "zh", "text": "我爱北京天安门 联系<EMAIL>"},
        {"id": "2", "source": "s", "kind": "news", "lang": "en", "text": "Don't panic, it's <PHONE>!"},
    ])
    result = Segment(CONFIG.segment, workers=1)(batch).batch
    assert result.column("words").to_pylist() == [
        ["我", "爱", "北京", "天安门", "联系", "<EMAIL>"],
        ["Don't", "panic", ",", "it's", "<PHONE>", "!"],
    ]
    assert result.column("n_words").to_pylist() == [6, 6]
    assert result.schema.field("n_words").type == pa.int32()


def test_segment_identical_with_one_and_two_workers() -> None:
    texts = [f"第{i}条：今天天气很好，我们去公园散步。Machine learning {i} 很有趣！" * (1 + i % 5) for i in range(60)]
    batch = batch_of(*texts, lang="zh")
    try:
        one = Segment(CONFIG.segment.model_copy(update={"chunk_docs": 7}), workers=1)(batch).batch
        two = Segment(CONFIG.segment.model_copy(update={"chunk_docs": 7}), workers=2)(batch).batch
    finally:
        shutdown_segment_pools()
    assert one.column("words").equals(two.column("words"))


def test_chunk_bounds_cover_all_rows_in_order() -> None:
    import numpy as np

    bounds = chunk_bounds(np.array([100, 1, 1, 1, 100, 1, 0, 0]), 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == 8
    assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))


# chain and quality

def test_chain_columns_check_and_types() -> None:
    stages = build_text_stages(CONFIG, workers=1)
    columns = check_chain(stages)
    for name in ("lang", "lang_score", "pii", "words", "n_words", "n_chars", "cjk_ratio", "max_char_run"):
        assert name in columns
    assert check_chain(stages, DOCUMENT_SCHEMA.names)


def _signals(*texts: str, lang: str = "zh", kind: str = "comments") -> pa.RecordBatch:
    batch = Segment(CONFIG.segment, workers=1)(batch_of(*texts, lang=lang, kind=kind)).batch
    return QualitySignals(CONFIG.segment)(batch).batch


def test_quality_signals_values() -> None:
    batch = _signals("好好好好好好好！！", "a\nb\na\na", lang="zh")
    row = batch.to_pylist()
    assert row[0]["max_char_run"] == 7 and row[0]["n_chars"] == 9
    assert row[0]["punct_ratio"] == pytest.approx(2 / 9)
    assert row[0]["cjk_ratio"] == pytest.approx(7 / 9)
    assert row[1]["dup_line_frac"] == pytest.approx(0.5)
    repeated = _signals("one two three four five " * 4, lang="en").to_pylist()[0]
    assert repeated["dup_ngram_frac"] == pytest.approx(0.75)  # the first copy is not a duplicate
    assert batch.schema.field("cjk_ratio").type == pa.float32()


def test_quality_filter_reasons_for_comments() -> None:
    batch = _signals("好", "加微信abc123领红包，好评返现", "哈哈哈哈哈哈哈哈哈哈哈哈哈", "质量很好，物流也快，推荐购买。")
    reasons = QualityFilter(CONFIG.quality)(batch).drop_reasons.to_pylist()
    assert reasons == ["quality:min_chars", "quality:spam", "quality:repeat_char_run", None]


def test_quality_filter_all_punctuation_and_english_rules() -> None:
    zh = _signals("！！！？？？。。。，，，", lang="zh", kind="news")
    assert QualityFilter(CONFIG.quality)(zh).drop_reasons.to_pylist() == ["quality:min_cjk_ratio"]
    en = _signals("Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do eiusmod tempor.", lang="en", kind="news")
    assert QualityFilter(CONFIG.quality)(en).drop_reasons.to_pylist() == ["quality:forbidden_phrase"]


def test_most_specific_rule_set_wins_and_bad_patterns_fail_early() -> None:
    config = QualityConfig(rule_sets={"zh": QualityRules(min_chars=100), "news.zh": QualityRules(min_chars=2)})
    batch = _signals("短新闻标题", lang="zh", kind="news")
    assert QualityFilter(config)(batch).drop_reasons.to_pylist() == [None]
    with pytest.raises(ValueError, match="spam_patterns"):
        QualityFilter(QualityConfig(rule_sets={"zh": QualityRules(spam_patterns=["(unclosed"])}))
