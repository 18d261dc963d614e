"""Comments (reviews, replies): CSV, TSV or JSON lines, plain, compressed or inside a zip archive.

Labels (a rating, a sentiment) come from the mapped label column through the source's label_map.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.config import SourceConfig
from pipeline.sources.base import Partition, ReadBatch
from pipeline.sources.tabular import read_tabular

# Review corpora name their product or topic column in one of these ways; meta calls it "category".
_CATEGORY_COLUMNS = ("category", "cat", "product", "topic")


def read_comments(source: SourceConfig, partition: Partition, batch_size: int) -> Iterator[ReadBatch]:
    yield from read_tabular(source, partition, batch_size, comment_extras)


def comment_extras(columns: dict[str, Any]) -> dict[str, Any]:
    """Unmapped columns for meta, with the category column under one name whatever the file calls it."""
    extras = dict(columns)
    found = next((name for name in _CATEGORY_COLUMNS if name in extras), None)
    if found is not None:
        extras["category"] = extras.pop(found)
    return extras
