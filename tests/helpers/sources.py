"""Helpers for the reader tests: build a source, read all its partitions into rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import SourceConfig
from pipeline.sources import expand_uri, plan_partitions, read_partition
from pipeline.sources.base import Partition


def source_for(path: Path | str, **settings: Any) -> SourceConfig:
    defaults: dict[str, Any] = {"name": "test", "kind": "comments", "lang": "zh", "format": "csv"}
    if settings.get("format", defaults["format"]) in ("csv", "tsv", "jsonl"):
        defaults["fields"] = {"text": "text"}
    return SourceConfig(uri=str(path), **{**defaults, **settings})


def read_rows(source: SourceConfig, partitions: list[Partition] | None = None) -> tuple[list[dict], list[dict]]:
    """(documents, rejects) of every partition of a source, as Python rows with meta parsed."""
    partitions = partitions if partitions is not None else plan_partitions(source, expand_uri(source))
    documents: list[dict] = []
    rejects: list[dict] = []
    for partition in partitions:
        for batch in read_partition(source, partition, batch_size=64):
            documents += batch.documents.to_pylist()
            rejects += batch.rejects.to_pylist()
    for row in documents + rejects:
        row["meta"] = json.loads(row["meta"])
    return documents, rejects


def reasons(rejects: list[dict]) -> list[str]:
    return [row["reason"] for row in rejects]
