"""Holes in wiki text: where an inline template stood and its words vanished, before and after corpusflow
kept them, and what WikiExtractor (the usual tool) leaves on the same pages.

Pages: the zhwiki pages of bench/fixtures/zhwiki-inline-templates.xml (written from the templates'
documented forms) and the real enwiki excerpt in ../shared/data/wiki. The same articles go through:
- `before`: the wikitext cleaning of an earlier commit (read from git, `--before`), which dropped every
  template;
- `after`: this checkout's WikitextCleaner;
- `wikiextractor`: WikiExtractor run on the dump file as a new user would (`--json`), from its own virtual
  environment (`--wikiextractor-python`, e.g. /tmp/wikiextractor-venv/bin/python after
  `pip install wikiextractor==3.1.0` there; never installed into the project's environment).

Figures per source and tool:
- holes per 1,000 sentences, by kind: empty brackets `（）` `()`, a bracket opened before a separator `（，`,
  a particle followed directly by a word that cannot begin the noun it introduces (Chinese: 的/之 then a
  word jieba tags as preposition, or a one-character adverb, as in 的被正式提交; English: an article or preposition right
  before punctuation),
  doubled punctuation, a dangling ASCII `;` (before a bracket, punctuation or line end, or right after a
  Chinese character);
- vanished templates: inline templates (those of the table, on any tool) whose place in the output is the
  text before them joined directly to the text after them, i.e. the sentence lost their words;
- template words kept: words of the inline templates' arguments (Latin words, Chinese characters) found in
  the output of the page;
- leftover markup in the output: `-{`, `}-`, `codice_`.

Then up to `--sample` sentences where `after` and `wikiextractor` differ, printed for judging by hand
(judgements: bench/wiki_text_quality_judgements.json). Run:
    .venv/bin/python bench/wiki_text_quality.py --wikiextractor-python /tmp/wikiextractor-venv/bin/python
"""

from __future__ import annotations

import argparse
import bz2
import json
import re
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from datetime import date
from pathlib import Path

import jieba.posseg
import mwparserfromhell
from mwparserfromhell.nodes import Tag, Template, Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import WikiConfig  # noqa: E402
from pipeline.sources.wiki import DumpReader, RawPage, _template_use  # noqa: E402
from pipeline.sources.wikitext import WikitextCleaner  # noqa: E402

SOURCES = {
    "zhwiki_fixture": (ROOT / "bench" / "fixtures" / "zhwiki-inline-templates.xml", "zh"),
    "enwiki_excerpt": (ROOT.parent / "shared" / "data" / "wiki" / "enwiki-pages-articles-excerpt.xml.bz2", "en"),
}
BEFORE_COMMIT = "075b5e9"  # the last commit whose cleaning dropped every template
JUDGEMENTS = ROOT / "bench" / "wiki_text_quality_judgements.json"

HOLE_PATTERNS = {
    "empty_brackets": re.compile(r"[(（][\s,;，；、]*[)）]"),
    "bracket_then_separator": re.compile(r"[(（]\s*[,;，；、]"),
    "doubled_punctuation": re.compile(r"[，。；：、,;:]\s*[，。；：、,;:]"),
    "dangling_semicolon": re.compile(r";(?=\s*(?:$|[)）。，,]))|(?<=[\u4e00-\u9fff]);", re.MULTILINE),
    "en_particle_before_punctuation": re.compile(r"\b(?:the|a|an|of|in|to|from|by|at|for|with|as)\s+[,.;:)]"),
}
_SENTENCE_END = re.compile(r"(?<=[。！？!?])|(?<=[.])\s+|\n")
_HAS_WORD = re.compile(r"[\w\u4e00-\u9fff]")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+|[\u4e00-\u9fff]")
_ZH_PARTICLES = frozenset({"的", "之"})

_LEFTOVERS = ("-{", "}-", "codice_")
_ROUNDS = 2
_CONTEXT = 6  # characters of text on each side of a template: their join in the output means its words went


def _cannot_follow_particle(word: str, flag: str) -> bool:
    """Words that cannot begin the noun a 的 introduces: prepositions (被, 在, 从) and one-character adverbs
    (也, 已, 将). A verb can (的维修任务), and jieba tags some nouns as two-character adverbs (首都), so
    neither counts."""
    return flag == "p" or (flag == "d" and len(word) == 1)


def articles(path: Path) -> list[RawPage]:
    """Main-namespace pages that are neither redirects nor disambiguation pages (as the reader keeps them)."""
    disambiguation = _template_use(WikiConfig().disambiguation_templates)
    kept = []
    for page in DumpReader(str(path)).pages():
        text = page.revision.get("text") or "" if isinstance(page, RawPage) else ""
        if (not isinstance(page, RawPage) or page.namespace != "0" or page.redirect
                or text.lstrip()[:12].lower().startswith(("#redirect", "#重定向")) or disambiguation.search(text)):
            continue
        kept.append(page)
    return kept


def old_cleaner(commit: str) -> types.ModuleType:
    """The wikitext module of an earlier commit, loaded from git without checking it out."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:pipeline/sources/wikitext.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("wikitext_before")
    exec(compile(source, f"{commit}:pipeline/sources/wikitext.py", "exec"), module.__dict__)
    return module


def wikiextractor_texts(python: str, path: Path) -> dict[str, str]:
    """Title -> text, from WikiExtractor run on the (decompressed) dump in its own environment."""
    with tempfile.TemporaryDirectory() as work:
        xml = Path(work) / "dump.xml"
        xml.write_bytes(bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes())
        out = Path(work) / "out"
        subprocess.run([python, "-m", "wikiextractor.WikiExtractor", str(xml), "--json", "-q", "-o", str(out)],
                       check=True, capture_output=True)
        rows = [json.loads(line) for file in sorted(out.rglob("wiki_*")) for line in file.read_text().splitlines()]
    # WikiExtractor prints a heading as "Heading." on its own line; kept as written
    return {row["title"]: row["text"] for row in rows}


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if _HAS_WORD.search(s)]


def holes(text: str, lang: str) -> Counter:
    found = Counter({kind: len(pattern.findall(text)) for kind, pattern in HOLE_PATTERNS.items()
                     if lang == "en" or not kind.startswith("en_")})
    if lang == "zh":
        found["zh_particle_before_verb"] = _particle_before_verb(text)
    return found


def _particle_before_verb(text: str) -> int:
    count = 0
    for line in text.splitlines():
        words = list(jieba.posseg.cut(line))
        count += sum(1 for here, after in zip(words, words[1:])
                     if here.word in _ZH_PARTICLES and _cannot_follow_particle(after.word, after.flag))
    return count


def inline_templates(wikitext: str, cleaner: WikitextCleaner) -> list[tuple[str, str, str]]:
    """(text just before, the template's argument text, text just after) of each inline template of the
    table that stands between two runs of text on one line (nested ones included)."""
    found: list[tuple[str, str, str]] = []
    pending = [mwparserfromhell.parse(wikitext)]
    while pending:
        nodes = pending.pop().nodes
        for index, node in enumerate(nodes):
            if isinstance(node, Template):
                pending += [param.value for param in node.params]
                before = nodes[index - 1] if index else None
                after = nodes[index + 1] if index + 1 < len(nodes) else None
                if (cleaner.templates.rendering(str(node.name)) is not None
                        and isinstance(before, Text) and isinstance(after, Text)):
                    left, right = before.value.rstrip(" ")[-_CONTEXT:], after.value.lstrip(" ")[:_CONTEXT]
                    arguments = " ".join(param.value.strip_code() for param in node.params)
                    if len(left) == len(right) == _CONTEXT and "\n" not in left + right:
                        found.append((left, arguments, right))
            elif isinstance(node, Tag) and node.contents is not None:
                pending.append(node.contents)
    return found


def measure(texts: dict[str, str], pages: list[RawPage], lang: str, cleaner: WikitextCleaner) -> dict:
    totals, sentence_count, vanished, template_count, words_total, words_kept = Counter(), 0, 0, 0, 0, 0
    leftovers = Counter()
    for page in pages:
        text = texts.get(page.title or "", "")
        sentence_count += len(sentences(text))
        totals += holes(text, lang)
        leftovers.update({marker: text.count(marker) for marker in _LEFTOVERS})
        flat = re.sub(r"\s+", "", text)
        for left, arguments, right in inline_templates(page.revision.get("text") or "", cleaner):
            template_count += 1
            vanished += (re.sub(r"\s+", "", left + right) in flat)
            words = set(_WORD.findall(arguments))
            words_total += len(words)
            words_kept += sum(1 for word in words if word in text)
    per_1000 = {kind: round(1000 * count / max(sentence_count, 1), 1) for kind, count in sorted(totals.items())}
    return {
        "pages": len(pages), "sentences": sentence_count,
        "holes_per_1000_sentences": round(1000 * sum(totals.values()) / max(sentence_count, 1), 1),
        "holes_by_kind_per_1000": per_1000, "holes_by_kind": dict(sorted(totals.items())),
        "inline_templates_between_text": template_count, "vanished_templates": vanished,
        "template_words": words_total, "template_words_kept": words_kept,
        "leftover_markup": {k: v for k, v in leftovers.items() if v},
    }


def differing_sentences(after: dict[str, str], peer: dict[str, str], limit: int) -> list[dict]:
    """Sentences of `after` that the peer's text of the same page does not contain, first per page."""
    sample = []
    for title, text in after.items():
        theirs = re.sub(r"\s+", "", peer.get(title, ""))
        for sentence in sentences(text):
            if len(sentence) >= 8 and re.sub(r"\s+", "", sentence) not in theirs:
                peer_sentence = _closest(sentence, peer.get(title, ""))
                sample.append({"title": title, "after": sentence, "wikiextractor": peer_sentence})
                break
        if len(sample) >= limit:
            break
    return sample


def _closest(sentence: str, text: str) -> str:
    head = sentence[:4]
    at = text.find(head)
    return sentences(text[at:])[0] if at >= 0 and sentences(text[at:]) else ""


def timed_side_by_side(pages: list[RawPage], *cleanings) -> list[tuple[dict[str, str], float]]:
    """Each cleaning's texts and its best time of `_ROUNDS` runs, the runs taking turns, so that load from
    other work on the machine falls on both alike."""
    best = [float("inf")] * len(cleanings)
    texts: list[dict[str, str]] = [{} for _ in cleanings]
    for _ in range(_ROUNDS):
        for index, clean in enumerate(cleanings):
            started = time.perf_counter()
            texts[index] = {page.title: clean(page) for page in pages}
            best[index] = min(best[index], time.perf_counter() - started)
    return list(zip(texts, best))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wikiextractor-python", default="/tmp/wikiextractor-venv/bin/python")
    parser.add_argument("--before", default=BEFORE_COMMIT)
    parser.add_argument("--sample", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"wiki_text_quality-{date.today()}.json"))
    args = parser.parse_args()
    jieba.setLogLevel(60)
    before_module = old_cleaner(args.before)
    results: dict = {"before_commit": args.before, "wikiextractor": "3.1.0", "sources": {}}
    judgements = json.loads(JUDGEMENTS.read_text()) if JUDGEMENTS.exists() else {}
    for name, (path, lang) in SOURCES.items():
        if not path.exists():
            print(f"{name}: {path} is absent, skipped")
            continue
        pages = articles(path)
        reader = DumpReader(str(path))
        next(iter(reader.pages()), None)  # reads <siteinfo>
        cleaner = WikitextCleaner(hidden_namespaces=reader.site.hidden_namespaces, lang=lang)
        clean_before = lambda page: before_module.wikitext_to_text(page.revision["text"] or "",  # noqa: E731
                                                                   reader.site.hidden_namespaces)
        clean_after = lambda page: cleaner.text(page.revision["text"] or "")  # noqa: E731
        (before, before_seconds), (after, after_seconds) = timed_side_by_side(pages, clean_before, clean_after)
        started = time.perf_counter()
        peer = wikiextractor_texts(args.wikiextractor_python, path)
        peer_seconds = time.perf_counter() - started
        tools = {"before": before, "after": after, "wikiextractor": peer}
        figures = {tool: measure(texts, pages, lang, cleaner) for tool, texts in tools.items()}
        for tool, seconds in (("before", before_seconds), ("after", after_seconds), ("wikiextractor", peer_seconds)):
            figures[tool]["seconds"] = round(seconds, 2)
        figures["after"]["words"] = sum(len(_WORD.findall(t)) for t in after.values())
        figures["wikiextractor"]["words"] = sum(len(_WORD.findall(peer.get(p.title, ""))) for p in pages)
        figures["sample_where_after_and_wikiextractor_differ"] = differing_sentences(after, peer, args.sample)
        figures["judged_by_hand"] = judgements.get(name, [])
        results["sources"][name] = figures
        for tool in tools:
            f = figures[tool]
            print(f"{name:15} {tool:13} pages {f['pages']:4} sentences {f['sentences']:6} holes/1000 "
                  f"{f['holes_per_1000_sentences']:7.1f} vanished templates {f['vanished_templates']:4}/"
                  f"{f['inline_templates_between_text']:<4} template words kept {f['template_words_kept']:5}/"
                  f"{f['template_words']:<5} leftovers {f['leftover_markup']}")
    results["machine"] = ("2 cores shared with other work running at the same time; before/after seconds: best of "
                          f"{_ROUNDS} alternating runs; WikiExtractor's include its start and the dump's decompression")
    Path(args.out).write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
