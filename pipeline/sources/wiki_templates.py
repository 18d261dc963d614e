"""Inline templates that stand for words in a sentence, and the words a reader sees where they stand.

A template is looked up by its name, compared case-insensitively with spaces and underscores alike, so the
names a wiki redirects to one template are listed beside it. A rendering is either a function of the
template's arguments or a pattern (what `wiki.inline_templates` in the config adds):

- `{1}` is positional argument 1, `{lt}` the named argument `lt`; `{lt|1}` the first of them that is given
  and not blank;
- `[...]` is an optional part, left out when an argument inside it is missing: `{1}[ ({2})]`;
- everything else is written as it stands.

Templates not in the table render as nothing: infoboxes, navigation boxes, citations and maintenance tags
carry no sentence words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from babel import Locale, UnknownLocaleError

# A template's arguments, rendered to plain text: "1", "2", ... for positional ones, their names otherwise.
Arguments = Mapping[str, str]
Rendering = Callable[[Arguments, str], str]  # (arguments, the wiki's language) -> text

_ARGUMENT = re.compile(r"\{([^{}\[\]]+)\}")
_SYNTAX = re.compile(r"(\{[^{}\[\]]*\}|\[|\])")
_LANGUAGE_CODE = r"[a-z]{2,3}(?:-[a-z0-9]+)*"
_NUMBER = re.compile(r"^[-+−–]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:e[-+]?\d+)?(?:[+/]\d+(?:/\d+)?)?$", re.IGNORECASE)
# what {{convert}} accepts between the numbers of a range ("10|to|20|km"): written as they stand
# units written as a reader sees them where the template's code is not the symbol itself
_TEMPERATURE_UNITS = {"C": "°C", "F": "°F"}
_CONVERT_RANGE_WORDS = frozenset({"-", "–", "to", "and", "or", "by", "x", "×", "+", "+/-", "±", "to(-)", "and(-)"})


def template_key(name: str) -> str:
    """How a template's name is compared: case, spaces, underscores and a `Template:` prefix do not count."""
    key = " ".join(name.replace("_", " ").split()).lower()
    for prefix in ("template:", "模板:", "模板："):
        if key.startswith(prefix):
            return key[len(prefix):].strip()
    return key


# ---- patterns -----------------------------------------------------------------------------------------


class PatternError(ValueError):
    """A rendering pattern that cannot be read: unbalanced brackets or an empty argument name."""


@dataclass(frozen=True)
class _Argument:
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Optional:
    parts: tuple[str | _Argument | _Optional, ...]


def compile_pattern(pattern: str) -> Rendering:
    """A rendering from a pattern such as `{3|1}` or `{1}[ ({2})]` (see the module docstring)."""
    parts = _parse(pattern)

    def render(arguments: Arguments, _lang: str) -> str:
        return _fill(parts, arguments)[0]

    return render


def _parse(pattern: str) -> tuple[str | _Argument | _Optional, ...]:
    stack: list[list[str | _Argument | _Optional]] = [[]]
    for token in _SYNTAX.split(pattern):
        if token == "[":
            stack.append([])
        elif token == "]":
            if len(stack) == 1:
                raise PatternError(f"{pattern!r}: ']' without '['")
            group = _Optional(tuple(stack.pop()))
            stack[-1].append(group)
        elif token.startswith("{") and token.endswith("}"):
            names = tuple(name.strip() for name in token[1:-1].split("|"))
            if not all(names):
                raise PatternError(f"{pattern!r}: {token} names an empty argument")
            stack[-1].append(_Argument(names))
        elif "{" in token or "}" in token:
            raise PatternError(f"{pattern!r}: unbalanced braces")
        elif token:
            stack[-1].append(token)
    if len(stack) != 1:
        raise PatternError(f"{pattern!r}: '[' without ']'")
    return tuple(stack[0])


def _fill(parts: tuple[str | _Argument | _Optional, ...], arguments: Arguments) -> tuple[str, bool]:
    """The text of the parts, and whether every argument they name was given."""
    pieces, complete = [], True
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, _Argument):
            value = next((arguments[n] for n in part.names if arguments.get(n, "").strip()), "")
            complete = complete and bool(value)
            pieces.append(value)
        else:
            text, given = _fill(part.parts, arguments)
            pieces.append(text if given else "")
    return "".join(pieces), complete


# ---- renderings that need more than a pattern ------------------------------------------------------------


@lru_cache(maxsize=512)
def language_name(code: str, in_language: str) -> str | None:
    """The name of language `code` written in `in_language` ("en" in zh: 英语), from CLDR; None if unknown."""
    locale_id = "zh_Hans" if in_language.startswith("zh") else in_language
    try:
        names = Locale.parse(locale_id).languages
    except (UnknownLocaleError, ValueError):
        return None
    code = code.strip().lower().replace("-", "_")
    return names.get(code) or names.get(code.split("_", 1)[0])


def _labelled(label: str | None, text: str, lang: str) -> str:
    if not text or not label:
        return text
    return f"{label}：{text}" if lang.startswith("zh") else f"{label}: {text}"


def _language_then_text(code: str, text: str, lang: str) -> str:
    """`{{lang-fr|texte}}`: the language's name, then the text (zhwiki: 法语：texte; enwiki: French: texte)."""
    return _labelled(language_name(code, lang), text, lang)


def _langx(arguments: Arguments, lang: str) -> str:
    return _language_then_text(arguments.get("1", ""), arguments.get("2", ""), lang)


def _convert(arguments: Arguments, _lang: str) -> str:
    """`{{convert|10|to|20|km|mi}}` -> "10 to 20 km": the quantity as written, without the conversion."""
    values = [arguments.get(str(i), "").strip() for i in range(1, len(arguments) + 1)]
    values = values[: values.index("")] if "" in values else values
    words: list[str] = []
    for index, value in enumerate(values):
        before = values[index - 1] if index else ""
        if index == 0 or (_NUMBER.match(value) and (before.lower() in _CONVERT_RANGE_WORDS or not _NUMBER.match(before))):
            words.append(value)  # the first number, a range's second, or the next number of "5|ft|6|in"
        elif value.lower() in _CONVERT_RANGE_WORDS and index + 1 < len(values) and _NUMBER.match(values[index + 1]):
            words.append(value)
        elif _NUMBER.match(before) and not _NUMBER.match(value):
            words.append(_TEMPERATURE_UNITS.get(value, value))  # the unit written after a number
            if index + 1 >= len(values) or not _NUMBER.match(values[index + 1]):
                break  # what follows is the unit converted to
        else:
            break
    return " ".join(words)


# Named arguments of the Chinese-term templates ({{zh|s=中国|p=Zhōngguó}}), in the order the wikis print
# them, with their labels on English and Chinese wikis.
_CHINESE_TERM_PARTS = (
    ("c", "Chinese", "中文"),
    ("s", "simplified Chinese", "简体中文"),
    ("t", "traditional Chinese", "繁体中文"),
    ("p", "pinyin", "拼音"),
    ("hp", "pinyin", "拼音"),
    ("tp", "Tongyong Pinyin", "通用拼音"),
    ("w", "Wade–Giles", "威妥玛拼音"),
    ("j", "Jyutping", "粤拼"),
    ("cy", "Cantonese Yale", "耶鲁粤拼"),
    ("poj", "Pe̍h-ōe-jī", "白话字"),
    ("zhu", "Zhuyin Fuhao", "注音符号"),
    ("l", "lit.", "字面意思"),
)


def _chinese_term(arguments: Arguments, lang: str) -> str:
    """`{{zh|s=中国|t=中國|p=Zhōngguó}}` -> "simplified Chinese: 中国; traditional Chinese: 中國; pinyin: Zhōngguó"."""
    zh = lang.startswith("zh")
    given = [(key, en, zh_label) for key, en, zh_label in _CHINESE_TERM_PARTS if arguments.get(key, "").strip()]
    if arguments.get("s", "").strip() and arguments.get("s") == arguments.get("t"):  # one script: say it once
        given = [part for part in given if part[0] != "t"]
        given = [("s", "Chinese", "中文") if part[0] == "s" else part for part in given]
    pieces = [_labelled(zh_label if zh else en, arguments[key].strip(), lang) for key, en, zh_label in given]
    return ("；" if zh else "; ").join(pieces)


# ---- the table -----------------------------------------------------------------------------------------

# zhwiki's inter-language links show the Chinese title (or the text given for it); the foreign title is a
# small link beside it, not words of the sentence.
_LINK_XX = "{3|1}"  # {{link-en|中文名|English title|显示文字}}
_DEFAULT_PATTERNS: dict[str, tuple[str, ...]] = {
    _LINK_XX: ("le",),  # {{le|中文名|English title|显示文字}}: link-en's short name
    "{4|3|2}": ("tsl", "translink"),  # {{tsl|en|English title|中文名|显示文字}}
    "{lt|1}": ("ill", "interlanguage link", "interlanguage link multi", "illm"),
    "{d|1}": ("internal link helper", "ilh"),  # {{ilh|中文名|外文名|lang-code=en|d=显示文字}}
    "{2}": ("lang", "rtl-lang", "script"),  # {{lang|fr|texte}}: the text, no label
    "{3|2}": ("transl", "transliteration", "translit"),  # {{transl|ar|DIN|al-Qāhira}} or {{transl|ja|kanji}}
    # {{nihongo|Tokyo|東京|Tōkyō}} -> Tokyo (東京, Tōkyō)
    "{1}[ ({2}[, {3}])]": ("nihongo",),
    "{1}": ("nihongo2", "nowrap", "nobr", "small", "smaller", "big", "large", "larger", "abbr", "lj"),
    "{1} {2}": ("sortname",),  # {{sortname|Ada|Lovelace}} -> Ada Lovelace
    "–": ("ndash", "snd", "spaced ndash"),
    "—": ("mdash", "spaced mdash"),
}
_DEFAULT_FUNCTIONS: dict[str, Rendering] = {
    "langx": _langx,
    "convert": _convert,
    "cvt": _convert,
    "zh": _chinese_term,
    "lang-zh": _chinese_term,
    "zh-full": _chinese_term,
    "chinese": _chinese_term,
}
# Families named by a language code: {{link-ja|...}} and {{Link-en|...}} alike; {{lang-fr|texte}}.
_LINK_FAMILY = re.compile(rf"^link-({_LANGUAGE_CODE})$")
_FORMATNUM = "formatnum:"  # a parser function: its argument is part of the name
_LANG_FAMILY = re.compile(rf"^lang-({_LANGUAGE_CODE})$")


def _lang_xx(code: str) -> Rendering:
    def render(arguments: Arguments, lang: str) -> str:
        return _language_then_text(code, arguments.get("1", "").strip(), lang)

    return render


class InlineTemplates:
    """The renderings of inline templates: the built-in table, then the config's patterns over it."""

    def __init__(self, extra_patterns: Mapping[str, str] | None = None) -> None:
        self._table: dict[str, Rendering] = dict(_DEFAULT_FUNCTIONS)
        for pattern, names in _DEFAULT_PATTERNS.items():
            rendering = compile_pattern(pattern)
            self._table.update((template_key(name), rendering) for name in names)
        for name, pattern in (extra_patterns or {}).items():
            self._table[template_key(name)] = compile_pattern(pattern)
        self._link_xx = compile_pattern(_LINK_XX)

    def rendering(self, name: str) -> Rendering | None:
        """How the template `name` renders, or None when it carries no words of the sentence."""
        key = template_key(name)
        found = self._table.get(key)
        if found is not None:
            return found
        if key.startswith(_FORMATNUM):
            number = name.split(":", 1)[1].strip()
            return lambda _arguments, _lang: number  # {{formatnum:6500000}}: the number, as written
        if _LINK_FAMILY.match(key):
            return self._link_xx
        lang_xx = _LANG_FAMILY.match(key)
        return _lang_xx(lang_xx.group(1)) if lang_xx else None
