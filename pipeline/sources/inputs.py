"""What a build records about its inputs: fingerprint, codec, and whether each was read, empty or skipped.

A skipped input (unreadable as a whole, its source set to `on_bad_input: skip`) counts as one record read
and rejected, with the reason `input:<code>` (binary, not_format, missing_columns, unreadable) and the
file: the ledger keeps `read = kept + filtered + duplicate + rejected`, the rejects shard holds a row
naming the file and what was wrong, and the manifest lists the input with status `skipped`. Too many
skipped inputs fail the build (`max_bad_inputs`): a build that silently lost a tenth of its data is not
a good build.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from pipeline.config import CorpusflowConfig, SourceConfig
from pipeline.errors import UserError
from pipeline.schema import InputRecord, documents_batch, rejects_batch
from pipeline.sources.base import Partition, ReadBatch
from pipeline.sources.rows import reject_row


class TooManyBadInputs(UserError, RuntimeError):
    """More inputs were skipped as unreadable than `max_bad_inputs` allows; names each and why."""

    hint = "fix or remove the files listed, or raise max_bad_inputs to build without them"


def skipped_input_batch(source: SourceConfig, path: str, reason: str, detail: str) -> ReadBatch:
    """A whole unreadable input as one rejected record: reason `input:<code>`, the file, what was wrong."""
    meta = {"file": path, "position": 0, "cause": detail}
    row = reject_row(source, f"{PurePosixPath(path).name}:input", reason, detail, meta)
    return ReadBatch(documents_batch([]), rejects_batch([row]))


def input_records(partitions: Sequence[Partition]) -> list[InputRecord]:
    """One record per input of the planned partitions, for the manifest: fingerprint, codec and status."""
    records: dict[tuple[str, str], InputRecord] = {}
    for partition in partitions:
        uri = partition.origin or partition.path
        records.setdefault((partition.source, uri), InputRecord(
            source=partition.source,
            uri=uri,
            fingerprint=partition.fingerprint,
            encoding=partition.encoding,
            status=_status(partition),
            reason=f"{partition.skipped}: {partition.skip_detail}" if partition.skipped else None,
        ))
    return [records[key] for key in sorted(records)]


def _status(partition: Partition) -> str:
    if partition.skipped:
        return "skipped"
    return "empty" if partition.empty else "read"


def check_bad_inputs(config: CorpusflowConfig, inputs: Sequence[InputRecord]) -> list[InputRecord]:
    """The skipped inputs; raises TooManyBadInputs when there are more than `max_bad_inputs` allows."""
    skipped = [record for record in inputs if record.status == "skipped"]
    limit = config.max_bad_inputs
    allowed = limit if isinstance(limit, int) else limit * len(inputs)
    if len(skipped) > allowed:
        shown = "\n".join(f"  {record.source}: {record.uri}: {record.reason}" for record in skipped[:20])
        more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        raise TooManyBadInputs(
            f"{len(skipped)} of {len(inputs)} inputs are unreadable, over max_bad_inputs={limit}:\n{shown}{more}"
        )
    return skipped
