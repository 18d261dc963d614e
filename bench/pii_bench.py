"""PII redaction on planted personal data, and its cost next to raw jieba, measured side by side in one run.

Sentences in the registers the corpus holds (shopping and hotel reviews, news, encyclopedia-style text)
are made from hand-written frames, fillers and value generators with a fixed seed. Each sentence carries
either one planted PII value, whose span is known, or one near-miss that must survive: order numbers that
fail the Luhn check, dates, prices, years, product and tracking codes, ID-shaped numbers with a wrong check
character, version numbers, cue words without a handle.

Per type it reports recall (the planted span is replaced, with that type's placeholder, exactly) and the
false-redaction rate (share of that type's near-misses touched by any redaction), plus redactions that
hit neither (in the fillers). Targets: recall >= 0.98, false redactions <= 1 % per type.

Speed: the PII stage over real reviews (normalized first, untimed) vs raw `jieba.lcut` on the same texts in
the same process. Target: PII stage <= 0.05 x raw jieba.

    python bench/pii_bench.py [--data ../shared/data] [--reviews 20000] [--per-type 100]

Writes bench/results/pii-<date>.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import platform
import random
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import parse_config
from pipeline.schema import documents_batch
from pipeline.text.normalize import Normalize
from pipeline.text.pii import PiiRedactor, RedactPii, luhn_valid

REPO = Path(__file__).resolve().parents[1]
CONFIG = parse_config({"sources": [{"name": "s", "kind": "comments", "uri": "x.csv", "format": "csv",
                                    "fields": {"text": "review"}}]})
TYPES = ("email", "phone", "id_card", "bank_card", "ip", "im_handle", "passport")
RECALL_TARGET = 0.98
FALSE_REDACTION_TARGET = 0.01


@dataclass(frozen=True)
class Planted:
    """What a generator plants: `lead` is text before the value that stays (a cue word), `value` the span."""

    lead: str
    value: str


@dataclass(frozen=True)
class Sentence:
    text: str
    kind: str  # the PII type planted or imitated
    start: int
    end: int
    must_redact: bool


# Fillers around a frame, so that a value sits at the start, in the middle or at the end of a text.
OPENERS = [
    "", "", "", "第二次买了，", "物流很快，包装完好。", "说实话有点失望。", "【售后】", "客服态度还可以，",
    "记者了解到，", "据介绍，", "综上所述，", "早上下的单，晚上就到了。", "东西一般般吧。",
]
CLOSERS = [
    "", "", "", "谢谢！", "，麻烦尽快处理。", "。以上信息仅供参考。", "，有问题请留言。", "～", "！！！",
    "，差评。", "。", "，下次还会再来。",
]

# Frames per type, across registers; {} is where the planted value (with its cue) goes.
FRAMES: dict[str, list[str]] = {
    "email": [
        "发票请发到邮箱{}，谢谢", "有问题可以写信到{}咨询", "联系邮箱：{}", "{} 是我的邮箱，收到请回复",
        "投稿请寄{}，编辑部三个工作日内回复", "本站编辑的联系方式为 {}", "退货地址改了，请发邮件到{}",
        "读者来信请发送至{}。", "工作人员邮箱（{}）已公开", "Contact me at {} for the refund",
        "该协会秘书处的电子邮箱为{}。",
    ],
    "phone": [
        "快递员电话{}一直打不通", "有需要的可以打我电话{}", "酒店前台电话：{}，服务很周到",
        "{}，这是我的手机号，麻烦联系我", "商家留的号码是{}，打过去是空号", "报名电话 {} （工作日）",
        "热线{}已开通，市民可拨打咨询", "联系人：王先生，电话：{}", "订房时留的电话{}没人接",
        "Call us at {} before noon", "该馆开放时间为每日9时至17时，咨询电话{}。",
    ],
    "id_card": [
        "身份证号{}被商家泄露了", "入住登记时填的身份证{}，前台说信息有误", "实名认证用的是{}，审核没通过",
        "{}是我的身份证号码，请核实", "他出示了身份证，号码为{}。", "快递要求填写身份证{}，很不安全",
        "订票信息：张三，证件号 {}", "证件号码：{}（已核验）", "判决书中未隐去被告人的公民身份号码{}。",
    ],
    "bank_card": [
        "银行卡{}退款没到", "退款请打到卡号 {}，户名李四", "申请退货后钱退到了{}这张卡上",
        "{}是我的储蓄卡，麻烦查一下退款进度", "卡号：{}，三天了还没到账", "客服让我提供银行卡号{}，靠谱吗",
        "补偿款已汇入其账户{}。", "我的信用卡{}被盗刷了两笔", "付款卡号 {} 已冻结",
        "Refund went to card {} last week", "警方查明，涉案资金经由{}等账户转移。",
    ],
    "ip": [
        "登录地址显示{}，不是我本人操作", "服务器IP {} 经常掉线", "路由器后台地址是{}，默认密码admin",
        "攻击来自{}，已被防火墙拦截。", "{} 这个地址一直在刷评论", "游戏服务器（{}）今晚维护",
        "The server at {} kept timing out", "该网站的服务器位于{}，由一家数据中心托管。",
    ],
    "im_handle": [
        "有问题的朋友可以加{}一起交流", "想要的联系我{}", "二手转让，有意者{}，非诚勿扰",
        "{}，备注来意", "售后让我加{}，说私下处理", "我的{}，欢迎交流心得", "团购群主{}，每天更新",
        "东券要的加{} 先到先得", "需要驱动的联系{}！", "该主播在直播中多次公开{}，引发争议。",
    ],
    "passport": [
        "酒店登记用的是{}，前台很规范", "机票信息填错了，{}，请帮忙改一下", "签证材料：{}，有效期至2030年",
        "{}，这是我的证件信息", "订单里要求填写{}，觉得不太安全", "外籍旅客登记{}。",
        "My {} was copied at check-in", "嫌疑人持{}入境，随后前往上海。",
    ],
}

NEAR_FRAMES: dict[str, list[str]] = {
    "email": ["回复{} 你说得对", "{}", "转发给{}看看", "邮箱写错了（{}），白等了三天"],
    "phone": ["订单号{}，一直没发货", "型号{}，买错了", "价格{}，比实体店便宜", "{}出厂的批次",
              "第{}期的中奖号码", "编号{}的房间很吵"],
    "id_card": ["订单号{}", "流水号：{}，请查收", "{}", "出生日期{}，和证件一致"],
    "bank_card": ["订单号{}，一直没发货", "运单号 {} 查不到物流", "{} 这个单号是真的吗", "价格{}，还算实惠",
                  "交易流水号：{}", "发票号码{}已开具", "批次号{}的产品都有问题"],
    "ip": ["版本{}更新后更卡了", "评分{}", "时间{}开始", "固件升级到{}", "比分{}", "比例{}调配"],
    "im_handle": ["{}", "用{}买的，很方便", "{}里看到的推荐", "刚开通了{}"],
    "passport": ["{}", "{}的镜头不错", "办理{}", "{}"],
}

SURNAMES = ["zhang", "li", "wang", "liu", "chen", "yang", "zhao", "huang", "zhou", "wu", "xu", "sun", "ma", "zhu"]
GIVEN = ["wei", "fang", "na", "min", "jing", "lei", "qiang", "yan", "jun", "tao", "ming", "lily", "tom", "xiaoyu"]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _with_luhn(body: str) -> str:
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return body + digit
    raise AssertionError("unreachable: one digit always completes a Luhn number")


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(["", ".", "_"]) + rng.choice(GIVEN)


def gen_email(rng: random.Random) -> Planted:
    local = rng.choice([_name(rng) + _digits(rng, rng.randint(0, 4)), _qq_number(rng), rng.choice(GIVEN) + "+shop"])
    domain = rng.choice(["qq.com", "163.com", "126.com", "gmail.com", "sina.com", "foxmail.com", "outlook.com",
                         "example.com.cn", "mail.pku.edu.cn", "hotel-group.cn"])
    return Planted("", f"{local}@{domain}")


MOBILE_PREFIXES = ["138", "139", "150", "151", "186", "177", "199", "135", "188", "131", "166", "147"]


def gen_phone(rng: random.Random) -> Planted:
    mobile = rng.choice(MOBILE_PREFIXES) + _digits(rng, 8)
    area = rng.choice(["010", "021", "020", "0755", "0571", "028"])
    local = rng.choice("2345678") + _digits(rng, 7 if len(area) == 3 else rng.choice([6, 7]))
    forms = [mobile, f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}", f"{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
             f"+86 {mobile}", f"+86-{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}", f"{area}-{local}", f"({area}){local}",
             f"({area}) {local}", f"（{area}）{local}", f"+1 415-555-{_digits(rng, 4)}"]
    return Planted("", rng.choice(forms))


REGIONS = ["110105", "110108", "310104", "310115", "440305", "440106", "510107", "320102", "330106", "420111",
           "610113", "370202", "350203", "130102", "230103"]


def _resident_id(rng: random.Random, valid: bool = True) -> str:
    birth = datetime.date(1950, 1, 1) + datetime.timedelta(days=rng.randrange(20000))
    body = rng.choice(REGIONS) + birth.strftime("%Y%m%d") + _digits(rng, 3)
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return body + check


def _write_id(rng: random.Random, number: str) -> str:
    if rng.random() < 0.2:
        number = number.lower()
    separator = rng.choice(["", "", " ", "-"])
    return separator.join((number[:6], number[6:14], number[14:])) if separator else number


def gen_id_card(rng: random.Random) -> Planted:
    return Planted("", _write_id(rng, _resident_id(rng)))


CARD_PREFIXES = [("622202", 19), ("622848", 19), ("621700", 19), ("622588", 16), ("622260", 19), ("955880", 19),
                 ("955990", 19), ("436742", 16), ("4", 16), ("5", 16), ("62", 16), ("3782", 15), ("4", 13),
                 ("6225", 16), ("2221", 16), ("35", 16), ("6011", 16)]


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice(CARD_PREFIXES)
    return _with_luhn(prefix + _digits(rng, length - len(prefix) - 1))


def _write_grouped(rng: random.Random, number: str) -> str:
    separator = rng.choice(["", "", "", " ", " ", "-"])
    return separator.join(number[i:i + 4] for i in range(0, len(number), 4)) if separator else number


def gen_bank_card(rng: random.Random) -> Planted:
    return Planted("", _write_grouped(rng, _card(rng)))


def gen_ip(rng: random.Random) -> Planted:
    forms = [
        f"{rng.choice([10, 58, 101, 114, 172, 183, 192, 203, 222])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
        f"{rng.randint(1, 254)}",
        f"192.168.{rng.randint(0, 10)}.{rng.randint(1, 254)}",
        f"2001:db8:{rng.randint(1, 0xffff):x}::{rng.randint(1, 0xffff):x}",
        f"fe80::{rng.randint(0, 0xffff):x}:{rng.randint(0, 0xffff):x}:{rng.randint(0, 0xffff):x}",
    ]
    return Planted("", rng.choice(forms))


QQ_CUES = ["QQ", "qq", "QQ号", "QQ号码", "扣扣", "企鹅号"]
WECHAT_CUES = ["微信", "微信号", "vx", "VX", "wx", "V信", "v信", "威信", "WeChat", "wechat", "加V", "+v"]


def _qq_number(rng: random.Random) -> str:
    return rng.choice("123456789") + _digits(rng, rng.randint(4, 9))  # 5-10 digits: never mobile-shaped


def _wechat_id(rng: random.Random) -> str:
    forms = [f"wxid_{''.join(rng.choice('abcdefghijkmnpqrstuvwxyz0123456789') for _ in range(rng.randint(8, 14)))}",
             _name(rng).replace(".", "_") + _digits(rng, rng.randint(1, 4)),
             rng.choice(GIVEN) + "-" + _digits(rng, 3), rng.choice(GIVEN).capitalize() + "_" + rng.choice(SURNAMES)]
    handle = rng.choice(forms)
    return handle if len(handle) >= 6 else handle + _digits(rng, 6 - len(handle))  # WeChat ids: 6-20 characters


def gen_im_handle(rng: random.Random) -> Planted:
    if rng.random() < 0.5:
        cue = rng.choice(QQ_CUES)
        return Planted(cue + rng.choice(["", " ", ":", "：", "： ", "是"]), _qq_number(rng))
    cue = rng.choice(WECHAT_CUES)
    handle = _wechat_id(rng)
    glued_ok = not cue[-1].isascii()  # a Latin cue glued to a handle of letters reads as one word
    separator = rng.choice(["", " ", ":", "：", "号：", "是"] if glued_ok else [" ", ":", "：", ": "])
    if cue.endswith("号") and separator.startswith("号"):
        separator = separator[1:]
    if not glued_ok and separator.startswith("号"):
        separator = "："
    return Planted(cue + separator, handle)


def _passport_number(rng: random.Random) -> str:
    letter = rng.choice("ABCDFGHJKLMNPQRSTUVWXYZ")
    forms = ["E" + _digits(rng, 8), "E" + letter + _digits(rng, 7), "G" + _digits(rng, 8), "D" + _digits(rng, 7),
             "S" + _digits(rng, 7), "P" + _digits(rng, 7), "SE" + _digits(rng, 7), "DE" + _digits(rng, 7),
             "K" + _digits(rng, 8), "H" + _digits(rng, 8), rng.choice("123456789") + _digits(rng, 8)]
    number = rng.choice(forms)
    return number.lower() if rng.random() < 0.1 else number


def gen_passport(rng: random.Random) -> Planted:
    cue = rng.choice(["护照", "护照号", "护照号码", "护照号：", "护照号码：", "护照号是", "护照 ", "Passport No. ",
                      "passport: ", "PASSPORT ", "passport number "])
    return Planted(cue, _passport_number(rng))


GENERATORS: dict[str, Callable[[random.Random], Planted]] = {
    "email": gen_email, "phone": gen_phone, "id_card": gen_id_card, "bank_card": gen_bank_card, "ip": gen_ip,
    "im_handle": gen_im_handle, "passport": gen_passport,
}


# Near-misses: what looks like each type and must survive.

def near_email(rng: random.Random) -> Planted:
    return Planted("", rng.choice([
        "@" + rng.choice(["张三", "小米客服", "京东自营", "lily_2020", "王老师"]), rng.choice(GIVEN) + "@",
        f"{_name(rng)}@{rng.choice(['qq', '163'])}", f"{rng.choice(GIVEN)} at qq dot com", "@@", "邮箱@见主页"]))


def near_phone(rng: random.Random) -> Planted:
    mobile = rng.choice(MOBILE_PREFIXES) + _digits(rng, 8)
    return Planted("", rng.choice([
        rng.choice(["10", "11", "12"]) + _digits(rng, 9),  # 11 digits, no mobile prefix
        "2023" + mobile, mobile + _digits(rng, 2), "SF" + mobile, "A" + mobile + "B", f"{rng.randint(1000, 99999)}元",
        f"{rng.randint(1990, 2024)}年", f"{rng.randint(2019, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"SM-G{rng.randint(9000, 9999)}", f"{_digits(rng, 3)}-{_digits(rng, 3)}", _digits(rng, 5)]))


def near_id_card(rng: random.Random) -> Planted:
    return Planted("", rng.choice([
        _write_id(rng, _resident_id(rng, valid=False)), _resident_id(rng) + _digits(rng, 2),
        f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
        f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"]))


def _fails_card_check(number: str) -> str:
    digits = number.replace(" ", "").replace("-", "")
    return number if not luhn_valid(digits) else number[:-1] + str((int(number[-1]) + 1) % 10)


def near_bank_card(rng: random.Random) -> Planted:
    card = _card(rng)
    return Planted("", rng.choice([
        _write_grouped(rng, _fails_card_check(card)),  # an order number failing Luhn
        _fails_card_check(rng.choice("3456") + _digits(rng, rng.randint(12, 18))),
        "2023" + _digits(rng, rng.randint(12, 15)),  # order numbers that start with a date
        "1" + _digits(rng, rng.randint(12, 18)),  # and with a timestamp
        _digits(rng, 2) + card + _digits(rng, max(1, 18 - len(card))),  # a valid card inside a longer run
        rng.choice(["SF", "YT", "JDVA", "ZTO"]) + card,  # a valid card glued to a courier code
        "773" + _digits(rng, 9), f"¥{rng.randint(100, 9999)}.{rng.randint(0, 99):02d}",
        card + "-" + _digits(rng, 2),  # a sub-order number
        _fails_card_check(_write_grouped(rng, card) + "-" + _digits(rng, 2))]))  # one more group, no card as a whole


def near_ip(rng: random.Random) -> Planted:
    return Planted("", rng.choice([
        f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
        f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}",
        f"{rng.randint(1, 9)}.{rng.randint(0, 9)}",
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        f"{rng.randint(0, 5)}:{rng.randint(0, 5)}", f"{rng.randint(256, 999)}.{rng.randint(0, 255)}.1.1", "3:2:1"]))


def near_im_handle(rng: random.Random) -> Planted:
    return Planted("", rng.choice([
        "微信支付", "QQ音乐", "QQ空间", f"QQ群 {_qq_number(rng)}", "wxWidgets", "微信 payment", f"QQ {rng.randint(2000, 2024)}年",
        f"vx{rng.randint(100, 9999)}", "企鹅电竞", "QQbrowser2", "微信小程序", "威信县", f"VX-{rng.randint(100, 999)}",
        "wx.login", "扣扣子", f"QQ等级{rng.randint(1, 64)}", f"加VIP{rng.randint(1000, 99999)}", "+Vlog123"]))


def near_passport(rng: random.Random) -> Planted:
    return Planted("", rng.choice([
        "型号" + _passport_number(rng).upper(), "护照办理要15个工作日", f"护照有效期到{rng.randint(2025, 2035)}年",
        "护照 E" + _digits(rng, 3), "护照照片", "passports " + _digits(rng, 8), "E" + _digits(rng, 8),
        "护照复印件"]))


NEAR_GENERATORS: dict[str, Callable[[random.Random], Planted]] = {
    "email": near_email, "phone": near_phone, "id_card": near_id_card, "bank_card": near_bank_card, "ip": near_ip,
    "im_handle": near_im_handle, "passport": near_passport,
}


def _full_width(text: str) -> str:
    """Letters, digits and spaces as a Chinese input method in full-width mode types them."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else "\u3000" if c == " " else c for c in text)


def _sentence(rng: random.Random, frame: str, planted: Planted, kind: str, must_redact: bool) -> Sentence:
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    before, after = frame.split("{}")
    head = opener + before + planted.lead
    value = _full_width(planted.value) if rng.random() < 0.1 else planted.value  # typed with a Chinese IME
    text = head + value + after + closer
    return Sentence(text, kind, len(head), len(head) + len(value), must_redact)


def planted_sentences(per_type: int, seed: int = 20261130) -> list[Sentence]:
    rng = random.Random(seed)
    sentences = []
    for kind in TYPES:
        for _ in range(per_type):
            sentences.append(_sentence(rng, rng.choice(FRAMES[kind]), GENERATORS[kind](rng), kind, True))
            near = NEAR_GENERATORS[kind](rng)
            sentences.append(_sentence(rng, rng.choice(NEAR_FRAMES[kind]), near, kind, False))
    return sentences


def normalized(sentences: list[Sentence]) -> list[Sentence]:
    """The sentences as the PII stage sees them in a build: after the normalize stage."""
    batch = documents_batch([{"id": str(i), "source": "s", "kind": "comments", "text": s.text}
                             for i, s in enumerate(sentences)])
    texts = Normalize(CONFIG.normalize)(batch).batch.column("text").to_pylist()
    assert all(len(t) == len(s.text) for t, s in zip(texts, sentences)), "normalize moved a planted span"
    return [Sentence(t, s.kind, s.start, s.end, s.must_redact) for t, s in zip(texts, sentences)]


def score(sentences: list[Sentence], redactor: PiiRedactor) -> dict:
    planted, recalled, near, touched = Counter(), Counter(), Counter(), Counter()
    spurious: Counter = Counter()
    misses: dict[str, list[str]] = {}
    for sentence in normalized(sentences):
        found = redactor.find(sentence.text)
        overlapping = [r for r in found if r.start < sentence.end and r.end > sentence.start]
        for redaction in found:
            if redaction not in overlapping:
                spurious[redaction.kind] += 1
        if sentence.must_redact:
            planted[sentence.kind] += 1
            if (sentence.start, sentence.end, sentence.kind) in overlapping:
                recalled[sentence.kind] += 1
            else:
                misses.setdefault(sentence.kind, []).append(sentence.text)
        else:
            near[sentence.kind] += 1
            if overlapping:
                touched[sentence.kind] += 1
                misses.setdefault(sentence.kind, []).append(sentence.text)
    per_type = {
        kind: {"planted": planted[kind], "recall": round(recalled[kind] / planted[kind], 4),
               "near_misses": near[kind], "false_redaction_rate": round(touched[kind] / near[kind], 4),
               "spurious_redactions": spurious[kind], "examples_wrong": misses.get(kind, [])[:5]}
        for kind in TYPES
    }
    return per_type


def random_order_numbers_taken_for_cards(redactor: PiiRedactor, n: int = 20000, seed: int = 7) -> float:
    """Share of uniformly random 16-19-digit numbers redacted: the price of a definition by Luhn alone."""
    rng = random.Random(seed)
    numbers = [rng.choice("123456789") + _digits(rng, rng.randint(15, 18)) for _ in range(n)]
    return round(sum(1 for x in numbers if redactor.find(f"订单号{x}")) / n, 4)


def real_reviews(data: Path, limit: int) -> list[str]:
    with zipfile.ZipFile(data / "comments" / "online_shopping_10_cats.zip") as archive:
        name = next(n for n in archive.namelist() if n.endswith(".csv"))
        rows = csv.DictReader(io.TextIOWrapper(archive.open(name), encoding="utf-8-sig"))
        return [row["review"] or "" for row in rows][:limit]


def time_against_jieba(texts: list[str]) -> dict:
    import jieba

    batch = documents_batch([{"id": str(i), "source": "s", "kind": "comments", "text": t} for i, t in enumerate(texts)])
    batch = Normalize(CONFIG.normalize)(batch).batch
    stage = RedactPii(CONFIG.pii)
    pii_seconds = min(_seconds(lambda: stage(batch)) for _ in range(3))
    result = stage(batch)
    jieba.setLogLevel(60)
    jieba.initialize()
    same_texts = batch.column("text").to_pylist()
    jieba_seconds = _seconds(lambda: [jieba.lcut(t) for t in same_texts])
    return {"texts": len(texts), "megabytes": round(sum(len(t.encode()) for t in same_texts) / 1e6, 3),
            "pii_stage_seconds": round(pii_seconds, 4), "raw_jieba_seconds": round(jieba_seconds, 3),
            "pii_over_jieba": round(pii_seconds / jieba_seconds, 4), "redactions": dict(result.counts or {})}


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--reviews", type=int, default=20000)
    parser.add_argument("--per-type", type=int, default=100)
    args = parser.parse_args()

    redactor = PiiRedactor(list(CONFIG.pii.types))
    sentences = planted_sentences(args.per_type)
    per_type = score(sentences, redactor)
    speed = time_against_jieba(real_reviews(args.data, args.reviews))
    met = {
        "recall": all(v["recall"] >= RECALL_TARGET for v in per_type.values()),
        "false_redactions": all(v["false_redaction_rate"] <= FALSE_REDACTION_TARGET for v in per_type.values()),
        "speed": speed["pii_over_jieba"] <= 0.05,
    }
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "sentences": len(sentences),
        "targets": {"recall": RECALL_TARGET, "false_redaction_rate": FALSE_REDACTION_TARGET, "pii_over_jieba": 0.05},
        "per_type": per_type,
        "random_16_19_digit_numbers_redacted_as_cards": random_order_numbers_taken_for_cards(redactor),
        "speed": speed,
        "met": met,
    }
    print(f"{'type':<10} {'planted':>7} {'recall':>7} {'near':>5} {'false':>6} {'spurious':>8}")
    for kind, v in per_type.items():
        print(f"{kind:<10} {v['planted']:>7} {v['recall']:>7.3f} {v['near_misses']:>5} "
              f"{v['false_redaction_rate']:>6.3f} {v['spurious_redactions']:>8}")
        for example in v["examples_wrong"]:
            print(f"    wrong: {example}")
    print(f"random 16-19 digit numbers redacted as cards: {results['random_16_19_digit_numbers_redacted_as_cards']}")
    print(f"speed: PII stage {speed['pii_stage_seconds']} s vs raw jieba {speed['raw_jieba_seconds']} s on "
          f"{speed['texts']} reviews ({speed['megabytes']} MB): {speed['pii_over_jieba']} x")
    print(f"targets met: {met}")
    out = REPO / "bench" / "results" / f"pii-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
