"""Wikitext to plain text: what a reader sees of a page, without markup, tables, references or links' targets.

A pure function of one page's text, so it runs unchanged inside worker processes; mwparserfromhell is the
slow part of reading a dump (about 1.3 MB/s of wikitext per core).
"""

from __future__ import annotations

import re

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, Heading, HTMLEntity, Tag, Text, Wikilink
from mwparserfromhell.wikicode import Wikicode

# Link prefixes whose pages are media or categories, not prose; the dump's own names are added from its
# <siteinfo>, these cover exports without one.
DEFAULT_HIDDEN_NAMESPACES = frozenset(
    {"file", "image", "media", "category", "文件", "檔案", "档案", "图像", "圖像", "分类", "分類"}
)
# Tags whose content is not running text: citations, tables, galleries, formulas, score and timeline code.
_DROPPED_TAGS = frozenset(
    {"ref", "references", "table", "gallery", "math", "chem", "imagemap", "timeline", "score", "graph",
     "templatedata", "syntaxhighlight", "source", "mapframe", "maplink", "categorytree", "inputbox"}
)
_INTERLANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)*$")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"[(（][\s,;，；、]*[)）]")
_SPACES = re.compile(r"[ \t\u00a0]+")

# mwparserfromhell gives up on a construct it cannot match (a <ref> holding unbalanced '' italics, a table
# with a broken row) and leaves it as literal text; these catch what it left.
_LEFTOVER_REF = re.compile(r"<ref[^<>]*/>|<ref[^<>]*>.*?</ref\s*>", re.DOTALL | re.IGNORECASE)
_LEFTOVER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_LEFTOVER_LINK = re.compile(r"\[\[(?:[^\[\]|]*\|)*([^\[\]|]*)\]\]")
_LEFTOVER_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_LEFTOVER_BRACKETS = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}")
_TABLE_LINE = ("{|", "|", "!")
_MAX_NESTING = 5

# zhwiki conversion markup: -{...}- holds either literal text or per-variant text (zh-hans:...; zh-hant:...)
# ("-{{" is a hyphen before a template, not conversion markup)
_CONVERSION = re.compile(r"-\{(?!\{)(.*?)\}-", re.DOTALL)
_CONVERSION_FLAGS = re.compile(r"^\s*([A-Za-z;\-\s]{1,40})\|(.*)$", re.DOTALL)
_VARIANT_SPLIT = re.compile(r";\s*(?=zh(?:-[a-z]+)?\s*:)")
_VARIANT_RULE = re.compile(r"^\s*(zh(?:-[a-z]+)?)\s*:(.*)$", re.DOTALL)
# Simplified variants first: the corpus is converted to simplified script later, so the variant closest to
# it is the one to keep.
_PREFERRED_VARIANTS = ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh")
# Flags whose rule is not displayed: H (hidden rule), T (title only), - (remove rule).
_HIDDEN_FLAGS = frozenset({"H", "T", "-"})


def wikitext_to_text(wikitext: str, hidden_namespaces: frozenset[str] = DEFAULT_HIDDEN_NAMESPACES) -> str:
    """Plain text of a page: headings as their own lines, paragraphs separated by newlines."""
    code = mwparserfromhell.parse(convert_variants(wikitext))
    text = _scrub_leftovers(_render(code, hidden_namespaces))
    text = _EMPTY_PARENS.sub("", _MAGIC_WORD.sub("", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith(_TABLE_LINE))


def _scrub_leftovers(text: str) -> str:
    """Remove the markup the parser left as text: references, templates, links, tags, stray brackets."""
    if "[[" not in text and "{{" not in text and "<" not in text:
        return text
    text = _LEFTOVER_REF.sub("", text)
    for _ in range(_MAX_NESTING):  # innermost first, so nested templates and links unwrap level by level
        unwrapped = _LEFTOVER_LINK.sub(r"\1", _LEFTOVER_TEMPLATE.sub("", text))
        if unwrapped == text:
            break
        text = unwrapped
    return _LEFTOVER_BRACKETS.sub("", _LEFTOVER_TAG.sub("", text))


def convert_variants(wikitext: str) -> str:
    """Resolve -{ }- markup: the simplified variant when one is given, otherwise the first, else the text."""
    return _CONVERSION.sub(lambda match: _resolve_conversion(match.group(1)), wikitext)


def _resolve_conversion(body: str) -> str:
    flagged = _CONVERSION_FLAGS.match(body)
    if flagged:
        flags = {flag.strip() for flag in flagged.group(1).split(";")}
        if flags & _HIDDEN_FLAGS:
            return ""
        body = flagged.group(2)
    variants = [_VARIANT_RULE.match(part) for part in _VARIANT_SPLIT.split(body)]
    if not variants or not all(variants):
        return body
    by_name = {rule.group(1): rule.group(2).strip() for rule in variants if rule}
    for name in _PREFERRED_VARIANTS:
        if name in by_name:
            return by_name[name]
    return next(iter(by_name.values()))


def _render(code: Wikicode | None, hidden: frozenset[str]) -> str:
    if code is None:
        return ""
    return "".join(_render_node(node, hidden) for node in code.nodes)


def _render_node(node: object, hidden: frozenset[str]) -> str:
    match node:
        case Text():
            return node.value
        case Heading():
            return f"\n{_render(node.title, hidden).strip()}\n"
        case Wikilink():
            return _render_wikilink(node, hidden)
        case ExternalLink():
            if node.title is not None:
                return _render(node.title, hidden)
            return "" if node.brackets else str(node.url)
        case Tag():
            return _render_tag(node, hidden)
        case HTMLEntity():
            return node.normalize()
        case _:
            return ""  # templates, comments, template arguments: no prose of their own


def _render_wikilink(link: Wikilink, hidden: frozenset[str]) -> str:
    target = str(link.title).strip()
    if target.startswith(":"):  # a visible link to a category or file page, not a placement
        return _render(link.text, hidden) if link.text is not None else target[1:]
    prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
    if prefix in hidden:
        return ""
    if link.text is not None:
        return _render(link.text, hidden)
    if _INTERLANGUAGE_PREFIX.match(prefix):
        return ""  # [[fr:Titre]]: a link to another language's article, not text
    return _render(link.title, hidden)


def _render_tag(tag: Tag, hidden: frozenset[str]) -> str:
    name = str(tag.tag).strip().lower()
    if name in _DROPPED_TAGS:
        return ""
    if name == "br":
        return "\n"
    if name in ("li", "dt", "dd", "p", "div"):
        return "\n" + _render(tag.contents, hidden) if tag.contents is not None else "\n"
    return _render(tag.contents, hidden) if tag.contents is not None else ""
