"""Wiki text as a reader reads it: inline templates keep their words, conversion markup shows one variant,
boilerplate sections go, and redirect and disambiguation pages are filtered with their own reason.

Each case is the exact sentence a page of zhwiki (or enwiki) shows, written from the templates' documented
forms: positional and named arguments, redirect names, other cases, nesting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.sources import read_rows, reasons, source_for
from pipeline.config import ConfigError, WikiConfig, parse_config
from pipeline.sources import expand_uri, plan_partitions, read_partition
from pipeline.sources.wikitext import WikitextCleaner, convert_variants
from test_sources_wiki import export, page

FIXTURE = Path(__file__).parent.parent / "bench" / "fixtures" / "zhwiki-inline-templates.xml"
ZH = WikitextCleaner(lang="zh")
EN = WikitextCleaner(lang="en")


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("以天文学家{{link-en|埃德温·哈勃|Edwin Hubble}}命名。", "以天文学家埃德温·哈勃命名。"),
        ("主镜由{{Link-en|珀金埃尔默|PerkinElmer|珀金-埃尔默公司}}磨制。", "主镜由珀金-埃尔默公司磨制。"),
        ("市内有{{Link-ja|清水寺|清水寺 (京都市)}}。", "市内有清水寺。"),
        ("作曲家{{Link-DE|约翰·施特劳斯|Johann Strauss II|小约翰·施特劳斯}}生于此地。", "作曲家小约翰·施特劳斯生于此地。"),
        ("分为{{LINK-EN|层流边界层|Laminar flow}}两类。", "分为层流边界层两类。"),
        ("他的著作{{Template:Link-en|化学键的本质|The Nature of the Chemical Bond}}影响深远。", "他的著作化学键的本质影响深远。"),
        ("与{{link-zh-yue|粤语名|粤語名}}相同。", "与粤语名相同。"),
    ],
)
def test_link_xx_shows_the_chinese_title_or_the_text_given(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("由{{tsl|en|Lockheed Martin Space|洛克希德·马丁空间公司}}制造。", "由洛克希德·马丁空间公司制造。"),
        ("求解{{tsl|en|Navier–Stokes equations|纳维-斯托克斯方程|纳维-斯托克斯方程组}}。", "求解纳维-斯托克斯方程组。"),
        ("化学家{{Translink|en|Linus Pauling|莱纳斯·鲍林}}两次获奖。", "化学家莱纳斯·鲍林两次获奖。"),
        ("由{{Tsl|de|Ludwig Prandtl}}提出。", "由Ludwig Prandtl提出。"),
    ],
)
def test_tsl_shows_the_chinese_title_or_the_text_given(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


def test_le_is_link_en_by_a_short_name() -> None:
    assert ZH.text("厚度与{{le|雷诺数|Reynolds number}}有关，{{Le|马赫数|Mach number|马赫}}也是。") == "厚度与雷诺数有关，马赫也是。"


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("拍摄了{{ill|哈勃深空|en|Hubble Deep Field}}。", "拍摄了哈勃深空。"),
        ("有{{ill|金阁寺|ja|鹿苑寺|lt=鹿苑寺金阁}}等古迹。", "有鹿苑寺金阁等古迹。"),
        ("称为{{Interlanguage link|转捩|en|Laminar–turbulent transition}}。", "称为转捩。"),
        ("{{ILL|挪威的森林 (小说)|ja|ノルウェイの森|lt=挪威的森林}}是其代表作。", "挪威的森林是其代表作。"),
    ],
)
def test_ill_shows_its_label_or_the_local_title(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("和{{Internal link helper|霍夫堡宫|Hofburg|lang-code=de|lang=德语|d=霍夫堡}}。", "和霍夫堡。"),
        ("作家{{Internal_link_helper|村上春树|村上春樹|lang-code=ja|lang=日语}}的作品。", "作家村上春树的作品。"),
        ("作家{{ilh|川端康成|川端康成|lang-code=ja}}获奖。", "作家川端康成获奖。"),
    ],
)
def test_internal_link_helper_and_its_redirects(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


@pytest.mark.parametrize(
    ("cleaner", "wikitext", "expected"),
    [
        (ZH, "'''哈勃空间望远镜'''（{{lang-en|'''H'''ubble '''S'''pace '''T'''elescope}}，缩写：HST）是一台望远镜。",
         "哈勃空间望远镜（英语：Hubble Space Telescope，缩写：HST）是一台望远镜。"),
        (ZH, "'''维也纳'''（{{lang-de|Wien}}；{{Lang-en|Vienna}}）是首都。", "维也纳（德语：Wien；英语：Vienna）是首都。"),
        (ZH, "莫斯科地铁（{{lang-ru|Московский метрополитен|Moskovsky metropoliten}}）", "莫斯科地铁（俄语：Московский метрополитен）"),
        (ZH, "边界层（{{lang-en|{{link-en|boundary layer|Boundary layer (fluid dynamics)}}}}）是薄层。", "边界层（英语：boundary layer）是薄层。"),
        (ZH, "以{{lang-la|in vitro}}与{{lang-grc|ἄτομος}}解释。", "以拉丁语：in vitro与古希腊语：ἄτομος解释。"),
        (ZH, "称作{{lang-xq|未知}}。", "称作未知。"),
        (EN, "'''Vienna''' ({{lang-de|Wien}}) is the capital.", "Vienna (German: Wien) is the capital."),
        (EN, "The motto {{langx|la|ora et labora}} stayed.", "The motto Latin: ora et labora stayed."),
        (ZH, "每年举行{{lang|ja|祇園祭}}，{{Lang|en|Case does not matter}}。", "每年举行祇園祭，Case does not matter。"),
    ],
)
def test_lang_templates_keep_their_text_with_the_language_named_as_the_wiki_does(
    cleaner: WikitextCleaner, wikitext: str, expected: str
) -> None:
    assert cleaner.text(wikitext) == expected


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("'''Tokyo''' ({{nihongo|Tokyo|東京|Tōkyō}}) is a city.", "Tokyo (Tokyo (東京, Tōkyō)) is a city."),
        ("The {{nihongo|Meiji era|明治時代}} began.", "The Meiji era (明治時代) began."),
        ("The {{nihongo|Shinkansen}} runs.", "The Shinkansen runs."),
        ("Its name {{nihongo2|東京}} means eastern capital.", "Its name 東京 means eastern capital."),
    ],
)
def test_nihongo_keeps_the_english_and_the_japanese(wikitext: str, expected: str) -> None:
    assert EN.text(wikitext) == expected


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("主镜直径为{{convert|2.4|m|ft}}。", "主镜直径为2.4 m。"),
        ("运行在约{{convert|540|km|mi|abbr=on}}的高度上。", "运行在约540 km的高度上。"),
        ("深处{{convert|40|to|50|m|ft}}。", "深处40 to 50 m。"),
        ("The wall is {{convert|5|ft|6|in|m}} high.", "The wall is 5 ft 6 in high."),
        ("It fell to {{cvt|-12|C|F}} at night.", "It fell to -12 °C at night."),
        ("Its area is {{convert|1,234.5|km2|sqmi|0}}.", "Its area is 1,234.5 km2."),
        ("厚{{nowrap|{{convert|1|to|10|mm|in}}}}。", "厚1 to 10 mm。"),
    ],
)
def test_convert_keeps_the_quantity_as_written(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("京都市（{{transl|ja|Kyōto-shi}}）", "京都市（Kyōto-shi）"),
        ("Cairo ({{transl|ar|DIN|al-Qāhira}}) lies on the Nile.", "Cairo (al-Qāhira) lies on the Nile."),
    ],
)
def test_transl_keeps_the_transliteration(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


@pytest.mark.parametrize(
    ("cleaner", "wikitext", "expected"),
    [
        (EN, "'''Macau''' ({{zh|t=澳門|s=澳门|p=Àomén}}) is a city.",
         "Macau (simplified Chinese: 澳门; traditional Chinese: 澳門; pinyin: Àomén) is a city."),
        (EN, "'''Mencius''' ({{Zh|c=孟子|p=Mèngzǐ}}) was a philosopher.", "Mencius (Chinese: 孟子; pinyin: Mèngzǐ) was a philosopher."),
        (EN, "'''Tea''' ({{lang-zh|s=茶|t=茶|p=chá}})", "Tea (Chinese: 茶; pinyin: chá)"),
        (ZH, "'''孟子'''（{{zh|c=孟子|p=Mèngzǐ|l=孟夫子}}）", "孟子（中文：孟子；拼音：Mèngzǐ；字面意思：孟夫子）"),
    ],
)
def test_zh_templates_list_the_chinese_forms(cleaner: WikitextCleaner, wikitext: str, expected: str) -> None:
    assert cleaner.text(wikitext) == expected


def test_other_templates_render_as_nothing() -> None:
    wikitext = "{{Infobox city|name=维也纳}}维也纳是首都。{{citation needed|date=2020}}{{Navbox|title=奥地利}}"
    assert ZH.text(wikitext) == "维也纳是首都。"


def test_config_adds_and_replaces_inline_templates() -> None:
    wiki = WikiConfig(inline_templates={"bd": "{1}年—{2}年", "Link-en": "{1}[（{2}）]", "生卒": "{1}[–{2}]"})
    cleaner = WikitextCleaner(wiki)
    assert cleaner.text("他（{{bd|1901|1976}}）是一位{{link-en|化学家|Chemist}}。") == "他（1901年—1976年）是一位化学家（Chemist）。"
    assert cleaner.text("（{{生卒|1901}}）") == "（1901）"


@pytest.mark.parametrize(("pattern", "problem"), [("{1", "unbalanced"), ("[{1}", "without ']'"), ("{}", "empty")])
def test_a_pattern_that_cannot_be_read_fails_at_load(pattern: str, problem: str) -> None:
    data = {"sources": [{"name": "w", "kind": "wiki", "uri": "x.xml", "format": "mediawiki"}],
            "wiki": {"inline_templates": {"bd": pattern}}}
    with pytest.raises(ConfigError, match=rf"wiki\.inline_templates(?s:.*){problem}"):
        parse_config(data)


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("-{zh-hans:造父变星; zh-hant:造父變星;}-", "造父变星"),
        ("-{zh-tw:串流控制傳輸協定; zh-cn:流控制传输协议;}-", "流控制传输协议"),
        ("-{ zh-hant : 溫帶 ; zh-hans : 温带 ; }-", "温带"),
        ("-{zh-tw:計程車;zh-hk:的士;zh-sg:德士;}-", "德士"),
        ("-{zh-tw:計程車;zh-my:德士;}-", "德士"),
        ("-{zh-hk:的士;zh-mo:的士;zh-tw:計程車}-", "的士"),
        ("-{zh:自行车;zh-tw:腳踏車;}-", "自行车"),
        ("-{ZH-CN:软件;ZH-TW:軟體;}-", "软件"),
        ("-{A}-", "A"),
        ("-{R|zh-cn:原样}-", "zh-cn:原样"),
        ("a-{{模板}}-b", "a-{{模板}}-b"),
    ],
)
def test_conversion_markup_shows_the_simplified_variant(markup: str, expected: str) -> None:
    assert convert_variants(markup) == expected


@pytest.mark.parametrize("flag", ["H", "T", "D", "-"])
def test_rule_forms_that_show_nothing(flag: str) -> None:
    assert ZH.text(f"前-{{{flag}|zh-cn:软件; zh-tw:軟體;}}-后。") == "前后。"


def test_h_and_a_rules_and_note_ta_convert_the_whole_page() -> None:
    wikitext = (
        "{{NoteTA|G1=IT|1=zh-cn:哈勃; zh-tw:哈伯;}}-{H|zh-cn:歌剧院; zh-tw:歌劇院;}-哈伯在歌劇院看到了"
        "-{A|zh-cn:地铁站; zh-tw:捷運站;}-。\n== 捷運站 ==\n捷運站与歌劇院之间有哈伯的照片。"
    )
    assert ZH.text(wikitext) == "哈勃在歌剧院看到了地铁站。\n地铁站\n地铁站与歌剧院之间有哈勃的照片。"


def test_conversion_inside_links_and_their_labels() -> None:
    wikitext = "他们用[[-{zh-cn:网络; zh-tw:網路;}-协议|-{zh-cn:网络; zh-tw:網路;}-协议]]和[[-{zh-hans:软件;zh-hant:軟體}-]]。"
    assert ZH.text(wikitext) == "他们用网络协议和软件。"


def test_boilerplate_sections_go_with_their_subsections_and_empty_headings_go() -> None:
    wikitext = (
        "维也纳是首都。\n== 气候 ==\n冬季寒冷。\n=== 降水 ===\n{{Weather box|location=维也纳}}\n"
        "== 参考资料 ==\n{{reflist}}\n=== 书目 ===\n* 《维也纳史》\n== 交通 ==\n有地铁。\n"
        "== 注释与参考资料 ==\n{{reflist}}\n== 外部連結 ==\n* [https://wien.gv.at Wien official site]\n"
        "== 延伸閱讀 ==\n* 一本书\n== 相关条目 ==\n* [[萨尔茨堡]]"
    )
    assert ZH.text(wikitext) == "维也纳是首都。\n气候\n冬季寒冷。\n交通\n有地铁。"


def test_english_boilerplate_headings() -> None:
    wikitext = (
        "Vienna is the capital.\n== History ==\nOld city.\n== See also ==\n* [[Salzburg]]\n"
        "== Notes and references ==\n{{reflist}}\n== Further reading ==\n* A book, 1990.\n"
        "== External links ==\n* [https://wien.gv.at Official site]"
    )
    assert EN.text(wikitext) == "Vienna is the capital.\nHistory\nOld city."


def test_the_boilerplate_list_is_configurable() -> None:
    cleaner = WikitextCleaner(WikiConfig(boilerplate_headings=["外部链接"]))
    wikitext = "正文。\n== 参考资料 ==\n《一本书》\n== 外部链接 ==\n* [https://x.org 网站]"
    assert cleaner.text(wikitext) == "正文。\n参考资料\n《一本书》"


def test_fixture_dump_keeps_template_words_and_filters_redirects_and_disambiguation() -> None:
    documents, rejects = read_rows(source_for(FIXTURE, kind="wiki", format="mediawiki"))
    by_title = {d["title"]: d["text"] for d in documents}
    assert sorted(zip(reasons(rejects), (r["title"] for r in rejects))) == [
        ("disambiguation", "水星 (消歧义)"), ("disambiguation", "长城 (消歧义)"),
        ("redirect", "Wien"), ("redirect", "哈伯望远镜"),
    ]
    assert {r["outcome"] for r in rejects} == {"filtered"}
    assert by_title["哈勃空间望远镜"].splitlines()[0] == (
        "哈勃空间望远镜（英语：Hubble Space Telescope，缩写：HST）是一台在近地轨道运行的空间望远镜，"
        "以天文学家埃德温·哈勃命名。它的主镜直径为2.4 m，运行在约540 km的高度上。"
    )
    assert by_title["莫斯科地铁"].splitlines()[-1] == "环线与索科利尼基线相交于共青团站。地铁站的命名多来自附近的街道。"
    assert not any(word in text for text in by_title.values() for word in ("参考", "外部", "延伸", "HubbleSite", "參見"))


def test_disambiguation_marks_are_configurable(tmp_path: Path) -> None:
    path = tmp_path / "dump.xml"
    path.write_text(export(page(1, "甲", "甲可以指：\n* [[甲 (天干)]]\n__DISAMBIG__") + page(2, "乙", "乙是天干之一。{{天干}}")
                           + page(3, "丙", "丙可以指：\n* [[丙 (天干)]]\n{{ dab }}")), encoding="utf-8")
    source = source_for(path, kind="wiki", format="mediawiki")
    assert reasons(read_rows(source)[1]) == ["disambiguation", "disambiguation"]
    wiki = WikiConfig(disambiguation_templates=["天干"])
    partition = plan_partitions(source, expand_uri(source))[0]
    rejected = [r for batch in read_partition(source, partition, wiki=wiki) for r in batch.rejects.to_pylist()]
    assert [(r["title"], r["reason"]) for r in rejected] == [("甲", "disambiguation"), ("乙", "disambiguation")]


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("（{{lang-en|'''Q'''uick '''U'''DP '''I'''nternet '''C'''onnections}}，缩写：QUIC）",
         "（英语：Quick UDP Internet Connections，缩写：QUIC）"),
        ("QUIC的{{link-en|网络草案|Internet Draft}}被正式提交至", "QUIC的网络草案被正式提交至"),
        ("大大减少{{Link-en|开销|Overhead (computing)}}。", "大大减少开销。"),
        ("-{zh-tw:串流控制傳輸協定; zh-cn:流控制传输协议;}-", "流控制传输协议"),
        ("HTTP（{{Lang-en|HTTP over QUIC}}）", "HTTP（英语：HTTP over QUIC）"),
    ],
)
def test_the_reported_sentences(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("每天约有{{formatnum:6500000}}人次乘坐。", "每天约有6500000人次乘坐。"),
        ("票价为{{formatnum:{{Inflation|US|5|1929}}}}美元。", "票价为美元。"),
        ("维也纳（{{lang-en<!-- 英文名 -->|Vienna}}）", "维也纳（英语：Vienna）"),
        ("{{lang-ar|{{large|الجزائر}}}}", "阿拉伯语：الجزائر"),
    ],
)
def test_names_render_before_lookup(wikitext: str, expected: str) -> None:
    assert ZH.text(wikitext) == expected


def test_sections_inside_italics_left_open_are_sections_still() -> None:
    # mwparserfromhell runs '' over the following lines up to the next '', headings included
    wikitext = "甲说''他是\n正文。\n== 参考资料 ==\n* 书\n== 外部链接 ==\n* [https://x.org 站]\n== 历史 ==\n后来''的事。"
    assert ZH.text(wikitext) == "甲说他是\n正文。\n历史\n后来的事。"
