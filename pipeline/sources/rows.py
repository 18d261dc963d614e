"""Document and reject rows as every reader builds them, so ids, positions and raw-text caps agree."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.config import SourceConfig
from pipeline.schema import document_id

# A reject keeps what could be recovered of its raw record for audit; a 50 MB line is not worth keeping whole.
REJECT_TEXT_CHARS = 4000

# Control characters other than tab, newline and carriage return never occur in real text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Lone surrogates are how undecodable bytes survive decoding with errors="surrogateescape".
_ESCAPED_BYTE = re.compile(r"[\udc80-\udcff]")
_SUSPECT = re.compile(f"{_CONTROL.pattern}|{_ESCAPED_BYTE.pattern}")  # almost no record has either
_BINARY_FRACTION = 0.3  # random bytes decoded as UTF-8 come out about half escaped


def native_lang(source: SourceConfig) -> str | None:
    """The language a source declares; null for `auto`, so language identification decides later."""
    return None if source.lang == "auto" else source.lang


def document_row(
    source: SourceConfig, native_id: str, text: str, meta: Mapping[str, Any], **fields: Any
) -> dict[str, Any]:
    return {
        "id": document_id(source.name, native_id),
        "source": source.name,
        "kind": source.kind,
        "lang": native_lang(source),
        "text": text,
        "meta": dict(meta),
        **fields,
    }


def reject_row(
    source: SourceConfig,
    native_id: str,
    reason: str,
    raw: str,
    meta: Mapping[str, Any],
    *,
    outcome: str = "rejected",
    title: str | None = None,
) -> dict[str, Any]:
    """A record dropped while reading; `meta` must hold `file` and `position`."""
    text, meta = _capped(printable(raw), dict(meta))
    return {
        "id": document_id(source.name, native_id),
        "source": source.name,
        "kind": source.kind,
        "lang": native_lang(source),
        "title": title,
        "text": text,
        "outcome": outcome,
        "reason": reason,
        "stage": "read",
        "file": meta["file"],
        "position": str(meta["position"]),
        "meta": meta,
    }


def _capped(text: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if len(text) <= REJECT_TEXT_CHARS:
        return text, meta
    meta["text_truncated_from_chars"] = len(text)
    return text[:REJECT_TEXT_CHARS], meta


def printable(text: str) -> str:
    """Raw text made safe to store: escaped bytes shown as U+FFFD, control characters as \\xNN."""
    text = _ESCAPED_BYTE.sub("\ufffd", text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def undecodable_reason(text: str, encoding: str) -> str | None:
    """Why a decoded record cannot be used as text, or None when it can.

    Mostly undecodable or control characters means the bytes were never text; a few means text with
    damaged bytes, named after the encoding that failed.
    """
    if not _SUSPECT.search(text):
        return None
    bad = len(_ESCAPED_BYTE.findall(text))
    controls = len(_CONTROL.findall(text))
    if controls or bad:
        if "\x00" in text or (bad + controls) > _BINARY_FRACTION * max(len(text), 1):
            return "binary_garbage"
        if bad:
            return "invalid_utf8" if encoding.replace("_", "-").lower().startswith("utf-8") else "invalid_encoding"
    return None


def strip_bom(value: str) -> str:
    """Byte-order marks turn up inside fields of files concatenated from several exports."""
    return value.replace("\ufeff", "")


def parse_date(raw: Any) -> datetime | None:
    """A date in any common form (ISO 8601, RFC 2822, Unix seconds) as UTC; None when it cannot be read.

    Dates without a zone are taken as UTC: the sources do not say otherwise, and a fixed rule keeps builds
    reproducible.
    """
    if raw is None or raw == "":
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw, UTC).replace(microsecond=0)
    text = str(raw).strip()
    parsed = _parse_iso(text) or _parse_rfc2822(text)
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(microsecond=0)


def _parse_iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("/", "-"))
    except ValueError:
        return None


def _parse_rfc2822(text: str) -> datetime | None:
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None


def read_date(raw_date: Any, meta: dict[str, Any]) -> datetime | None:
    """Parse a record's date; an unreadable one is kept in meta so the loss is visible."""
    parsed = parse_date(raw_date)
    if parsed is None and raw_date not in (None, ""):
        meta["unparsed_date"] = str(raw_date)
    return parsed
