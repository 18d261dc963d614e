"""Choosing the codec of a Chinese (or unknown-language) text file by decoding candidates and scoring the text.

A generic detector shown a few dozen bytes of Big5 often answers Shift-JIS or EUC-KR: the byte ranges of the
East Asian double-byte codecs overlap so much that almost any sample decodes without error in several of
them. What differs is what comes out. Decoded with the right codec, Chinese text is mostly common characters
of that codec's own repertoire (GB2312 for GBK/GB18030, Big5 level 1 for Big5) and CJK punctuation; decoded
with a wrong one it turns into rare characters, private-use code points, kana in a Chinese text, half-width
katakana, stray Greek or box-drawing symbols, or replacement characters. Each candidate's decoding is scored
by the share of such good characters among the non-ASCII ones, and the best candidate wins.
"""

from __future__ import annotations

import codecs
import unicodedata
from functools import lru_cache
from itertools import islice

# Codecs a Chinese file comes in when it is not UTF-8: GB18030 decodes GB2312 and GBK too (it is their
# superset), Big5-HKSCS decodes Big5 and the Hong Kong additions. Shift-JIS (as Windows' cp932) is only
# a candidate where the language is unknown: for a `zh` source, Japanese text is never the right answer.
ZH_CANDIDATES = ("gb18030", "big5hkscs")
AUTO_CANDIDATES = (*ZH_CANDIDATES, "cp932")
SCORED_CHARS = 16 * 1024  # non-ASCII characters scored per candidate: enough to settle any file
# Below this score no candidate reads as East Asian text (e.g. a Latin-1 file): leave it to the generic detector.
MIN_SCORE = 0.5

_GOOD, _RARE_HAN, _NEUTRAL, _WRONG_SCRIPT, _BAD = 1.0, 0.2, 0.0, -0.5, -1.0
# GB2312 level 1 (lead bytes 0xB0-0xD7) holds its 3,755 most common characters, Big5 level 1
# (0xA440-0xC67E) its 5,401 common ones; each covers well over 99% of running text in its script.
_GB2312_LEVEL1_LEADS = (0xB0, 0xD7)
_BIG5_LEVEL1 = (0xA440, 0xC67E)
_JIS_LEVEL1 = (0x889F, 0x9872)  # in Shift-JIS: JIS X 0208 level 1 kanji


def best_cjk_encoding(sample: bytes, lang: str) -> tuple[str, float] | None:
    """The candidate codec whose decoding of `sample` reads best, with its score in [-1, 1].

    None when the sample has no non-ASCII byte (any ASCII-compatible codec reads it the same).
    """
    candidates = AUTO_CANDIDATES if lang == "auto" else ZH_CANDIDATES
    scored = [(encoding, score_decoding(sample, encoding)) for encoding in candidates]
    scored = [(encoding, score) for encoding, score in scored if score is not None]
    if not scored:
        return None
    # max keeps the first of equal scores: the candidates are listed in order of preference
    return max(scored, key=lambda item: item[1])


def score_decoding(sample: bytes, encoding: str) -> float | None:
    """Mean goodness of the non-ASCII characters of `sample` decoded with `encoding`; None when there are none."""
    # A sample cut in the middle of a character must not cost the candidate: the incremental decoder
    # holds back an incomplete last sequence instead of replacing it.
    text = codecs.getincrementaldecoder(encoding)("replace").decode(sample, final=False)
    scored = (char for char in text if ord(char) > 0x7F or _is_control(char))
    weights = [_char_weight(char, encoding) for char in islice(scored, SCORED_CHARS)]
    return sum(weights) / len(weights) if weights else None


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and (ord(char) < 0x20 or ord(char) == 0x7F)


@lru_cache(maxsize=1 << 16)
def _char_weight(char: str, encoding: str) -> float:
    code = ord(char)
    if char == "\ufffd" or _is_control(char) or 0x80 <= code <= 0x9F or 0xE000 <= code <= 0xF8FF:
        return _BAD  # replacement, control or private-use: bytes that were not meant for this codec
    if _is_native_common(char, encoding):
        return _GOOD
    if 0xFF61 <= code <= 0xFF9F:
        return _BAD  # half-width katakana: what double-byte text becomes when read one byte at a time
    if 0x3040 <= code <= 0x30FF or 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return _WRONG_SCRIPT  # kana or hangul that the codec's own language does not use
    if unicodedata.name(char, "").startswith("CJK "):
        return _RARE_HAN
    return _NEUTRAL


def _is_native_common(char: str, encoding: str) -> bool:
    """A character that text written in `encoding`'s language commonly holds, in that codec's own repertoire."""
    code = ord(char)
    if 0x3000 <= code <= 0x303F or 0xFF01 <= code <= 0xFF5E:
        return True  # CJK and full-width punctuation
    if encoding == "gb18030":
        return _double_byte_in(char, "gb2312", lead_range=_GB2312_LEVEL1_LEADS)
    if encoding == "big5hkscs":
        return _double_byte_in(char, "big5", code_range=_BIG5_LEVEL1)
    if encoding == "cp932":
        return 0x3041 <= code <= 0x30FE or _double_byte_in(char, "cp932", code_range=_JIS_LEVEL1)
    return True


def _double_byte_in(
    char: str, encoding: str, lead_range: tuple[int, int] | None = None, code_range: tuple[int, int] | None = None
) -> bool:
    try:
        encoded = char.encode(encoding)
    except UnicodeEncodeError:
        return False
    if len(encoded) != 2:
        return False
    if lead_range is not None:
        return lead_range[0] <= encoded[0] <= lead_range[1]
    value = int.from_bytes(encoded, "big")
    return code_range is not None and code_range[0] <= value <= code_range[1]
