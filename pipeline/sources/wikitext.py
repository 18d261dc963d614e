"""Wikitext to plain text: what a reader sees of a page, without markup, tables, references or links' targets.

Inline templates that stand for words keep them (pipeline/sources/wiki_templates.py); sections that are
not prose (references, notes, link lists: `wiki.boilerplate_headings`) go with their subsections, and a
heading left without text under it goes too. Language-conversion markup `-{ }-` shows the simplified
variant, and its page-wide rules (`-{H|...}-`, `-{A|...}-`, `{{noteTA}}`) apply to the whole page.

A pure function of one page's text, so it runs unchanged inside worker processes; mwparserfromhell is the
slow part of reading a dump (about 1.3 MB/s of wikitext per core).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, Heading, HTMLEntity, Tag, Template, Text, Wikilink
from mwparserfromhell.nodes import Node
from mwparserfromhell.wikicode import Wikicode

from pipeline.config import WikiConfig
from pipeline.sources.wiki_templates import InlineTemplates, template_key

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
# Tags that only style the text inside them (rendered as their contents), and those that start a line.
_LINE_TAGS = frozenset({"li", "dt", "dd", "p", "div"})
_TEXT_TAGS = frozenset({"i", "b", "u", "s", "em", "strong", "span", "small", "big", "center", "font"}) | _LINE_TAGS
_INTERLANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)*$")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"[(（][\s,;，；、]*[)）]")
# a bracket opened right before a separator, or a separator right before it closes: what a dropped template
# beside the bracket leaves ("（{{IPA|...}}，缩写：X）")
_SEPARATOR_AFTER_OPEN = re.compile(r"([(（])[\s,;，；、]+")
_SEPARATOR_BEFORE_CLOSE = re.compile(r"[\s,;，；、]+([)）])")
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

# zhwiki conversion markup: -{...}- holds literal text, per-variant text (zh-hans:...; zh-hant:...;) or,
# after a flag and "|", a rule ("-{{" is a hyphen before a template, not conversion markup)
_CONVERSION = re.compile(r"-\{(?!\{)(.*?)\}-", re.DOTALL)
_CONVERSION_FLAGS = re.compile(r"^\s*([A-Z\-](?:\s*;\s*[A-Z\-])*)\s*\|(.*)$", re.DOTALL)
_VARIANT = r"zh(?:-[a-z]+)?"
_VARIANT_SPLIT = re.compile(rf";\s*(?=(?:[^;]*?=>)?\s*{_VARIANT}\s*:)", re.IGNORECASE)
_VARIANT_RULE = re.compile(rf"^\s*(?:([^;]*?)=>)?\s*({_VARIANT})\s*:(.*)$", re.DOTALL | re.IGNORECASE)
# Simplified variants first: the corpus is converted to simplified script later, so the variant closest to
# it is the one to keep.
_PREFERRED_VARIANTS = ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh")
# Flags whose markup shows nothing: H (a page rule), T (the title's form), D (a description of the rule),
# - (a rule removed).
_HIDDEN_FLAGS = frozenset({"H", "T", "D", "-"})
_RULE_FLAGS = frozenset({"H", "A"})  # flags whose rule converts the rest of the page
_NOTE_TA = "noteta"


@dataclass
class VariantRule:
    """One conversion rule: the text shown in the simplified variant, and the texts that become it."""

    shown: str
    replaced: list[str] = field(default_factory=list)


def convert_variants(wikitext: str, rules: list[VariantRule] | None = None) -> str:
    """Resolve -{ }- markup: the simplified variant when one is given, otherwise the first, else the text;
    page-wide rules (H and A flags) are added to `rules` when given."""
    return _CONVERSION.sub(lambda match: _resolve_conversion(match.group(1), rules), wikitext)


def _resolve_conversion(body: str, rules: list[VariantRule] | None) -> str:
    flags: set[str] = set()
    flagged = _CONVERSION_FLAGS.match(body)
    if flagged:
        flags = {flag.strip() for flag in flagged.group(1).split(";")}
        body = flagged.group(2)
    if "R" in flags:
        return body  # raw: shown as written
    rule = variant_rule(body)
    if rule is not None and rules is not None and flags & _RULE_FLAGS:
        rules.append(rule)
    if flags & _HIDDEN_FLAGS:
        return ""
    return rule.shown if rule is not None else body


def variant_rule(body: str) -> VariantRule | None:
    """The rule in `zh-cn:软件; zh-tw:軟體;` (or `軟體=>zh-cn:软件;`), None when the body is plain text."""
    parts = [part for part in _VARIANT_SPLIT.split(body.strip().rstrip(";")) if part.strip()]
    matches = [_VARIANT_RULE.match(part) for part in parts]
    if not matches or not all(matches):
        return None
    by_variant: dict[str, str] = {}
    sources: list[str] = []
    for match in matches:
        source, variant, text = match.group(1), match.group(2).lower(), match.group(3).strip().rstrip(";").strip()
        by_variant.setdefault(variant, text)
        if source is not None and source.strip():
            sources.append(source.strip())
    shown = next((by_variant[name] for name in _PREFERRED_VARIANTS if name in by_variant), next(iter(by_variant.values())))
    replaced = [text for text in [*sources, *by_variant.values()] if text and text != shown]
    return VariantRule(shown, replaced)


def _apply_rules(text: str, rules: Sequence[VariantRule]) -> str:
    """Every other variant's text written as the simplified variant's, longest first (MediaWiki's order)."""
    mapping = {other: rule.shown for rule in rules for other in rule.replaced if other not in rule.shown}
    if not mapping:
        return text
    pattern = re.compile("|".join(re.escape(other) for other in sorted(mapping, key=len, reverse=True)))
    return pattern.sub(lambda match: mapping[match.group(0)], text)


@dataclass
class _Section:
    level: int  # 0 for the lead
    title: str
    lines: list[str]


class WikitextCleaner:
    """Plain text of pages of one wiki: its language (for template labels such as 英语：), its hidden
    namespaces and the `wiki` config (inline templates, boilerplate headings)."""

    def __init__(
        self,
        wiki: WikiConfig | None = None,
        hidden_namespaces: frozenset[str] = DEFAULT_HIDDEN_NAMESPACES,
        lang: str = "zh",
    ) -> None:
        wiki = wiki or WikiConfig()
        self.hidden = hidden_namespaces
        self.lang = lang
        self.templates = InlineTemplates(wiki.inline_templates)
        self._boilerplate = frozenset(_heading_key(heading) for heading in wiki.boilerplate_headings)

    def text(self, wikitext: str) -> str:
        """Headings as their own lines, paragraphs separated by newlines."""
        rules: list[VariantRule] = []
        code = mwparserfromhell.parse(convert_variants(wikitext, rules))
        page = _PageRender(self, rules)
        sections = [
            _Section(level, page.render(title).strip(), _finish(page.render_nodes(body)))
            for level, title, body in _split_sections(code.nodes)
        ]
        lines = [line for section in self._readable(sections) for line in section]
        return _apply_rules("\n".join(lines), rules)

    def _readable(self, sections: list[_Section]) -> Iterable[list[str]]:
        """Each kept section's lines, its heading first: boilerplate sections go with their subsections, and
        a heading goes when neither its section nor a subsection has text left."""
        kept: list[_Section] = []
        skip_below: int | None = None
        for section in sections:
            if skip_below is not None and section.level > skip_below:
                continue
            skip_below = section.level if section.level and self.is_boilerplate(section.title) else None
            if skip_below is None:
                kept.append(section)
        for index, section in enumerate(kept):
            end = next((i for i in range(index + 1, len(kept)) if kept[i].level <= section.level), len(kept))
            has_text = any(below.lines for below in kept[index:end])
            yield ([section.title] if section.level and section.title and has_text else []) + section.lines

    def is_boilerplate(self, heading: str) -> bool:
        """A heading of the list, or one joining several of them ("注释与参考资料", "Notes and references")."""
        key = _heading_key(heading)
        if key in self._boilerplate:
            return True
        parts = [part for part in _HEADING_JOINERS.split(key) if part]
        return len(parts) > 1 and all(part in self._boilerplate for part in parts)


_HEADING_JOINERS = re.compile(r"(?:与|與|和|及|、|/|&|,|，|and)")


def _heading_key(heading: str) -> str:
    return "".join(heading.split()).lower().rstrip(":：")


def _split_sections(nodes: list[Node]) -> Iterable[tuple[int, Wikicode | None, list[Node]]]:
    """(level, title, body nodes) of the lead (level 0) and of each heading, in page order."""
    level, title, body = 0, None, []
    for node in _with_headings_on_top(nodes):
        if isinstance(node, Heading):
            yield level, title, body
            level, title, body = node.level, node.title, []
        else:
            body.append(node)
    yield level, title, body


def _with_headings_on_top(nodes: Iterable[Node]) -> Iterable[Node]:
    """The nodes, with the contents of a text tag that holds headings in place of the tag: mwparserfromhell
    lets italics left open (`''` without its closing pair on the line) run on over later sections, which
    MediaWiki closes at the line's end."""
    for node in nodes:
        if (isinstance(node, Tag) and str(node.tag).strip().lower() in _TEXT_TAGS and node.contents is not None
                and any(isinstance(inner, Heading) for inner in node.contents.nodes)):
            if str(node.tag).strip().lower() in _LINE_TAGS:
                yield Text("\n")
            yield from _with_headings_on_top(node.contents.nodes)
        else:
            yield node


def _finish(text: str) -> list[str]:
    text = _scrub_leftovers(text)
    text = _EMPTY_PARENS.sub("", _MAGIC_WORD.sub("", text))
    text = _SEPARATOR_BEFORE_CLOSE.sub(r"\1", _SEPARATOR_AFTER_OPEN.sub(r"\1", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith(_TABLE_LINE)]


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


class _PageRender:
    """Renders the nodes of one page; collects the conversion rules its {{noteTA}} declares."""

    def __init__(self, cleaner: WikitextCleaner, rules: list[VariantRule]) -> None:
        self.cleaner = cleaner
        self.rules = rules

    def render(self, code: Wikicode | None) -> str:
        return "" if code is None else self.render_nodes(code.nodes)

    def render_nodes(self, nodes: Iterable[Node]) -> str:
        return "".join(self._node(node) for node in nodes)

    def _node(self, node: Node) -> str:
        match node:
            case Text():
                return node.value
            case Heading():  # a heading inside a tag or template: the sections were split at the top level
                return f"\n{self.render(node.title).strip()}\n"
            case Wikilink():
                return self._wikilink(node)
            case ExternalLink():
                if node.title is not None:
                    return self.render(node.title)
                return "" if node.brackets else str(node.url)
            case Tag():
                return self._tag(node)
            case HTMLEntity():
                return node.normalize()
            case Template():
                return self._template(node)
            case _:
                return ""  # comments, template arguments: no prose of their own

    def _template(self, template: Template) -> str:
        # the name as rendered: without comments, and with what a parser function's own argument renders to
        # ({{formatnum:{{Inflation|...}}}} is "formatnum:", a value computed at render time)
        name = self.render(template.name)
        rendering = self.cleaner.templates.rendering(name)
        if rendering is None:
            if template_key(name) == _NOTE_TA:
                self._note_ta(template)
            return ""
        arguments = {str(param.name).strip(): self.render(param.value).strip() for param in template.params}
        return rendering(arguments, self.cleaner.lang)

    def _note_ta(self, template: Template) -> None:
        """{{noteTA|1=zh-cn:软件;zh-tw:軟體;|G1=IT}}: numbered arguments are rules for the whole page."""
        for param in template.params:
            if str(param.name).strip().isdigit():
                rule = variant_rule(str(param.value))
                if rule is not None:
                    self.rules.append(rule)

    def _wikilink(self, link: Wikilink) -> str:
        target = str(link.title).strip()
        if target.startswith(":"):  # a visible link to a category or file page, not a placement
            return self.render(link.text) if link.text is not None else target[1:]
        prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
        if prefix in self.cleaner.hidden:
            return ""
        if link.text is not None:
            return self.render(link.text)
        if _INTERLANGUAGE_PREFIX.match(prefix):
            return ""  # [[fr:Titre]]: a link to another language's article, not text
        return self.render(link.title)

    def _tag(self, tag: Tag) -> str:
        name = str(tag.tag).strip().lower()
        if name in _DROPPED_TAGS:
            return ""
        if name == "br":
            return "\n"
        if name in _LINE_TAGS:
            return "\n" + self.render(tag.contents) if tag.contents is not None else "\n"
        return self.render(tag.contents) if tag.contents is not None else ""
