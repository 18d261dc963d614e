"""Stage 1, normalize: one canonical form of the text before anything looks at it.

Everything runs as pyarrow.compute kernels over the whole column (RE2 regexes, ICU-free NFKC), except
`html.unescape`, which runs in Python only on the rows that contain an entity.

Policy for Chinese punctuation: NFKC folds full-width ASCII (ＡＢＣ１２３＠) to half-width, which we want,
but it also turns Chinese punctuation ，！？：；（）～… into ASCII , ! ? : ; ( ) ~ ..., which changes how
Chinese text looks and how jieba and tokenizers split it (datatrove keeps `fix_character_width=False`
for the same reason). So those characters are swapped for private-use stand-ins before NFKC and restored
after it. 。、「」《》【】“” are left alone by NFKC anyway. ASCII punctuation is never widened.

Emphasis is normalised, not punished: a run of one punctuation mark, symbol, emoji or interjection
("！！！！！！", "。。。。", "…………", "......", "哈哈哈哈哈哈", "👍👍👍👍") is cut to `emphasis_max_run` units. Reviews
say how strongly someone feels that way, and negative ones more than positive ones, so dropping such
texts later would skew what is left. Emphatic are ASCII and Chinese punctuation marks, the configured
interjections and other symbols (Unicode So: emoji, ★, ♥). RE2 cannot match "the same character
again", so one RE2 scan for a run of each emphatic mark picks the few rows that have one, and Python's
`re` collapses only those rows.

Whole HTML pages never reach this stage: the news reader extracts their text with trafilatura. What is
cleaned here are remnants inside otherwise plain text: entities (&amp; &nbsp; &#12290;), stray tags
(<br>, <p class=..>) and comments.
"""

from __future__ import annotations

import html
import re
import string
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import NormalizeConfig
from pipeline.stages import StageResult, set_column

# Chinese punctuation that NFKC would fold to ASCII, and the private-use code points that hold its place.
_CJK_PUNCT = "，！？：；（）～…"
_STAND_INS = "".join(chr(0xF0000 + i) for i in range(len(_CJK_PUNCT)))

_ENTITY = r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
_LINE_BREAK_TAG = r"(?i)<(?:br\s*/?|/p|/div|/li|/h[1-6]|/tr)\s*>"
_TAG = r"(?s)<!--.*?-->|</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>"
# C0/C1 controls except tab and newline; zero-width spaces and joiners, bidi marks, word joiner,
# invisible operators, BOM, soft hyphen. Removing ZWJ splits emoji ZWJ sequences into their emoji.
_INVISIBLE = r"[\x{00}-\x{08}\x{0B}\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}\x{AD}\x{200B}-\x{200F}\x{202A}-\x{202E}\x{2060}-\x{2064}\x{FEFF}]"
_EMPHATIC_MARKS = string.punctuation + "，。！？：；、…～—·「」『』《》【】（）“”‘’￥"
# One unit of emphasis: a character, with the variation selector or skin-tone modifier an emoji may carry.
_REPEATED_UNIT = r"(.[\ufe0f\U0001F3FB-\U0001F3FF]?)\1"


class Normalize:
    name = "normalize"
    reads = ("text", "title")
    adds: tuple[str, ...] = ()  # replaces text and title

    def __init__(self, config: NormalizeConfig) -> None:
        self.config = config
        self.emphasis = _EmphasisCollapser(config.emphasis_max_run, config.emphasis_interjections)

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        collapsed = 0
        for column in ("text", "title"):
            texts, runs = self.normalize(batch.column(column))
            batch = set_column(batch, column, texts)
            collapsed += runs
        return StageResult(batch, counts={"normalize:emphasis_collapsed": collapsed} if collapsed else None)

    def normalize(self, texts: pa.Array) -> tuple[pa.Array, int]:
        """The normalised texts, and how many emphasis runs were cut short."""
        if self.config.strip_html:
            texts = _strip_html(texts)
        texts = _unicode_form(texts, self.config.unicode_form, self.config.keep_cjk_punctuation)
        texts = pc.replace_substring_regex(texts, _INVISIBLE, "")
        texts, collapsed = self.emphasis(texts)
        return _collapse_whitespace(texts), collapsed


class _EmphasisCollapser:
    """Cuts runs of one punctuation mark, symbol, emoji or interjection to `max_run` units."""

    def __init__(self, max_run: int | None, interjections: str) -> None:
        self.max_run = max_run
        self.emphatic = frozenset(_EMPHATIC_MARKS + interjections)
        if max_run is not None:
            # RE2: a literal alternation of each mark's run, which scans fast, and runs of emoji
            runs = "|".join(re.escape(c) * (max_run + 1) for c in sorted(self.emphatic))
            self.candidate = rf"{runs}|[\p{{So}}\x{{FE0F}}\x{{1F3FB}}-\x{{1F3FF}}]{{{max_run + 1},}}"
            self.run = re.compile(f"{_REPEATED_UNIT}{{{max_run},}}", re.S)

    def __call__(self, texts: pa.Array) -> tuple[pa.Array, int]:
        if self.max_run is None:
            return texts, 0
        candidates = pc.fill_null(pc.match_substring_regex(texts, self.candidate), False)
        if not pc.any(candidates).as_py():
            return texts, 0
        collapsed = 0

        def shorten(match: re.Match[str]) -> str:
            nonlocal collapsed
            unit = match.group(1)
            if unit[0] not in self.emphatic and unicodedata.category(unit[0]) != "So":
                return match.group(0)  # a run of letters ("差差差差") is left to the repetition rule
            collapsed += 1
            return unit * self.max_run

        values = [self.run.sub(shorten, v) if c else v for v, c in zip(texts.to_pylist(), candidates.to_pylist())]
        return pa.array(values, pa.string()), collapsed


def _strip_html(texts: pa.Array) -> pa.Array:
    has_entity = pc.fill_null(pc.match_substring_regex(texts, _ENTITY), False)
    if pc.any(has_entity).as_py():
        values = texts.to_pylist()
        flags = has_entity.to_pylist()
        texts = pa.array([html.unescape(v) if f else v for v, f in zip(values, flags)], pa.string())
    texts = pc.replace_substring_regex(texts, _LINE_BREAK_TAG, "\n")
    return pc.replace_substring_regex(texts, _TAG, "")


def _unicode_form(texts: pa.Array, form: str, keep_cjk_punctuation: bool) -> pa.Array:
    if not keep_cjk_punctuation or form != "NFKC":
        return pc.utf8_normalize(texts, form=form)
    for punct, stand_in in zip(_CJK_PUNCT, _STAND_INS):
        texts = pc.replace_substring(texts, punct, stand_in)
    texts = pc.utf8_normalize(texts, form=form)
    for punct, stand_in in zip(_CJK_PUNCT, _STAND_INS):
        texts = pc.replace_substring(texts, stand_in, punct)
    return texts


def _collapse_whitespace(texts: pa.Array) -> pa.Array:
    """Runs of spaces become one space; lines are trimmed; blank-line runs become one paragraph break."""
    texts = pc.replace_substring_regex(texts, r"\r\n?|[\x{2028}\x{2029}]", "\n")
    texts = pc.replace_substring_regex(texts, r"[\t\p{Zs}]+", " ")  # Zs: U+3000, NBSP, em space..
    texts = pc.replace_substring_regex(texts, r" ?\n ?", "\n")
    texts = pc.replace_substring_regex(texts, r"\n{3,}", "\n\n")
    return pc.utf8_trim_whitespace(texts)
