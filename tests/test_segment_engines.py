"""Segmentation engines: the fast precise path gives jieba's words exactly; rjieba is opt-in and checked."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import zipfile
from pathlib import Path

import jieba
import jieba.finalseg
import pytest

from pipeline.config import ConfigError, parse_config
from pipeline.schema import documents_batch
from pipeline.text.precise_cut import PreciseCutter, hmm_cut
from pipeline.text.segment import Segment, SegmenterSpec, jieba_tokenizer

SOURCES = [{"name": "s", "kind": "news", "uri": "x.jsonl", "format": "jsonl", "fields": {"text": "t"}}]

# Han runs with words outside the dictionary (the HMM joins them), names, mixed scripts, digits with
# decimals and percent, ASCII symbols jieba keeps inside blocks (+#&._%-), whitespace of every kind,
# traditional characters, emoji, and empty or punctuation-only texts.
TRICKY_TEXTS = [
    "我爱北京天安门",
    "王小明和李晓华昨天在杭州西湖边吃了一碗片儿川，味道好极了！！！",
    "这款手机的性价比超高，iPhone15和小米14Pro比起来怎么样？价格3999.00元，便宜了12.5%",
    "C++ 和 C# 都是 编程语言; e-mail: a_b.c@x.com & more",
    "第一行\n第二行\r\n第三行\t制表\u3000全角空格  两个空格",
    "臺灣的繁體字與简体字混在一起說話",
    "好评👍😀，物流很快📦",
    "",
    "。。。！！！",
    "啊啊啊啊啊啊啊啊啊啊啊啊啊啊啊啊啊啊啊",
    "芈月传里的嫪毐和吕不韦，蕲春县的罍街",
    "abc DEF 123 4.5.6 ---...___",
    "长江大桥南京市长江大桥研究生命起源",
]


@pytest.fixture(scope="module")
def reference() -> jieba.Tokenizer:
    return jieba_tokenizer(SegmenterSpec(hmm=True, user_dicts=(), engine="jieba"))


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_precise_cut_gives_jiebas_words(reference: jieba.Tokenizer, text: str) -> None:
    assert PreciseCutter(reference).cut(text) == reference.lcut(text, HMM=True)


def test_precise_cut_follows_a_user_dictionary(tmp_path: Path) -> None:
    user_dict = tmp_path / "words.txt"
    user_dict.write_text("\ufeff片儿川 20 n\n西湖边\n云计算平台 5\n", encoding="utf-8")
    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    tokenizer.load_userdict(str(user_dict))
    text = "在西湖边吃片儿川，聊云计算平台"
    words = PreciseCutter(tokenizer).cut(text)
    assert words == tokenizer.lcut(text, HMM=True)
    assert {"片儿川", "西湖边", "云计算平台"} <= set(words)


@pytest.mark.shared_data
def test_precise_cut_gives_jiebas_words_on_real_reviews_and_headlines(
    shared_data: Path, reference: jieba.Tokenizer
) -> None:
    with zipfile.ZipFile(shared_data / "comments/online_shopping_10_cats.zip") as archive:
        raw = archive.read(archive.namelist()[0]).decode("utf-8-sig")
    texts = [row["review"] for row in csv.DictReader(io.StringIO(raw))][::40]
    with open(shared_data / "news/tnews_unlabeled.json", encoding="utf-8") as lines:
        texts += [json.loads(line)["sentence"] for line in lines][::20]
    cutter = PreciseCutter(reference)
    differing = [t for t in texts if cutter.cut(t) != reference.lcut(t, HMM=True)]
    assert len(texts) > 2500
    assert differing == []


# engine switch

def config_with(segment: dict):
    return parse_config({"sources": SOURCES, "segment": segment})


def test_engine_defaults_to_jieba_and_rejects_unknown_names() -> None:
    assert config_with({}).segment.engine == "jieba"
    with pytest.raises(ConfigError, match=r"segment\.engine"):
        config_with({"engine": "pkuseg"})


def test_engine_is_part_of_the_partition_cache_key_and_config_hash() -> None:
    jieba_config, rjieba_config = config_with({}), config_with({"engine": "rjieba"})
    assert jieba_config.section_hash("segment") != rjieba_config.section_hash("segment")
    assert jieba_config.config_hash() != rjieba_config.config_hash()


def test_rjieba_engine_segments_and_keeps_placeholders_whole() -> None:
    pytest.importorskip("rjieba")
    batch = documents_batch([
        {"id": "1", "source": "s", "kind": "news", "lang": "zh", "text": "我爱北京天安门 联系<EMAIL>或<PHONE>"},
        {"id": "2", "source": "s", "kind": "news", "lang": "zh", "text": "这款手机的性价比超高，物流很快！"},
        {"id": "3", "source": "s", "kind": "news", "lang": "en", "text": "Don't panic!"},
    ])
    result = Segment(config_with({"engine": "rjieba"}).segment)(batch).batch
    words = result.column("words").to_pylist()
    assert words[0] == ["我", "爱", "北京", "天安门", "联系", "<EMAIL>", "或", "<PHONE>"]
    assert "".join(words[1]) == "这款手机的性价比超高，物流很快！" and len(words[1]) >= 6
    assert words[2] == ["Don't", "panic", "!"]
    assert result.column("n_words").to_pylist() == [8, len(words[1]), 3]


def test_rjieba_engine_reads_user_dictionaries(tmp_path: Path) -> None:
    pytest.importorskip("rjieba")
    user_dict = tmp_path / "words.txt"
    user_dict.write_text("片儿川 20 n\n云计算平台\n", encoding="utf-8")
    config = config_with({"engine": "rjieba", "user_dicts": [str(user_dict)]})
    batch = documents_batch([{"id": "1", "source": "s", "kind": "news", "lang": "zh", "text": "吃片儿川，聊云计算平台"}])
    words = Segment(config.segment)(batch).batch.column("words").to_pylist()[0]
    assert {"片儿川", "云计算平台"} <= set(words)


def test_rjieba_engine_without_the_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rjieba", None)  # how Python marks a module that cannot be imported
    with pytest.raises(ConfigError, match=r"segment\.engine.*corpusflow\[fast\]"):
        Segment(config_with({"engine": "rjieba"}).segment)


@pytest.mark.parametrize("run", ["", "嫪毐吕不韦", "片儿川a1好", "王小明李晓华张伟", "啊", "Abc123中文%3.5混合"])
def test_hmm_cut_gives_finalsegs_words(run: str) -> None:
    assert hmm_cut(run) == list(jieba.finalseg.cut(run))


def test_a_missing_user_dictionary_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A user error, printed as a short block by the CLI and never retried, not an OSError."""
    missing = tmp_path / "words.txt"
    with pytest.raises(ConfigError, match="segment.user_dicts") as error:
        SegmenterSpec.from_config(config_with({"user_dicts": [str(missing)]}).segment)
    assert str(missing) in str(error.value)
