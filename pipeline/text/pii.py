"""Stage 3, PII: e-mail addresses, phone numbers, Chinese resident ID numbers, IP addresses and
(optionally) URLs become typed placeholders; the counts per type go into the `pii` column as JSON.

One combined regex scans a text once; a match callback validates what a regex alone cannot (the ID
checksum and birth date, IPv6 syntax, phone digit counts) and leaves a failed candidate as it is. Digit
patterns are fenced by lookarounds so that they never match inside a longer run of digits or letters:
an 18-digit order number, a tracking code SF1381234567890 or a hex hash stays intact. Only rows that a
cheap vectorized RE2 test marks as candidates reach Python at all.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import PiiConfig
from pipeline.stages import StageResult, set_column

PLACEHOLDERS = {"url": "<URL>", "email": "<EMAIL>", "id_card": "<ID_CARD>", "ip": "<IP>", "phone": "<PHONE>"}

_NOT_AFTER = r"(?<![0-9A-Za-z])"  # a number glued to letters or digits is a code, not a phone or ID
_NOT_BEFORE = r"(?![0-9A-Za-z])"
# Listed in matching priority: a URL may hold an e-mail or IP, an e-mail may hold a QQ number, an ID
# number holds eleven digits that look like a mobile number.
_PATTERNS = {
    "url": r"(?:https?://|www\.)[^\s<>\"'，。！？、；：（）「」【】《》]+",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
    "id_card": _NOT_AFTER
    + r"[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"
    + _NOT_BEFORE,
    "ip": r"(?<![0-9A-Za-z.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?!\.?[0-9])"
    r"|(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:])",
    "phone": _NOT_AFTER
    + r"(?:"
    + r"(?:(?:\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}"  # mainland mobile, 138 1234 5678
    + r"|(?:\(0[0-9]{2,3}\) ?|0[0-9]{2,3}[ -])[0-9]{7,8}"  # mainland landline, 010-12345678, (0755)1234567
    + r"|\+[1-9][0-9]{0,2}(?:[ -]?\(?[0-9]{1,4}\)?){2,5}"  # international, +44 20 7946 0958
    + r"|\(?[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4}"  # North American, (415) 555-2671
    + r")"
    + _NOT_BEFORE,
}
# Anything that could hold one of the above: an @, a long digit run with separators, colons between hex
# digits, a scheme or www. Rows without it skip the Python regex.
_CANDIDATE = r"@|[0-9][0-9 ().-]{5,}[0-9]|[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:|://|www\."

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CODES = "10X98765432"
_URL_TRAILING = ".,;:!?)]}'\""


def valid_id_card(number: str) -> bool:
    """A PRC resident ID: ISO 7064 MOD 11-2 check character and a real birth date.

    The date is checked against the calendar, not against today, so a build gives the same output on
    any day.
    """
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    if _ID_CHECK_CODES[total % 11] != number[17].upper():
        return False
    try:
        datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return True


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


def _split_url(text: str) -> tuple[str, str]:
    """A URL without the sentence punctuation that the pattern swallowed at its end."""
    stripped = text.rstrip(_URL_TRAILING)
    return stripped, text[len(stripped):]


class PiiRedactor:
    """Replaces the configured PII types in one text and counts them."""

    def __init__(self, types: list[str]) -> None:
        self.types = [t for t in PLACEHOLDERS if t in types]  # priority order, whatever the config order
        self.regex = re.compile("|".join(f"(?P<{t}>{_PATTERNS[t]})" for t in self.types))

    def redact(self, text: str, counts: Counter[str]) -> str:
        def replace(match: re.Match[str]) -> str:
            kind = match.lastgroup
            found = match.group()
            if kind == "url":
                found, trailing = _split_url(found)
                counts[kind] += 1
                return PLACEHOLDERS[kind] + trailing
            if not _VALIDATORS.get(kind, _always)(found):
                return found
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return self.regex.sub(replace, text)


def _always(_: str) -> bool:
    return True


_VALIDATORS: dict[str, Callable[[str], bool]] = {"id_card": valid_id_card, "ip": _valid_ip, "phone": _valid_phone}


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
        return StageResult(set_column(batch, "pii", pa.array(found, pa.string())))

    def _redact_column(self, texts: pa.Array, counts: list[Counter[str]]) -> pa.Array:
        candidates = pc.fill_null(pc.match_substring_regex(texts, _CANDIDATE), False)
        if not pc.any(candidates).as_py():
            return texts
        values = texts.to_pylist()
        for i, is_candidate in enumerate(candidates.to_pylist()):
            if is_candidate:
                values[i] = self.redactor.redact(values[i], counts[i])
        return pa.array(values, pa.string())
