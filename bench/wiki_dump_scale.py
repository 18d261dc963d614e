"""Wiki dumps in linear time: planning seconds and first vs last partition read time on a multistream dump.

Builds, in a temporary directory, a multistream dump of COPIES copies of the enwiki excerpt's pages (page
ids rewritten so they stay unique; 100 pages per bz2 stream after a header stream, as Wikimedia writes
them) with its `-multistream-index.txt.bz2`, then measures, with partitions of one copy's pages (so with the
index the first and the last partition hold the same pages, and only their place in the file differs):
- planning from the index, and planning the same dump without its index (stream boundary scan);
- reading the first and the last partition: decompressing and parsing its pages alone, and the whole
  read (with wikitext cleaning, which depends on the pages' content), for both plans.
Targets: planning <= 2 s, last partition <= 1.5x the first.
Run: python bench/wiki_dump_scale.py [--copies 16] [--excerpt PATH]
"""

from __future__ import annotations

import argparse
import bz2
import json
import re
import tempfile
import time
from datetime import date
from pathlib import Path

from pipeline.config import SourceConfig
from pipeline.sources import expand_uri, plan_partitions, read_partition
from pipeline.sources.wiki import DumpRange, DumpReader

RESULTS = Path(__file__).parent / "results"
EXCERPT = Path(__file__).resolve().parents[1].parent / "shared/data/wiki/enwiki-pages-articles-excerpt.xml.bz2"
PAGES_PER_STREAM = 100
PARSE_REPEATS = 3
_PAGE_ID = re.compile(r"(<ns>[^<]*</ns>\s*<id>)(\d+)(</id>)")
_TITLE = re.compile(r"<title>([^<]*)</title>")


def write_dump(excerpt: Path, copies: int, directory: Path) -> tuple[Path, int]:
    """The multistream dump and its index; returns the dump's path and the number of pages of one copy."""
    text = bz2.decompress(excerpt.read_bytes()).decode("utf-8")
    head, rest = text.split("<page>", 1)
    body, tail = ("<page>" + rest).rsplit("</mediawiki>", 1)
    pages = ["  <page>" + p.rstrip(" ") for p in body.split("<page>")[1:]]
    all_pages = [
        _PAGE_ID.sub(lambda m, c=copy: f"{m[1]}{int(m[2]) + c * 100_000_000}{m[3]}", page, count=1)
        for copy in range(copies) for page in pages
    ]
    dump = directory / "enwiki-scale-pages-articles-multistream.xml.bz2"
    index_lines = []
    with open(dump, "wb") as out:
        out.write(bz2.compress(head.encode()))
        for first in range(0, len(all_pages), PAGES_PER_STREAM):
            offset = out.tell()
            group = all_pages[first : first + PAGES_PER_STREAM]
            for page in group:
                page_id = _PAGE_ID.search(page)[2]
                index_lines.append(f"{offset}:{page_id}:{_TITLE.search(page)[1]}")
            out.write(bz2.compress("".join(group).encode()))
        out.write(bz2.compress(("</mediawiki>" + tail).encode()))
    index = directory / "enwiki-scale-pages-articles-multistream-index.txt.bz2"
    index.write_bytes(bz2.compress(("\n".join(index_lines) + "\n").encode()))
    return dump, len(pages)


def timed_parse(partition) -> tuple[float, int]:
    """Seconds to decompress and parse the partition's pages (no cleaning), and their number."""
    started = time.perf_counter()
    dump_range = DumpRange(partition.start, partition.stop, partition.byte_start, partition.byte_stop,
                           partition.first_record)
    pages = sum(1 for _ in DumpReader(partition.path, dump_range).pages())
    return time.perf_counter() - started, pages


def timed_read(source: SourceConfig, partition) -> tuple[float, int]:
    """Seconds to read the partition whole (wikitext cleaning included), and its rows."""
    started = time.perf_counter()
    rows = sum(batch.documents.num_rows + batch.rejects.num_rows for batch in read_partition(source, partition))
    return time.perf_counter() - started, rows


def timed_pair(source: SourceConfig, first, last) -> tuple[dict, dict]:
    """Both partitions measured in turns, PARSE_REPEATS times for the parse (the fastest counts), so that
    load from other work on the machine falls on both alike."""
    parses: dict[str, list[float]] = {"first": [], "last": []}
    pages = {}
    for _ in range(PARSE_REPEATS):
        for name, partition in (("first", first), ("last", last)):
            seconds, pages[name] = timed_parse(partition)
            parses[name].append(seconds)
    reads = {name: timed_read(source, partition) for name, partition in (("first", first), ("last", last))}
    return tuple(
        {"pages": pages[name], "rows": reads[name][1], "parse_seconds": round(min(parses[name]), 2),
         "read_seconds": round(reads[name][0], 2)}
        for name in ("first", "last")
    )


def measure(source: SourceConfig) -> dict:
    started = time.perf_counter()
    partitions = plan_partitions(source, expand_uri(source))
    planning = time.perf_counter() - started
    first, last = timed_pair(source, partitions[0], partitions[-1])
    per_page = {kind: round((last[kind] / last["pages"]) / (first[kind] / first["pages"]), 2)
                for kind in ("parse_seconds", "read_seconds")}
    return {"planning_seconds": round(planning, 2), "partitions": len(partitions), "first": first, "last": last,
            "last_vs_first_per_page": per_page}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--excerpt", type=Path, default=EXCERPT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wiki-scale-") as directory:
        started = time.perf_counter()
        dump, copy_pages = write_dump(args.excerpt, args.copies, Path(directory))
        build_seconds = time.perf_counter() - started
        settings = {"name": "enwiki", "kind": "wiki", "lang": "en", "format": "mediawiki", "uri": str(dump),
                    "pages_per_partition": copy_pages}
        with_index = measure(SourceConfig(**settings))
        index = dump.with_name(dump.name.replace(".xml.bz2", "-index.txt.bz2"))
        index.rename(index.with_suffix(".moved"))
        without_index = measure(SourceConfig(**settings))
        report = {
            "date": date.today().isoformat(), "copies": args.copies, "pages": copy_pages * args.copies,
            "dump_mb": round(dump.stat().st_size / 2**20, 1), "build_dump_seconds": round(build_seconds, 1),
            "pages_per_partition": copy_pages, "with_index": with_index, "without_index": without_index,
        }
    print(json.dumps(report, indent=1))
    for name in ("with_index", "without_index"):
        run = report[name]
        print(f"{name}: planning {run['planning_seconds']} s (target <= 2); last vs first partition per page "
              f"{run['last_vs_first_per_page']} (target <= 1.5)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"wiki_dump_scale-{date.today().isoformat()}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
