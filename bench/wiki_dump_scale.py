"""Wiki dumps in linear time: planning seconds and first vs last partition read time on a multistream dump.

Builds, in a temporary directory, a multistream dump of COPIES copies of the enwiki excerpt's pages (page
ids rewritten so they stay unique; 100 pages per bz2 stream after a header stream, as Wikimedia writes
them) with its `-multistream-index.txt.bz2`, then measures with 100-page partitions:
- planning from the index, and planning the same dump without its index (stream boundary scan);
- reading (parse + wikitext cleaning) the first and the last partition, for both plans.
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

RESULTS = Path(__file__).parent / "results"
EXCERPT = Path(__file__).resolve().parents[1].parent / "shared/data/wiki/enwiki-pages-articles-excerpt.xml.bz2"
PAGES_PER_STREAM = 100
PAGES_PER_PARTITION = 100
_PAGE_ID = re.compile(r"(<ns>[^<]*</ns>\s*<id>)(\d+)(</id>)")
_TITLE = re.compile(r"<title>([^<]*)</title>")


def write_dump(excerpt: Path, copies: int, directory: Path) -> tuple[Path, int]:
    """The multistream dump and its index; returns the dump's path and its number of pages."""
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
    return dump, len(all_pages)


def timed_read(source: SourceConfig, partition) -> tuple[float, int]:
    started = time.perf_counter()
    rows = sum(batch.documents.num_rows + batch.rejects.num_rows for batch in read_partition(source, partition))
    return time.perf_counter() - started, rows


def measure(source: SourceConfig) -> dict:
    started = time.perf_counter()
    partitions = plan_partitions(source, expand_uri(source))
    planning = time.perf_counter() - started
    first_seconds, first_pages = timed_read(source, partitions[0])
    last_seconds, last_pages = timed_read(source, partitions[-1])
    return {
        "planning_seconds": round(planning, 2), "partitions": len(partitions),
        "first": {"seconds": round(first_seconds, 2), "pages": first_pages},
        "last": {"seconds": round(last_seconds, 2), "pages": last_pages},
        "last_vs_first_per_page": round((last_seconds / last_pages) / (first_seconds / first_pages), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--excerpt", type=Path, default=EXCERPT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wiki-scale-") as directory:
        started = time.perf_counter()
        dump, pages = write_dump(args.excerpt, args.copies, Path(directory))
        build_seconds = time.perf_counter() - started
        settings = {"name": "enwiki", "kind": "wiki", "lang": "en", "format": "mediawiki", "uri": str(dump),
                    "pages_per_partition": PAGES_PER_PARTITION}
        with_index = measure(SourceConfig(**settings))
        index = dump.with_name(dump.name.replace(".xml.bz2", "-index.txt.bz2"))
        index.rename(index.with_suffix(".moved"))
        without_index = measure(SourceConfig(**settings))
        report = {
            "date": date.today().isoformat(), "copies": args.copies, "pages": pages,
            "dump_mb": round(dump.stat().st_size / 2**20, 1), "build_dump_seconds": round(build_seconds, 1),
            "pages_per_partition": PAGES_PER_PARTITION, "with_index": with_index, "without_index": without_index,
        }
    print(json.dumps(report, indent=1))
    for name in ("with_index", "without_index"):
        run = report[name]
        print(f"{name}: planning {run['planning_seconds']} s (target <= 2), last/first partition "
              f"{run['last']['seconds'] / run['first']['seconds']:.2f}x, per page {run['last_vs_first_per_page']}x "
              "(target <= 1.5)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"wiki_dump_scale-{date.today().isoformat()}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
