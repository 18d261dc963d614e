"""PII redaction (text stage 3): every form we redact, the near-misses that must survive, the stage's
counts, and those counts reaching a build's notes per source.

Card numbers are made here with their Luhn check digit computed by the test, not by the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import PiiConfig, parse_config
from pipeline.schema import documents_batch
from pipeline.text.normalize import Normalize
from pipeline.text.pii import (
    PLACEHOLDERS,
    PiiRedactor,
    RedactPii,
    luhn_valid,
    redaction_rows,
    valid_bank_card,
    valid_id_card,
)

CONFIG = parse_config(
    {"sources": [{"name": "s", "kind": "news", "uri": "x.jsonl", "format": "jsonl", "fields": {"text": "t"}}]}
)
NEW_TYPES = ("bank_card", "im_handle", "passport")


def batch_of(*texts: str, titles: list[str | None] | None = None) -> pa.RecordBatch:
    titles = titles or [None] * len(texts)
    return documents_batch([{"id": str(i), "source": "s", "kind": "comments", "text": t, "title": title}
                            for i, (t, title) in enumerate(zip(texts, titles))])


def redact(*texts: str, types: list[str] | None = None) -> tuple[list[str], list[dict]]:
    config = PiiConfig(types=types) if types else CONFIG.pii
    result = RedactPii(config)(batch_of(*texts)).batch
    return result.column("text").to_pylist(), [json.loads(p) for p in result.column("pii").to_pylist()]


def redact_one(text: str) -> str:
    return redact(text)[0][0]


def with_check_digit(body: str) -> str:
    """`body` plus the digit that makes the whole number pass the Luhn check."""
    doubled = [int(d) * 2 if i % 2 == 0 else int(d) for i, d in enumerate(reversed(body))]
    total = sum(n - 9 if n > 9 else n for n in doubled)
    return body + str((10 - total % 10) % 10)


def with_wrong_check_digit(body: str) -> str:
    right = with_check_digit(body)
    return right[:-1] + str((int(right[-1]) + 1) % 10)


def id_with_checksum(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def grouped(number: str, separator: str = " ") -> str:
    return separator.join(number[i:i + 4] for i in range(0, len(number), 4))


VALID_ID = id_with_checksum("11010519491231002")
CARD_13 = with_check_digit("422222222222")
CARD_15_AMEX = "378282246310005"
CARD_16 = with_check_digit("622848001234567")
CARD_16_VISA = "4111111111111111"
CARD_19 = with_check_digit("622202123456789012")
CARD_19_DOMESTIC = with_check_digit("955880123456789012")
CARDS = (CARD_13, CARD_15_AMEX, CARD_16, CARD_16_VISA, CARD_19, CARD_19_DOMESTIC)


# existing types

def test_id_card_checksum_and_birth_date() -> None:
    assert valid_id_card(VALID_ID)
    wrong_check = VALID_ID[:17] + ("0" if VALID_ID[17] != "0" else "1")
    assert not valid_id_card(wrong_check)
    assert not valid_id_card(id_with_checksum("11010519490231002"))  # 31 Feb does not exist
    out, counts = redact(f"身份证{VALID_ID}，订单号{wrong_check}")
    assert out == [f"身份证<ID_CARD>，订单号{wrong_check}"]
    assert counts == [{"id_card": 1}]


def test_phones_but_not_inside_longer_digit_runs() -> None:
    out, counts = redact(
        "手机13812345678，座机010-12345678和(0755)1234567，国际+1 415-555-2671，+86 138 1234 5678",
        "订单20231381234567890，运单SF13812345678，价格13812345678901",
    )
    assert out[0] == "手机<PHONE>，座机<PHONE>和<PHONE>，国际<PHONE>，<PHONE>"
    assert counts[0] == {"phone": 5}
    assert out[1] == "订单20231381234567890，运单SF13812345678，价格13812345678901"
    assert counts[1] == {}


def test_landline_with_chinese_parentheses() -> None:
    assert redact_one("前台电话（0571）4850477，座机（010） 12345678") == "前台电话<PHONE>，座机<PHONE>"


def test_email_ip_and_optional_url() -> None:
    text = "写信给 li.lei+cv@mail.example.com.cn 或 12345678@qq.com，服务器 192.168.1.20 和 2001:db8::8a2e:370:7334，版本 1.2.3.4.5，时间 12:30:45，见 https://example.com/a?b=1。"
    out, counts = redact(text)
    assert out == ["写信给 <EMAIL> 或 <EMAIL>，服务器 <IP> 和 <IP>，版本 1.2.3.4.5，时间 12:30:45，见 https://example.com/a?b=1。"]
    assert counts == [{"email": 2, "ip": 2}]
    out, counts = redact("见 https://example.com/a?b=1。", types=["url"])
    assert out == ["见 <URL>。"] and counts == [{"url": 1}]


# ID numbers written in groups

@pytest.mark.parametrize("separator", [" ", "-"])
def test_id_card_in_6_8_4_groups(separator: str) -> None:
    written = separator.join((VALID_ID[:6], VALID_ID[6:14], VALID_ID[14:]))
    assert redact_one(f"身份证号{written}，请核对") == "身份证号<ID_CARD>，请核对"
    assert redact_one(f"{written}") == "<ID_CARD>"
    wrong = separator.join((VALID_ID[:6], VALID_ID[6:14], VALID_ID[14:17] + ("1" if VALID_ID[17] == "0" else "0")))
    assert redact_one(f"单号 {wrong}") == f"单号 {wrong}"


def test_id_card_with_mixed_separators_is_not_one_number() -> None:
    mixed = f"{VALID_ID[:6]} {VALID_ID[6:14]}-{VALID_ID[14:]}"
    assert redact_one(f"编号{mixed}") == f"编号{mixed}"


# bank cards

def test_luhn_and_card_rules() -> None:
    assert all(luhn_valid(card) for card in CARDS)
    assert not luhn_valid(with_wrong_check_digit("622202123456789012"))
    assert valid_bank_card(grouped(CARD_19)) and valid_bank_card(grouped(CARD_16, "-"))
    assert not valid_bank_card(with_check_digit("20231231000123456"))  # a date first: an order number
    assert not valid_bank_card(with_check_digit("170123456789"))  # a millisecond timestamp
    assert not valid_bank_card(with_check_digit("62220212345678901234"))  # 21 digits


@pytest.mark.parametrize("card", CARDS)
def test_solid_card_numbers_in_context(card: str) -> None:
    assert redact_one(f"银行卡{card}退款没到") == "银行卡<BANK_CARD>退款没到"
    assert redact_one(f"{card} 是我的卡号") == "<BANK_CARD> 是我的卡号"
    assert redact_one(f"退款请打到 {card}") == "退款请打到 <BANK_CARD>"
    assert redact_one(f"卡号：{card}。") == "卡号：<BANK_CARD>。"


@pytest.mark.parametrize("card", [CARD_13, CARD_16, CARD_16_VISA, CARD_19])
@pytest.mark.parametrize("separator", [" ", "-"])
def test_grouped_card_numbers(card: str, separator: str) -> None:
    written = grouped(card, separator)
    out, counts = redact(f"卡号 {written} 退款没到", f"{written}")
    assert out == ["卡号 <BANK_CARD> 退款没到", "<BANK_CARD>"]
    assert counts == [{"bank_card": 1}, {"bank_card": 1}]


def test_card_near_misses_are_kept() -> None:
    kept = [
        f"订单号{with_wrong_check_digit('622202123456789012')}，一直没发货",  # fails Luhn
        f"订单编号 {with_wrong_check_digit('411111111111111')} 已签收",
        f"订单号{with_check_digit('202312310001234')}",  # passes Luhn but starts with a date
        f"时间戳{with_check_digit('170123456789')}",
        f"流水号{CARD_16_VISA}0000",  # a valid card inside a longer digit run
        f"批次00{CARD_19}7",
        f"{grouped(CARD_16)} 1234 5",  # another group follows: not a 16-digit card
        f"条码 {grouped(CARD_16)}-12",
        f"运单SF{CARD_16_VISA}，YT{CARD_13}",  # glued to letters: a tracking code
        f"校验码{CARD_16_VISA}abc",
        "价格¥4111.11，共6222元，2023-12-31下单，20231231发货，2023年买的",
        "快递单号773012345678，型号RTX4090，编码ABC-1381234",
        f"{grouped(CARD_16)[:9]}-{grouped(CARD_16)[10:]}",  # mixed separators
        f"子订单{CARD_16_VISA}-01，主单12-{CARD_13}",  # joined to more digits by a hyphen
    ]
    out, counts = redact(*kept)
    assert out == kept
    assert counts == [{}] * len(kept)


def test_18_digit_cards_but_not_id_shaped_numbers_that_pass_luhn() -> None:
    card = with_check_digit("62284800123456789")  # 18 digits, no birth date inside
    assert redact_one(f"卡{card}") == "卡<BANK_CARD>"
    id_shaped = with_check_digit("43010519900101123")  # region and birth date, but the ID check fails
    assert not valid_id_card(id_shaped) and luhn_valid(id_shaped)
    assert redact_one(f"流水号{id_shaped}") == f"流水号{id_shaped}"


# QQ numbers and WeChat ids

@pytest.mark.parametrize(("text", "expected"), [
    ("QQ 123456789", "QQ <IM_HANDLE>"),
    ("qq:123456789", "qq:<IM_HANDLE>"),
    ("有问题联系QQ：383161223（注明来意）", "有问题联系QQ：<IM_HANDLE>（注明来意）"),
    ("QQ号：12345", "QQ号：<IM_HANDLE>"),
    ("QQ号码 1234567890", "QQ号码 <IM_HANDLE>"),
    ("需要的联系我呗qq42950063", "需要的联系我呗qq<IM_HANDLE>"),
    ("我的QQ是284210953 敬待回复", "我的QQ是<IM_HANDLE> 敬待回复"),
    ("扣扣 123456789", "扣扣 <IM_HANDLE>"),
    ("企鹅号：987654321，晚上在线", "企鹅号：<IM_HANDLE>，晚上在线"),
    ("微信号 wxid_abc123", "微信号 <IM_HANDLE>"),
    ("微信：lucy_li88", "微信：<IM_HANDLE>"),
    ("加微信abc12345领取返现", "加微信<IM_HANDLE>领取返现"),
    ("vx: abc_123", "vx: <IM_HANDLE>"),
    ("VX：Abc-123", "VX：<IM_HANDLE>"),
    ("wx zhang_san", "wx <IM_HANDLE>"),
    ("加V信 xy9988ab 拿货", "加V信 <IM_HANDLE> 拿货"),
    ("威信：hello_2023", "威信：<IM_HANDLE>"),
    ("微信号：zhangsan", "微信号：<IM_HANDLE>"),
    ("WeChat: lily_2020 thanks", "WeChat: <IM_HANDLE> thanks"),
    ("QQ 123456789 有事联系", "QQ <IM_HANDLE> 有事联系"),
    ("有事联系微信lic770", "有事联系微信<IM_HANDLE>"),
    ("QQ/微信：tom_cat_99", "QQ/微信：<IM_HANDLE>"),
    ("便宜货，加V: xy9988 拿货更便宜", "便宜货，加V: <IM_HANDLE> 拿货更便宜"),
    ("+v 123456789", "+v <IM_HANDLE>"),
])
def test_im_handles_after_cue_words(text: str, expected: str) -> None:
    out, counts = redact(text)
    assert out == [expected]
    assert counts == [{"im_handle": 1}]


def test_a_mobile_number_after_a_wechat_cue_is_a_phone() -> None:
    out, counts = redact("加微信13812345678，vx 139-1234-5678")
    assert out == ["加微信<PHONE>，vx <PHONE>"] and counts == [{"phone": 2}]


def test_im_near_misses_are_kept() -> None:
    kept = [
        "wxWidgets 3.0 编译通过，QQbrowser123 也能用",  # Latin cue glued to a word
        "微信支付很方便，QQ音乐会员也送了",
        "微信 payment 失败，换了 WeChat Pay",  # letters alone after a bare cue
        "QQ 2023年注册的，vx 1234",  # too few digits for a QQ number
        "QQ群 123456789 里有人说",  # a group, not a person
        "vxabc123 是什么意思，加VIP8888 又是什么",
        "邮箱 wx_abc123@163.com",  # an e-mail, redacted as one below
    ]
    out, counts = redact(*kept)
    assert out == kept[:-1] + ["邮箱 <EMAIL>"]
    assert counts == [{}] * (len(kept) - 1) + [{"email": 1}]


# passports

@pytest.mark.parametrize(("text", "expected"), [
    ("护照E12345678", "护照<PASSPORT>"),
    ("护照号：G12345678，有效期十年", "护照号：<PASSPORT>，有效期十年"),
    ("护照号码 EA1234567", "护照号码 <PASSPORT>"),
    ("我的护照号是D1234567。", "我的护照号是<PASSPORT>。"),
    ("Passport No. E12345678", "Passport No. <PASSPORT>"),
    ("passport: e12345678", "passport: <PASSPORT>"),
    ("护照 123456789", "护照 <PASSPORT>"),
])
def test_passports_after_cue_words(text: str, expected: str) -> None:
    out, counts = redact(text)
    assert out == [expected] and counts == [{"passport": 1}]


def test_passport_near_misses_are_kept() -> None:
    kept = ["型号E12345678的镜头", "护照办理要15个工作日", "护照有效期到2030年", "护照 E123", "passports E12345678"]
    assert redact(*kept) == (kept, [{}] * len(kept))


# after normalization: full-width digits, letters and spaces

def test_full_width_forms_are_redacted_after_normalize() -> None:
    card = "".join(chr(ord(c) + 0xFEE0) for c in CARD_19)
    card_groups = "\u3000".join(card[i:i + 4] for i in range(0, len(card), 4))
    texts = [
        f"卡号：{card_groups}",
        f"卡号{card}退款",
        "ＱＱ：１２３４５６７８９",
        "护照号：Ｅ１２３４５６７８",
        "身份证" + "－".join((VALID_ID[:6], VALID_ID[6:14], VALID_ID[14:])).translate(
            {ord(c): ord(c) + 0xFEE0 for c in "0123456789X"}),
    ]
    normalized = Normalize(CONFIG.normalize)(batch_of(*texts)).batch
    result = RedactPii(CONFIG.pii)(normalized).batch
    assert result.column("text").to_pylist() == [
        "卡号：<BANK_CARD>", "卡号<BANK_CARD>退款", "QQ：<IM_HANDLE>", "护照号：<PASSPORT>", "身份证<ID_CARD>",
    ]


# configuration and counts

def test_pii_config_defaults_and_types() -> None:
    assert set(CONFIG.pii.types) == set(PLACEHOLDERS) - {"url"}
    sources = CONFIG.model_dump()["sources"]
    assert parse_config({"sources": sources, "pii": {"types": ["bank_card"]}}).pii.types == ["bank_card"]
    with pytest.raises(ValueError, match="pii.types"):
        parse_config({"sources": sources, "pii": {"types": ["credit_card"]}})


ALL_NEW_FORMS = f"卡{CARD_16} QQ 123456789 护照E12345678 邮箱 a@b.cn"


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_each_new_type_is_switchable(kind: str) -> None:
    out, counts = redact(ALL_NEW_FORMS, types=[kind])
    assert counts == [{kind: 1}]
    assert out[0].count("<") == 1 and PLACEHOLDERS[kind] in out[0]
    assert redact(ALL_NEW_FORMS, types=["email"]) == ([ALL_NEW_FORMS.replace("a@b.cn", "<EMAIL>")], [{"email": 1}])


def test_placeholders_are_distinct() -> None:
    assert len(set(PLACEHOLDERS.values())) == len(PLACEHOLDERS)


@pytest.mark.parametrize("engine", ["jieba", "rjieba"])
def test_segmentation_keeps_every_placeholder_whole(engine: str) -> None:
    from pipeline.text.segment import SegmenterSpec, segment_en, segment_zh, zh_cutter

    text = "".join(PLACEHOLDERS.values())
    spec = SegmenterSpec(hmm=True, user_dicts=(), engine=engine)
    assert segment_zh(f"退款到{text}了", zh_cutter(spec)) == ["退款", "到", *PLACEHOLDERS.values(), "了"]
    assert segment_en(f"card {text}") == ["card", *PLACEHOLDERS.values()]


def test_find_gives_spans_of_values_only() -> None:
    text = f"微信号：abc_123，卡{CARD_16}"
    spans = PiiRedactor(list(PLACEHOLDERS)).find(text)
    assert [(text[s:e], kind) for s, e, kind in spans] == [("abc_123", "im_handle"), (CARD_16, "bank_card")]


def test_stage_counts_redactions_per_type_over_text_and_title() -> None:
    batch = batch_of(ALL_NEW_FORMS, f"手机13812345678，卡号 {grouped(CARD_19)}", "没有个人信息",
                     titles=["联系QQ 123456789", None, None])
    result = RedactPii(CONFIG.pii)(batch)
    assert result.counts == {"pii:bank_card": 2, "pii:email": 1, "pii:im_handle": 2, "pii:passport": 1,
                             "pii:phone": 1}
    assert [json.loads(p) for p in result.batch.column("pii").to_pylist()] == [
        {"bank_card": 1, "email": 1, "im_handle": 2, "passport": 1}, {"bank_card": 1, "phone": 1}, {}]
    assert result.batch.column("title").to_pylist() == ["联系QQ <IM_HANDLE>", None, None]


def test_pii_disabled_adds_empty_counts() -> None:
    result = RedactPii(PiiConfig(enabled=False))(batch_of("a@b.cn"))
    assert result.batch.column("text").to_pylist() == ["a@b.cn"] and result.batch.column("pii").to_pylist() == ["{}"]
    assert result.counts == {}


def test_redaction_counts_reach_the_build_notes_per_source(tmp_path: Path) -> None:
    from helpers.steps import process_all, run_global_steps
    from pipeline.sources import plan_partitions

    lines = [
        f"退款一直没到，银行卡{CARD_19}，客服也不回复，真是太失望了，再也不会买了",
        "东西质量很好，物流也快，有问题的朋友可以加QQ 123456789 一起交流使用心得",
        f"护照号E12345678的订单至今没有发货，电话13812345678也打不通，差评",
    ]
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps({"t": line}, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    config = parse_config({"run_dir": str(tmp_path / "run"), "contracts": {"enabled": False}, "sources": [
        {"name": "reviews", "kind": "comments", "lang": "zh", "uri": str(path), "format": "jsonl",
         "fields": {"text": "t"}}]})
    source = config.sources[0]
    staged = process_all(config, plan_partitions(source, [str(path)]), tmp_path / "work")
    assembled, _ = run_global_steps(config, staged, tmp_path / "work", tmp_path / "staging")
    notes = assembled.notes_by_source["reviews"]
    assert {k: v for k, v in notes.items() if k.startswith("pii:")} == {
        "pii:bank_card": 1, "pii:im_handle": 1, "pii:passport": 1, "pii:phone": 1}
    assert redaction_rows(assembled.notes_by_source) == [
        ("reviews", "bank_card", 1), ("reviews", "im_handle", 1), ("reviews", "passport", 1), ("reviews", "phone", 1)]


def test_redaction_rows_for_inspect() -> None:
    notes = {"shop": {"pii:phone": 2, "pii:bank_card": 7, "minhash:x": 3}, "news": {"pii:email": 1}, "wiki": {}}
    assert redaction_rows(notes) == [("news", "email", 1), ("shop", "bank_card", 7), ("shop", "phone", 2)]
