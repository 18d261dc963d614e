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
from pipeline.text.segment import Segment

_CONFIG_DATA = {"sources": [{"name": "s", "kind": "news", "uri": "x.jsonl", "format": "jsonl", "fields": {"text": "t"}}]}
CONFIG = parse_config(_CONFIG_DATA)


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("！！！！！快递太慢了", "！！！快递太慢了"),  # start
        ("快递太慢了！！！！！！！！！！！！", "快递太慢了！！！"),  # end
        ("东西不错。。。。就是贵", "东西不错。。。就是贵"),  # middle
        ("等了好久……", "等了好久……"),  # the usual two-character ellipsis stays
        ("等了好久…………结果是坏的", "等了好久………结果是坏的"),
        ("splendid.............", "splendid..."),
        ("It broke after a week!!!! Never again", "It broke after a week!!! Never again"),
        ("真的吗？？？？？", "真的吗？？？"),
        ("Really????? yes", "Really??? yes"),
        ("谢谢~~~~~~ 下次再来～～～～～", "谢谢~~~ 下次再来～～～"),
        ("哈哈哈哈哈哈，笑死我了", "哈哈哈，笑死我了"),
        ("呵呵呵呵呵，这也叫五星？", "呵呵呵，这也叫五星？"),
        ("好评👍👍👍👍👍👍", "好评👍👍👍"),
        ("❤️❤️❤️❤️❤️超喜欢", "❤️❤️❤️超喜欢"),  # emoji with its variation selector
        ("赞👍🏻👍🏻👍🏻👍🏻", "赞👍🏻👍🏻👍🏻"),  # emoji with a skin-tone modifier
        ("。。。。差评！！！！", "。。。差评！！！"),
        ("差差差差差差差差", "差差差差差差差差"),  # letters are not emphasis: left to the repetition rule
        ("房间号8888，电话0000", "房间号8888，电话0000"),
        ("好！！！", "好！！！"),  # a run of three is already short
        ("普通的句子，没有强调。Normal text, nothing to cut.", "普通的句子，没有强调。Normal text, nothing to cut."),
    ],
)
def test_normalize_cuts_emphasis_runs_to_three(text: str, expected: str) -> None:
    assert texts_after(Normalize(CONFIG.normalize), batch_of(text)) == [expected]


def test_normalize_counts_collapsed_runs_in_text_and_title() -> None:
    batch = documents_batch([
        {"id": "1", "source": "s", "kind": "comments", "text": "太差了！！！！。。。。", "title": "差评！！！！！"},
        {"id": "2", "source": "s", "kind": "comments", "text": "正常的评论。", "title": None},
    ])
    result = Normalize(CONFIG.normalize)(batch)
    assert result.counts == {"normalize:emphasis_collapsed": 3}
    assert result.batch.column("title").to_pylist() == ["差评！！！", None]
    assert Normalize(CONFIG.normalize)(batch_of("正常的评论。")).counts is None


def test_emphasis_run_length_and_interjections_are_configurable() -> None:
    config = parse_config({**_CONFIG_DATA, "normalize": {"emphasis_max_run": 1, "emphasis_interjections": "哈"}})
    assert texts_after(Normalize(config.normalize), batch_of("哈哈好！！呵呵呵呵呵")) == ["哈好！呵呵呵呵呵"]
    off = parse_config({**_CONFIG_DATA, "normalize": {"emphasis_max_run": None}})
    assert texts_after(Normalize(off.normalize), batch_of("好！！！！！！")) == ["好！！！！！！"]
    assert off.section_hash("normalize") != CONFIG.section_hash("normalize")
    with pytest.raises(ValueError, match="emphasis_max_run"):
        parse_config({**_CONFIG_DATA, "normalize": {"emphasis_max_run": 0}})


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
    result = Segment(CONFIG.segment)(batch).batch
    assert result.column("words").to_pylist() == [
        ["我", "爱", "北京", "天安门", "联系", "<EMAIL>"],
        ["Don't", "panic", ",", "it's", "<PHONE>", "!"],
    ]
    assert result.column("n_words").to_pylist() == [6, 6]
    assert result.schema.field("n_words").type == pa.int32()


# chain and quality

def test_chain_columns_check_and_types() -> None:
    stages = build_text_stages(CONFIG)
    columns = check_chain(stages)
    for name in ("lang", "lang_score", "pii", "words", "n_words", "n_chars", "cjk_ratio", "max_char_run"):
        assert name in columns
    assert check_chain(stages, DOCUMENT_SCHEMA.names)


def _signals(*texts: str, lang: str = "zh", kind: str = "comments") -> pa.RecordBatch:
    batch = Segment(CONFIG.segment)(batch_of(*texts, lang=lang, kind=kind)).batch
    return QualitySignals(CONFIG.segment)(batch).batch


def test_quality_signals_values() -> None:
    batch = _signals("好好好好好好好！！", "a\nb\na\na", lang="zh")
    row = batch.to_pylist()
    assert row[0]["max_char_run"] == 7 and row[0]["n_chars"] == 9
    assert row[0]["chars_beside_repetition"] == 0  # seven 好 and nothing else but punctuation
    assert row[0]["punct_ratio"] == pytest.approx(2 / 9)
    assert row[0]["cjk_ratio"] == pytest.approx(7 / 9)
    assert row[1]["dup_line_frac"] == pytest.approx(0.5)
    repeated = _signals("one two three four five " * 4, lang="en").to_pylist()[0]
    assert repeated["dup_ngram_frac"] == pytest.approx(0.75)  # the first copy is not a duplicate
    assert batch.schema.field("cjk_ratio").type == pa.float32()


def test_quality_filter_reasons_for_comments() -> None:
    batch = _signals("好", "加微信abc123领红包，好评返现", "差差差差差差差差差差差差差", "质量很好，物流也快，推荐购买。")
    reasons = QualityFilter(CONFIG.quality)(batch).drop_reasons.to_pylist()
    assert reasons == ["quality:min_chars", "quality:spam", "quality:repetition", None]


def _comment_reasons(*texts: str, lang: str = "zh") -> list[str | None]:
    normalized = Normalize(CONFIG.normalize)(batch_of(*texts, lang=lang, kind="comments")).batch
    batch = QualitySignals(CONFIG.segment)(Segment(CONFIG.segment)(normalized).batch).batch
    return QualityFilter(CONFIG.quality)(batch).drop_reasons.to_pylist()


def test_repetition_drops_what_is_mostly_one_character_or_word_not_emphasis() -> None:
    reasons = _comment_reasons(
        "差差差差差差差差差差差差差差差差差差差差",  # one character
        "垃圾，差差差差差差差差差差差差差差差",  # mostly one character
        "好评好评好评好评好评好评好评好评",  # one word
        "很好很好很好很好很好很好，不错",  # mostly one word
        "送货太慢了！！！！！！！！！！！！！！！！等了整整一周，客服也不回消息",  # emphasis, normalised first
        "哈哈哈哈哈哈哈哈哈哈哈哈，这价格太值了，下次还来",
        "这个东西差差差差差差差差差，用了两天就坏了，客服态度也很差，退货还要自己出运费，不会再买了",
        "不错不错，物流快",  # doubling is how people write
        "好吃，很甜，好评好评好评好评好评好评好评好评好评！",  # repetition, but a review besides it
        "服务还可以，房间好，888888888888888888888888",
        "隔音太太太太差",
        "我的的的的一个朋友推荐的，房间干净，早餐丰富，服务周到，位置也方便，下次还住",
    )
    assert reasons == ["quality:repetition"] * 4 + [None] * 8


def test_english_emphasis_is_kept_and_word_spam_dropped() -> None:
    reasons = _comment_reasons(
        "The food was splendid.............",
        "Worst service ever!!!!!!!!!!!!! Never coming back",
        "good good good good good good good good",
        lang="en",
    )
    assert reasons == [None, None, "quality:repetition"]


def test_spam_drops_ads_but_not_complaints_that_mention_a_contact_channel() -> None:
    reasons = _comment_reasons(
        "加微信abc12345领红包，好评返现",
        "需要的加我微信 shop_8888 低价出售",
        "代购正品，联系QQ：12345678",
        "加V信 xy99887 拿货",
        "商家让我加微信退款，结果加了以后根本不回消息，钱到现在也没退，差评",
        "客服说加QQ 12345678 处理，等了三天没有回复，质量也很差，衣服洗一次就缩水了，再也不买了",
        "用了优惠券很划算，东西也不错，物流很快",
    )
    assert reasons == ["quality:spam"] * 4 + [None] * 3
    english = _comment_reasons(
        "Click here to buy now: www.cheap-deals.example",
        "I had to visit their site to get a refund, which took weeks. Terrible.",
        lang="en",
    )
    assert english == ["quality:spam", None]


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


def test_spam_share_and_repetition_floor_are_configurable() -> None:
    batch = _signals("商家让我加微信退款，结果根本不回消息", "发票呢，差差差差差差差")
    lenient = QualityConfig(rule_sets={"comments": QualityRules(spam_patterns=["加微信"], min_chars_beside_repetition=3)})
    assert QualityFilter(lenient)(batch).drop_reasons.to_pylist() == [None, None]
    strict = QualityConfig(rule_sets={"comments": QualityRules(
        spam_patterns=["加微信"], spam_min_share=0.1, min_chars_beside_repetition=4)})
    assert QualityFilter(strict)(batch).drop_reasons.to_pylist() == ["quality:spam", "quality:repetition"]
    with pytest.raises(ValueError, match="spam_min_share"):
        QualityRules(spam_min_share=0)


def test_news_rules_keep_short_and_mixed_script_headlines_that_page_rules_drop() -> None:
    headlines = ["怎么评价郎平？", "时光|父亲的传家宝", "如何评价Fate stay night剧场版HF（Heaven's Feel）？"]
    assert QualityFilter(CONFIG.quality)(_signals(*headlines, kind="news")).drop_reasons.to_pylist() == [None] * 3
    wiki = QualityFilter(CONFIG.quality)(_signals(*headlines, kind="wiki")).drop_reasons.to_pylist()
    assert wiki == ["quality:min_chars", "quality:max_symbol_ratio", "quality:min_cjk_ratio"]
    lede = "Nokia joins Secure Digital industry group CNET News.com"
    assert QualityFilter(CONFIG.quality)(_signals(lede, lang="en", kind="news")).drop_reasons.to_pylist() == [None]


def test_the_language_model_is_inflated_once_into_the_cache_and_answers_alike(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lzma

    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from pipeline.text import langid

    monkeypatch.setattr(langid, "CACHE_DIR", tmp_path / "cache")
    langid.identifier.cache_clear()
    shipped = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    texts = ["The parcel came early and works well", "Bonjour tout le monde", "これは日本語です", "质量很好", "1234 !!"]
    try:
        first = langid.identifier()
        assert [p.name for p in (tmp_path / "cache").iterdir()] == [langid._inflated_model().name]
        langid.identifier.cache_clear()
        monkeypatch.setattr(lzma, "open", lambda *a, **k: pytest.fail("inflated again"))
        cached = langid.identifier()
        assert cached is not first
        assert [cached.rank(t) for t in texts] == [first.rank(t) for t in texts] == [shipped.rank(t) for t in texts]
    finally:
        langid.identifier.cache_clear()
