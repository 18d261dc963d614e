"""Writes the demo corpus in samples/: every text here was written for this project.

The binary formats (bz2, WARC.gz, GBK) cannot be reviewed as text, so they are generated from this file;
running it again gives byte-identical samples. See README.md for what each file plants for later stages.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import io
import json
from pathlib import Path
from xml.sax.saxutils import escape

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

HERE = Path(__file__).resolve().parent
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def resident_id(first17: str) -> str:
    """An 18-digit mainland resident ID with its correct ISO 7064 check character."""
    return first17 + ID_CHECK[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS)) % 11]


VALID_ID = resident_id("11010519491231002")
ORDER_NUMBER = "110105194912310020" if VALID_ID[-1] != "0" else "110105194912310021"  # wrong check digit

# ---------------------------------------------------------------------------------------------- wiki

ZH_PAGES = [
    ("计算机", 0, 1001, None, """{{Infobox 机器|名称=计算机|图像=Computer.jpg}}
{{NoteTA|G1=IT}}
'''计算机'''（{{lang-en|computer}}），又称-{zh-hans:计算机; zh-hant:電腦; zh-tw:電腦}-，是利用数字电子技术，根据一系列指令自动进行运算的机器。<ref>{{cite book|title=计算机导论|year=2010}}</ref>现代的计算机由硬件和-{zh-cn:软件;zh-tw:軟體}-两部分组成。
[[File:Computer.jpg|thumb|一台个人计算机]]
== 历史 ==
早期的计算机体积庞大，一台机器要占据整个房间。<ref name="hist">《计算机发展史》，第12页。</ref>随着[[晶体管]]和[[集成电路|集成電路]]的发明，计算机变得越来越小。
=== 个人计算机 ===
上世纪七十年代以后，-{A|个人计算机}-开始进入家庭和办公室。<!-- 这里需要补充来源 -->
{| class="wikitable"
! 年代 !! 代表机型
|-
| 1946 || ENIAC
|-
| 1981 || IBM PC
|}
== 参见 ==
* [[算盘]]
* [[图灵机]]
__NOTOC__
[[Category:计算机]]
[[en:Computer]]
[[ja:コンピュータ]]
"""),
    ("电脑", 0, 1002, "计算机", "#REDIRECT [[计算机]]"),
    ("Talk:计算机", 1, 1003, None, "这个条目需要更多的参考资料。--[[User:示例|示例]] 2020年1月1日 (三) 08:00 (UTC)"),
    ("臺灣鐵路", 0, 1004, None, """{{Infobox 鐵路}}
'''臺灣鐵路'''是臺灣島上最早興建的鐵路系統，全線環繞本島一周，連接各大城市與鄉鎮。<ref>《臺灣鐵道史》，第三卷。</ref>
== 歷史 ==
清朝末年開始興建第一段鐵路，從基隆通往新竹。日治時期鐵路網逐步擴展到西部各地。戰後鐵路陸續電氣化，並興建環島鐵路的最後一段。
== 車站 ==
主要車站包括臺北車站、臺中車站、高雄車站與花蓮車站，每日載運大量通勤與觀光旅客。
[[Category:臺灣鐵路]]
"""),
    ("长城", 0, 1005, None, """{{Coord|40|N|116|E}}
'''长城'''（The Great Wall）是中国古代修建的军事防御工程，东西绵延上万里。很多外国游客说 "The Great Wall is amazing"，他们在八达岭拍照留念。<ref>{{cite web|url=http://example.org/wall|title=长城}}</ref>
== 结构 ==
长城由城墙、敌楼、关城和烽火台组成，沿着山脊修建，利用地形防守。
[[File:Great wall.jpg|缩略图|八达岭长城]]
[[Category:中国建筑]]
"""),
    ("Template:Infobox 机器", 10, 1006, None, "{{{名称}}} 的信息框模板"),
]

EN_PAGES = [
    ("Python (programming language)", 0, 2001, None, """{{Short description|General-purpose programming language}}
{{Infobox programming language
| name = Python
| paradigm = [[Multi-paradigm programming language|Multi-paradigm]]
}}
'''Python''' is a high-level, general-purpose [[programming language]]. Its design philosophy emphasizes code readability with the use of significant indentation.<ref>{{cite web |url=https://example.org/python |title=About Python}}</ref> Python is [[Type system|dynamically typed]] and garbage-collected.

== History ==
Python was conceived in the late 1980s as a successor to an earlier teaching language.<ref name="history">A history of the language, page 3.</ref> Its first release came in 1991, and later versions added list comprehensions, generators and a cycle-detecting garbage collector.

== Features ==
{| class="wikitable"
! Version !! Year
|-
| 2.0 || 2000
|-
| 3.0 || 2008
|}
Python supports several programming paradigms, including structured, object-oriented and functional programming. It is often described as a language with batteries included because of its comprehensive standard library.
[[File:Python logo.svg|thumb|The logo of the language]]

== See also ==
* [[List of programming languages]]

[[Category:Programming languages]]
[[de:Python (Programmiersprache)]]
"""),
    ("Python language", 0, 2002, "Python (programming language)", "#REDIRECT [[Python (programming language)]]"),
    ("Category:Programming languages", 14, 2003, None, "Articles about programming languages."),
    ("Tea", 0, 2004, None, """'''Tea''' is an aromatic beverage prepared by pouring hot water over cured leaves of the tea plant.<ref>Plant guide, 2001.</ref> After plain water, tea is among the most widely consumed drinks in the world.

== Origin ==
Tea has its origins in southwest China, where it was first used as a medicinal drink. It spread to other parts of Asia along trade routes and reached Europe in the seventeenth century, where it soon became a fashionable drink among the wealthy.
{{Portal|Food}}
"""),
]


def page_xml(title: str, ns: int, page_id: int, redirect: str | None, text: str, stamp: str) -> str:
    redirect_xml = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return f"""  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>{page_id}</id>
{redirect_xml}    <revision>
      <id>{page_id * 10}</id>
      <timestamp>{stamp}</timestamp>
      <contributor><username>示例编者</username><id>7</id></contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>
    </revision>
  </page>
"""


def export_xml(version: str, lang: str, pages: list[tuple], stamp: str) -> str:
    namespaces = (
        '      <namespace key="0" case="first-letter" />\n'
        '      <namespace key="1" case="first-letter">Talk</namespace>\n'
        '      <namespace key="6" case="first-letter">File</namespace>\n'
        '      <namespace key="10" case="first-letter">Template</namespace>\n'
        '      <namespace key="14" case="first-letter">Category</namespace>\n'
    )
    head = f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-{version}/" version="{version}" xml:lang="{lang}">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>{lang}wiki</dbname>
    <base>https://{lang}.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.41.0</generator>
    <case>first-letter</case>
    <namespaces>
{namespaces}    </namespaces>
  </siteinfo>
"""
    return head + "".join(page_xml(*page, stamp) for page in pages) + "</mediawiki>\n"


# ---------------------------------------------------------------------------------------------- news

NEWS_ARTICLES = [
    {
        "url": "http://news.example.cn/tech/2024/0301-robot.html",
        "title": "本地工厂引入协作机器人 生产效率明显提升",
        "date": "2024-03-01",
        "paragraphs": [
            "本报讯 近日，位于城东工业园的一家零部件工厂完成了生产线改造，引入了十二台协作机器人。这些机器人能够与工人在同一工位上配合作业，负责搬运、拧紧螺丝和质量检测等重复性工作。",
            "工厂负责人介绍，改造完成后，生产线的日产量提高了三成，产品的不良率下降到千分之二以下。工人们从繁重的体力劳动中解放出来，转而负责设备维护和工艺优化。",
            "业内专家表示，协作机器人价格逐年下降，部署也越来越简单，中小企业同样可以负担。专家同时提醒，企业在引入新设备之前，应当做好员工培训，并制定完善的安全操作规程。",
            "据了解，该工业园计划在今年年底前再推动二十家企业完成类似改造，并将设立专项资金给予补贴。",
        ],
    },
    {
        "url": "http://news.example.cn/life/2024/0305-library.html",
        "title": "社区图书馆延长开放时间 市民夜读有了好去处",
        "date": "2024-03-05",
        "paragraphs": [
            "从本月起，市区六家社区图书馆将开放时间延长至晚上十点，方便上班族下班后前来阅读和自习。图书馆还新增了自助借还设备，读者刷身份证即可办理借阅手续。",
            "一位经常来看书的市民说，以前下班后图书馆已经关门，只能周末过来，现在每天晚上都可以在这里安静地读上两个小时，感觉生活充实了很多。",
            "图书馆工作人员表示，夜间开放期间会安排志愿者值班，并定期举办读书分享会和亲子阅读活动。如有意见和建议，读者可以发送邮件至 reader.service@example.cn 与图书馆联系。",
        ],
    },
    {
        "url": "http://news.example.com/world/2024/03/rail-link.html",
        "title": "New rail link cuts commute between the two cities to forty minutes",
        "date": "2024-03-08",
        "paragraphs": [
            "A new high-speed rail link opened on Friday, cutting the journey between the two largest cities in the region from nearly two hours to about forty minutes. The first train left the central station at six in the morning with more than five hundred passengers on board.",
            "Officials said the line had been finished ahead of schedule and slightly under budget. Trains will run every fifteen minutes during peak hours and every half hour in the evening, and tickets can be bought at stations or through a mobile application.",
            "Local businesses welcomed the opening, saying that faster connections would make it easier to hire workers from the neighbouring city. Some residents living near the tracks, however, have raised concerns about noise at night and asked for additional barriers.",
        ],
    },
]

BOILERPLATE_TOP = """<header><nav class="menu"><a href="/">首页</a> | <a href="/tech">科技</a> | <a href="/life">生活</a> | <a href="/world">World</a> | <a href="/login">登录</a></nav>
<div class="ad">广告：限时特价，点击领取优惠券！Advertisement: buy now and save 50%!</div></header>"""
BOILERPLATE_BOTTOM = """<aside class="related"><h3>相关阅读</h3><ul><li><a href="/a">天气预报：明天多云转晴</a></li><li><a href="/b">Sports: local team wins again</a></li></ul></aside>
<footer><p>版权所有 © 2024 示例新闻网 | 联系我们 | 隐私政策 | 京ICP备00000000号</p></footer>"""


def article_html(article: dict) -> bytes:
    body = "\n".join(f"<p>{escape(p)}</p>" for p in article["paragraphs"])
    return f"""<!DOCTYPE html>
<html lang="zh"><head><meta charset="utf-8"><title>{escape(article['title'])} - 示例新闻网</title>
<meta property="article:published_time" content="{article['date']}T08:00:00+08:00"></head>
<body>{BOILERPLATE_TOP}
<main><article><h1>{escape(article['title'])}</h1><p class="byline">发布时间：{article['date']}</p>
{body}
</article></main>
{BOILERPLATE_BOTTOM}</body></html>""".encode()


REQUEST_RECORD_ID = "<urn:uuid:00000000-0000-4000-8000-100000000000>"


def write_warc(path: Path) -> None:
    """Three articles, a request record (not content), an image (not HTML) and a page with no text."""
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    stamp = "2024-03-10T12:00:00Z"
    for number, (url, content_type, payload) in enumerate(_warc_payloads(), start=1):
        record_id = f"<urn:uuid:00000000-0000-4000-8000-{number:012d}>"
        if number == 1:
            request = writer.create_warc_record(
                url, "request", payload=io.BytesIO(b""),
                http_headers=StatusAndHeaders("GET / HTTP/1.1", [("Host", "news.example.cn")], is_http_request=True),
                warc_headers_dict={"WARC-Date": stamp, "WARC-Record-ID": REQUEST_RECORD_ID},
            )
            writer.write_record(request)
        http_headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        record = writer.create_warc_record(
            url, "response", payload=io.BytesIO(payload), http_headers=http_headers,
            warc_headers_dict={"WARC-Date": stamp, "WARC-Record-ID": record_id},
        )
        writer.write_record(record)
    path.write_bytes(buffer.getvalue())


def _warc_payloads() -> list[tuple[str, str, bytes]]:
    pages = [(a["url"], "text/html; charset=utf-8", article_html(a)) for a in NEWS_ARTICLES]
    pages.append(("http://news.example.cn/img/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(64))))
    redirect_stub = "<html><head><title>跳转中</title></head><body><script>location.href='/';</script></body></html>"
    pages.append(("http://news.example.cn/index.html", "text/html; charset=utf-8", redirect_stub.encode()))
    return pages


LONG_NEWS = ("市气象台今天发布消息，受冷空气影响，本周后半段全市将出现明显降温，最低气温可能降至零下五度，"
             "提醒市民及时添衣保暖，出行注意交通安全，农业部门做好设施大棚的防寒工作。")


def news_lines() -> list[str]:
    items = [
        {"id": "n001", "title": "气象台发布降温预报", "content": LONG_NEWS, "date": "2024-01-15 09:30:00",
         "category": "weather", "keywords": "降温,冷空气,天气"},
        # exact duplicate of n001 under another id (a story syndicated twice)
        {"id": "n002", "title": "气象台发布降温预报", "content": LONG_NEWS, "date": "2024-01-15 10:00:00",
         "category": "weather", "keywords": "降温"},
        # near-duplicate: two characters changed
        {"id": "n003", "title": "本周将明显降温", "content": LONG_NEWS.replace("零下五度", "零下六度"),
         "date": "Mon, 15 Jan 2024 11:00:00 +0800", "category": "weather", "keywords": ""},
        {"id": "n004", "title": "警方提醒谨防电信诈骗", "date": "2024-01-16T08:00:00+08:00", "category": "society",
         "content": f"近期有不法分子冒充客服实施诈骗。市民王先生（手机 13812345678，身份证号 {VALID_ID}）反映，"
                    f"对方以订单 {ORDER_NUMBER} 异常为由要求转账。警方提醒，如有疑问请发邮件至 police.help@example.cn"
                    "或拨打 010-12345678 咨询，诈骗网站的服务器地址为 192.168.10.24。", "keywords": "诈骗,警方"},
        {"id": "n005", "title": "港鐵新線通車", "date": "2024-01-17", "category": "transport",
         "content": "港鐵新線今日正式通車，沿線居民出行更加方便。首班列車於早上六時開出，車廂內擠滿了前來體驗的市民與遊客，"
                    "鐵路公司表示將根據客流調整班次。", "keywords": "港鐵,通車"},
        {"id": "n006", "title": "科技公司发布新款手机", "date": "2024-01-18", "category": "tech",
         "content": "今天上午，一家科技公司举行发布会，推出了新款 smartphone，搭载最新的 AI 芯片，"
                    "支持 5G 网络和 wireless charging，起售价为三千九百九十九元。", "keywords": "手机,AI"},
        {"id": "n007", "title": "City council approves new park", "date": "2024-01-19", "category": "society",
         "content": "The city council voted on Tuesday to turn an empty parking lot near the river into a public park "
                    "with playgrounds, walking paths and a small community garden. Work starts in the spring.",
         "keywords": "park,council"},
        {"id": "n008", "title": "日期写错的稿件", "date": "去年冬天", "category": "society",
         "content": "这篇稿件的日期无法解析，读取时日期为空，并在元数据里记下原始的日期字符串，以便事后核查。",
         "keywords": ""},
        {"id": "n009", "title": "没有正文的稿件", "date": "2024-01-20", "category": "society", "content": "   ",
         "keywords": ""},
    ]
    for n in range(10, 30):  # ordinary short items so the demo has some volume
        items.append({"id": f"n{n:03d}", "title": f"区县简讯第{n}期", "date": f"2024-02-{n - 9:02d}",
                      "category": "local", "keywords": "简讯",
                      "content": f"第{n}期简讯：本周全区共完成道路维修{n}处，新增公共座椅{n * 2}张，"
                                 f"社区卫生服务中心接待居民{n * 37}人次，各项工作平稳推进。"})
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    lines.insert(9, '{"id": "n_broken", "title": "断行", "content": "这一行的 JSON 没有写完')  # malformed line
    return lines


# ---------------------------------------------------------------------------------------------- comments

PRODUCTS = ["耳机", "台灯", "保温杯", "背包", "键盘", "雨伞"]
PRAISE = ["音质清楚，做工扎实，物流也很快，{p}比预想的好用。", "{p}包装完好，颜色和图片一致，用了一周没有问题，推荐购买。"]
COMPLAINTS = ["{p}用了三天就坏了，联系客服一直没人回复，很失望。", "{p}和描述不符，做工粗糙，申请退货还要自己付运费。"]


def gbk_rows() -> list[list[str]]:
    rows = [["label", "review"]]
    for product in PRODUCTS:
        rows += [["1", t.format(p=product)] for t in PRAISE] + [["0", t.format(p=product)] for t in COMPLAINTS]
    long_review = "这家店的保温杯保温效果很好，早上倒的热水到下午还是温的，杯盖密封也不漏水，送给家人很实用，下次还会回购。"
    rows += [
        ["1", long_review],
        ["1", long_review],  # exact duplicate
        ["1", long_review.replace("下午", "晚上")],  # near-duplicate, two characters changed
        ["1", "好好好好好好好好好好好好好好好好"],  # repeated characters
        ["0", "加微信 abc12345 领取返现，好评返现五元！"],  # spam
        ["0", "便宜货，加V信 xy9988 拿货更便宜"],  # spam
        ["1", "物流很快，客服电话 13912345678 态度好。"],  # PII
        ["1", "東西質量很好，包裝精美，會再次購買。"],  # traditional characters in a GBK-encodable text
        ["0"],  # a row missing its text
    ]
    return rows


def utf8_rows() -> list[list[str]]:
    rows = [["cat", "label", "review"]]
    rows += [
        ["书籍", "1", "这本书讲得很透彻，\n第二章的例子尤其好懂。\n推荐给入门的朋友。"],  # embedded newlines
        ["书籍", "1", "\ufeff印刷清晰，纸张厚实，快递包装也很用心。"],  # BOM inside a field
        ["书籍", "0", '书里有好几处印刷错误，比如"第三章"的标题就印错了。'],  # embedded quotes
        ["水果", "1", "苹果很新鲜，个头均匀，甜度刚好，家里老人孩子都爱吃，会继续在这家买。"],
        ["水果", "0", "收到的橙子有三个已经坏了，申请售后至今没有处理结果。"],
        ["水果", "1", "收货人李女士，邮箱 li.test@example.com，身份证 " + VALID_ID + "，下次还买。"],  # PII
        ["平板", "1", "The screen is sharp and the battery lasts all day, 很适合出差带着用。"],  # mixed zh-en
        ["平板", "0", "充电很慢，the charger gets hot，售后说是正常现象。"],
        ["平板", "1", "屏幕顯示清晰，運行流暢，用來看電子書很舒服。"],  # traditional only
        ["衣服", "1", "好评好评好评好评好评好评好评好评"],  # repeated phrase
        ["衣服", "0", "尺码偏小一号，建议买大一码，面料摸起来还不错。"],
        ["衣服", "0", "尺码偏小一号，建议买大一码，面料摸起来还不错。"],  # exact duplicate
    ]
    return rows


def csv_bytes(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def utf8_csv() -> bytes:
    """UTF-8 with a BOM; one row, placed after the duplicate pair, carries bytes that are not UTF-8."""
    text = csv_bytes(utf8_rows())
    marker = "面料摸起来还不错。\n"
    split = text.index(marker) + len(marker)
    damaged = '衣服,0,"这条评论的字节坏了：'.encode() + b"\xff\xfe" + ' 读取时应被拒绝。"\n'.encode()
    return codecs.BOM_UTF8 + text[:split].encode() + damaged + text[split:].encode()


def main() -> None:
    stamp = "2024-02-01T00:00:00Z"
    (HERE / "wiki").mkdir(exist_ok=True)
    (HERE / "news").mkdir(exist_ok=True)
    (HERE / "comments").mkdir(exist_ok=True)
    zh = export_xml("0.11", "zh", ZH_PAGES, stamp).encode()
    (HERE / "wiki" / "zhwiki-sample.xml.bz2").write_bytes(bz2.compress(zh, 9))
    (HERE / "wiki" / "enwiki-sample.xml").write_text(export_xml("0.10", "en", EN_PAGES, stamp), encoding="utf-8")
    write_warc(HERE / "news" / "news-crawl.warc.gz")
    (HERE / "news" / "news.jsonl").write_text("\n".join(news_lines()) + "\n", encoding="utf-8")
    (HERE / "comments" / "reviews_gbk.csv").write_bytes(csv_bytes(gbk_rows()).encode("gbk"))
    (HERE / "comments" / "reviews_utf8_bom.csv").write_bytes(utf8_csv())


if __name__ == "__main__":
    main()
