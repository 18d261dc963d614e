"""Stage 3, PII: personal data becomes typed placeholders; the counts per type go into the `pii` column
as JSON, and their sums into the stage's counts ("pii:<type>") for the build's notes.

Types, in matching priority: URLs (off by default), e-mail addresses, mainland resident ID numbers (solid
or 6-8-4 groups, checksum and birth date valid), bank card numbers (13-19 digits, solid or in groups of
four, Luhn-valid, with a card network's first digits), IP addresses, phone numbers, QQ numbers and WeChat
ids after a cue word (QQ, 扣扣, 微信号, vx ...), passport numbers after a cue word (护照, passport).

One combined regex scans a text once; a match is then checked by what a regex alone cannot check (a
checksum, a birth date, IPv6 syntax, digit counts) and a failed candidate stays as it is. Digit patterns
are fenced by lookarounds so that they never match inside a longer run of digits or letters: an 18-digit
order number, a tracking code SF1381234567890 or a hex hash stays intact. For cue-word types only the value
is replaced, the cue stays ("微信号：<IM_HANDLE>"), so later stages still see what was offered. Only rows
that a cheap vectorized RE2 test marks as candidates reach Python at all.

The text is expected after the normalize stage: NFKC has folded full-width digits and letters to ASCII and
collapsed runs of spaces (U+3000 included) into one.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import PiiConfig
from pipeline.stages import StageResult, set_column

PLACEHOLDERS = {
    "url": "<URL>",
    "email": "<EMAIL>",
    "id_card": "<ID_CARD>",
    "bank_card": "<BANK_CARD>",
    "ip": "<IP>",
    "phone": "<PHONE>",
    "im_handle": "<IM_HANDLE>",
    "passport": "<PASSPORT>",
}

_NOT_AFTER = r"(?<![0-9A-Za-z])"  # a number glued to letters or digits is a code, not a phone or ID
_NOT_BEFORE = r"(?![0-9A-Za-z])"
# A number written in groups goes on past a single space or hyphen: 6222 0212 3456 7890 1234 5 is no card.
_NOT_AFTER_GROUPS = r"(?<![0-9A-Za-z])(?<![0-9][ -])"
_NOT_BEFORE_GROUPS = r"(?![0-9A-Za-z])(?![ -][0-9])"
# Between a cue word and its value: "QQ 123", "vx:abc", "微信号：abc", "我的QQ是123".
_CUE_SEPARATOR = r"(?: ?[:：] ?| |是|为)"
# A handle ends where ASCII word characters end; an @ or a dotted tail makes it part of an e-mail or host.
_HANDLE_END = r"(?![0-9A-Za-z_@-])(?!\.[0-9A-Za-z])"
# Latin cue words only at a word start: "wxWidgets" and "QQbrowser" are not cues.
_IM_CUE = (
    r"(?P<im_cue>(?<![A-Za-z0-9])(?:QQ|qq|Qq|VX|vx|Vx|vX|WX|wx|Wx|WeChat|wechat|Wechat|WECHAT|weixin)"
    r"|扣扣|企鹅|微信|[Vv]信|威信|薇信|(?:加|\+)[Vv](?![A-Za-z]))"
)

# Listed in matching priority: a URL may hold an e-mail or IP, an e-mail may hold a QQ number, an ID
# number holds eleven digits that look like a mobile number.
_PATTERNS = {
    "url": r"(?:https?://|www\.)[^\s<>\"'，。！？、；：（）「」【】《》]+",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
    "id_card": _NOT_AFTER
    + r"[1-9][0-9]{5}(?P<id_sep>[ -]?)(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
    + r"(?P=id_sep)[0-9]{3}[0-9Xx]"
    + _NOT_BEFORE,
    "bank_card": _NOT_AFTER
    + r"(?<![0-9]-)[0-9]{13,19}(?!-[0-9])"  # digits joined by a hyphen are one code: 6225...874-01
    + _NOT_BEFORE
    + r"|"
    + _NOT_AFTER_GROUPS
    + r"[0-9]{4}(?P<card_sep>[ -])[0-9]{4}(?:(?P=card_sep)[0-9]{4}){1,3}(?:(?P=card_sep)[0-9]{1,3})?"
    + _NOT_BEFORE_GROUPS,
    "ip": r"(?<![0-9A-Za-z.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?!\.?[0-9])"
    r"|(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:])",
    "phone": _NOT_AFTER
    + r"(?:"
    + r"(?:(?:\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}"  # mainland mobile, 138 1234 5678
    + r"|(?:[(（]0[0-9]{2,3}[)）] ?|0[0-9]{2,3}[ -])[0-9]{7,8}"  # mainland landline, 010-12345678, （0755）1234567
    + r"|\+[1-9][0-9]{0,2}(?:[ -]?\(?[0-9]{1,4}\)?){2,5}"  # international, +44 20 7946 0958
    + r"|\(?[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4}"  # North American, (415) 555-2671
    + r")"
    + _NOT_BEFORE,
    # a QQ number is 5-12 digits; a WeChat id 6-20 letters, digits, _ and -, starting with a letter
    "im_handle": _IM_CUE
    + r"(?P<im_mark>(?:号码?|账号|ID|id)?"
    + _CUE_SEPARATOR
    + r"?)(?P<im_value>wxid_[A-Za-z0-9_-]{4,30}|[1-9][0-9]{4,11}|[A-Za-z][A-Za-z0-9_-]{5,19})"
    + _HANDLE_END,
    # mainland passports: E12345678, EA1234567, G12345678, D/S/P + 7 digits; others are 8-9 digits
    "passport": r"(?:护照|(?<![A-Za-z])(?:[Pp]assport|PASSPORT))"
    + r"(?:号码?|编号| ?(?:[Nn]o\.?|[Nn]umber))?"
    + _CUE_SEPARATOR
    + r"?(?P<passport_value>[A-Za-z]{1,2}[0-9]{6,9}|[0-9]{8,9})"
    + _NOT_BEFORE,
}
# Types whose match starts at a cue word; the group holding the value that is replaced.
_VALUE_GROUPS = {"im_handle": "im_value", "passport": "passport_value"}
# Anything that could hold one of the above: an @, a long digit run with separators, colons between hex
# digits, a scheme or www, a contact cue word. Rows without it skip the Python regex.
_CANDIDATE = r"@|[0-9][0-9 ().-]{5,}[0-9]|[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:|://|www\."
# Handles of letters have no digit run to catch them; a passport number always has one.
_IM_CANDIDATE = r"(?i:qq|扣扣|企鹅|微信|[vw]x|v信|威信|薇信|wechat|weixin|加v|\+v)"

NOTE_PREFIX = "pii:"  # the stage's counts are "pii:<type>", summed per source into the build's notes

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CODES = "10X98765432"
# First digits of card networks issuing in mainland China and abroad: Amex/JCB/Diners 3, Visa 4,
# Mastercard 5 and 22-27, UnionPay and Discover 6, mainland domestic cards 9 (9558, 95599 ...).
# Order numbers starting with a date (2023...) or a timestamp (17...) are not cards.
_CARD_NETWORK = re.compile(r"[3-69]|2[2-7]")
_URL_TRAILING = ".,;:!?)]}'\""


class Redaction(NamedTuple):
    start: int
    end: int
    kind: str


def valid_id_card(number: str) -> bool:
    """A PRC resident ID: ISO 7064 MOD 11-2 check character and a real birth date.

    Spaces or hyphens between the groups are ignored. The date is checked against the calendar, not
    against today, so a build gives the same output on any day.
    """
    number = _without_separators(number)
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    if _ID_CHECK_CODES[total % 11] != number[17].upper():
        return False
    try:
        datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return True


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check that every payment card number carries in its last digit."""
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def valid_bank_card(number: str) -> bool:
    digits = _without_separators(number)
    return 13 <= len(digits) <= 19 and _CARD_NETWORK.match(digits) is not None and luhn_valid(digits)


def _without_separators(number: str) -> str:
    return number.replace(" ", "").replace("-", "")


def _valid_ip(text: str) -> bool:
    if ":" not in text:
        return True  # the IPv4 pattern already bounds every octet
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False  # times like 12:30:45, ratios, code
    return sum(1 for group in text.split(":") if group) >= 2  # "::1" and "::" say nothing about anyone


def _valid_phone(text: str) -> bool:
    return 7 <= sum(c.isdigit() for c in text) <= 15  # ITU E.164: at most 15 digits


def _valid_im_handle(match: re.Match[str]) -> bool:
    value, mark = match.group("im_value"), match.group("im_mark")
    if value.isdigit():
        return True  # a QQ number
    if not mark and match.group("im_cue")[-1].isascii():
        return False  # letters glued to a Latin cue are one word: vxabc123, 加VIP888 say nothing sure
    # A word of letters alone after a bare "微信" is too often English ("微信 WeChat", "微信 payment"):
    # it counts as a handle only when 号, ID, a colon, 是 or 为 introduces it.
    return not value.isalpha() or bool(mark.strip())


_VALIDATORS: dict[str, Callable[[re.Match[str]], bool]] = {
    "id_card": lambda m: valid_id_card(m.group()),
    "bank_card": lambda m: valid_bank_card(m.group()),
    "ip": lambda m: _valid_ip(m.group()),
    "phone": lambda m: _valid_phone(m.group()),
    "im_handle": _valid_im_handle,
}


def _always(_: re.Match[str]) -> bool:
    return True


class PiiRedactor:
    """Finds and replaces the configured PII types in one text and counts them."""

    def __init__(self, types: list[str]) -> None:
        self.types = [t for t in PLACEHOLDERS if t in types]  # priority order, whatever the config order
        self.regex = re.compile("|".join(f"(?P<{t}>{_PATTERNS[t]})" for t in self.types))
        # each type on its own, to read the value after a cue word as what it would be without the cue
        self.alone = {t: re.compile(f"(?P<{t}>{_PATTERNS[t]})") for t in self.types if t not in _VALUE_GROUPS}
        self.candidate = _CANDIDATE + ("|" + _IM_CANDIDATE if "im_handle" in self.types else "")

    def find(self, text: str) -> list[Redaction]:
        """The spans to replace, in text order, without overlaps."""
        found = (self._classify(match) for match in self.regex.finditer(text))
        return [redaction for redaction in found if redaction is not None]

    def redact(self, text: str, counts: Counter[str]) -> str:
        parts: list[str] = []
        position = 0
        for start, end, kind in self.find(text):
            parts += [text[position:start], PLACEHOLDERS[kind]]
            counts[kind] += 1
            position = end
        if not parts:
            return text
        parts.append(text[position:])
        return "".join(parts)

    def _classify(self, match: re.Match[str]) -> Redaction | None:
        kind = match.lastgroup
        start, end = match.span(_VALUE_GROUPS.get(kind, kind))
        if kind == "url":
            return Redaction(start, start + len(match.group().rstrip(_URL_TRAILING)), kind)
        for reading, reading_match in self._readings(kind, match, match.string[start:end]):
            if _VALIDATORS.get(reading, _always)(reading_match):
                return Redaction(start, end, reading)
        return None

    def _readings(self, kind: str, match: re.Match[str], value: str) -> Iterator[tuple[str, re.Match[str]]]:
        """The types `value` may be, in the order they are tried.

        A value after a cue word is first what it would be on its own: a mobile number after 微信 is a
        phone. Any other candidate is only what its pattern says: an ID-shaped number that fails the ID
        check is kept, even when it happens to pass the Luhn check (one in ten does).
        """
        if kind in _VALUE_GROUPS:
            for other, pattern in self.alone.items():
                other_match = pattern.fullmatch(value)
                if other_match is not None:
                    yield other, other_match
        yield kind, match


class RedactPii:
    name = "pii"
    reads = ("text", "title")
    adds = ("pii",)  # and replaces text and title

    def __init__(self, config: PiiConfig) -> None:
        self.config = config
        self.redactor = PiiRedactor(list(config.types)) if config.enabled and config.types else None

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        counts = [Counter() for _ in range(batch.num_rows)]
        if self.redactor is not None:
            for column in ("text", "title"):
                batch = set_column(batch, column, self._redact_column(batch.column(column), counts))
        found = [json.dumps(dict(sorted(c.items())), separators=(",", ":")) if c else "{}" for c in counts]
        totals: Counter[str] = Counter()
        for row_counts in counts:
            totals.update(row_counts)
        return StageResult(
            set_column(batch, "pii", pa.array(found, pa.string())),
            counts={NOTE_PREFIX + kind: n for kind, n in sorted(totals.items())},
        )

    def _redact_column(self, texts: pa.Array, counts: list[Counter[str]]) -> pa.Array:
        candidates = pc.fill_null(pc.match_substring_regex(texts, self.redactor.candidate), False)
        if not pc.any(candidates).as_py():
            return texts
        values = texts.to_pylist()
        for i, is_candidate in enumerate(candidates.to_pylist()):
            if is_candidate:
                values[i] = self.redactor.redact(values[i], counts[i])
        return pa.array(values, pa.string())


def redaction_rows(notes_by_source: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str, int]]:
    """(source, PII type, redactions) from a manifest's notes, most frequent type first in each source."""
    rows = []
    for source, notes in sorted(notes_by_source.items()):
        found = [(kind.removeprefix(NOTE_PREFIX), n) for kind, n in notes.items() if kind.startswith(NOTE_PREFIX)]
        rows += [(source, kind, n) for kind, n in sorted(found, key=lambda item: (-item[1], item[0]))]
    return rows
