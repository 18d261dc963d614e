"""The manifest of a build: contract results applied, provenance, ledger totals, version id, accounting, limits.

The flow's last steps run these in this order, each a task, and publish only when every one has passed:
contracts applied -> manifest (accounting checked) -> limits.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.steps.writing import AssembledDataset
from pipeline.steps.provenance import code_version, library_versions
from pipeline.config import ContractsConfig, CorpusflowConfig
from pipeline.errors import UserError
from pipeline.label_skew import label_skews, rates_by_source
from pipeline.schema import InputRecord, Ledger, Manifest, ShardRecord
from pipeline.shards import quarantine


def apply_contracts(
    assembled: AssembledDataset, reports: list[dict | None], reject_reports: list[dict | None]
) -> AssembledDataset:
    """Record each shard's contract result; a shard that broke a critical expectation is quarantined.

    A report is None when contracts are switched off: the shard keeps no contract entry.
    """
    root = assembled.staging
    checked = [_apply_contract(root, shard, report) if report else shard
               for shard, report in zip(assembled.shards, reports, strict=True)]
    rejects = [r.model_copy(update={"contract": contract_summary(rep)}) if rep else r
               for r, rep in zip(assembled.rejects, reject_reports, strict=True)]
    return replace(assembled, shards=checked, rejects=rejects)


def contract_summary(report: dict) -> dict:
    """What of a validation report belongs in the manifest: content, not where its Data Docs lie."""
    failed = [e for e in report["expectations"] if not e["success"]]
    return {"suite": report["suite"], "version": report["version"], "success": report["success"],
            "critical_failed": report["critical_failed"],
            "failed": [{"type": e["type"], "column": e.get("column"), "severity": e["severity"],
                        "unexpected_count": e.get("unexpected_count")} for e in failed]}


def _apply_contract(root: str, shard: ShardRecord, report: dict) -> ShardRecord:
    shard = shard.model_copy(update={"contract": contract_summary(report)})
    return quarantine(root, shard, report) if report["critical_failed"] else shard


def build_manifest(
    config: CorpusflowConfig, inputs: list[InputRecord], assembled: AssembledDataset, contract_versions: dict[str, str],
) -> Manifest:
    """The manifest of an assembled dataset whose contracts were applied; its version id is its content hash."""
    ledger = Ledger.from_rows(assembled.ledger_rows)
    by_source: dict[str, Ledger] = {}
    for row in assembled.ledger_rows:
        by_source.setdefault(row["source"], Ledger()).add(row["outcome"], row["reason"], row["count"])
    manifest = Manifest(
        dataset=config.dataset,
        config_hash=config.config_hash(),
        code_version=code_version(),
        libraries=library_versions(),
        inputs=sorted(inputs, key=lambda i: (i.source, i.uri)),
        shards=assembled.usable_shards,
        quarantined=assembled.quarantined,
        rejects=assembled.rejects,
        ledger_totals=ledger.totals(),
        ledger_by_source={name: by_source[name].totals() for name in sorted(by_source)},
        notes_by_source=assembled.notes_by_source,
        drop_rate_by_label=rates_by_source(assembled.label_drop_rates),
        label_skews=[skew.message() for skew in label_skews(assembled.label_drop_rates)],
        contracts=contract_versions,
    )
    return manifest.model_copy(update={"version": manifest.content_hash()})


class AccountingError(RuntimeError):
    """Rows in shards and rejects do not add up to the records read: a bug, never a data problem."""


def check_accounting(manifest: Manifest) -> None:
    totals = manifest.ledger_totals
    kept_rows = sum(s.rows for s in manifest.shards) + sum(s.rows for s in manifest.quarantined)
    dropped_rows = sum(s.rows for s in manifest.rejects)
    if kept_rows != totals["kept"] or dropped_rows != totals["read"] - totals["kept"]:
        raise AccountingError(
            f"ledger says kept={totals['kept']} dropped={totals['read'] - totals['kept']}, "
            f"shards hold kept={kept_rows} dropped={dropped_rows}"
        )


class QuarantineLimitExceeded(UserError, RuntimeError):
    """More shards or rows broke their contracts than the config allows."""

    hint = ("nothing was published; read the reports under <dataset>/failed/<version>/quarantine/, fix the data "
            "or the contract, then build again")


def check_limits(contracts: ContractsConfig, manifest: Manifest) -> None:
    """Raise when the quarantined shards or rows are over the configured fractions."""
    total_shards = len(manifest.shards) + len(manifest.quarantined)
    total_rows = sum(s.rows for s in manifest.shards + manifest.quarantined)
    bad_rows = sum(s.rows for s in manifest.quarantined)
    if not manifest.quarantined or not total_shards:
        return
    shard_frac, row_frac = len(manifest.quarantined) / total_shards, bad_rows / max(total_rows, 1)
    if shard_frac > contracts.max_quarantined_shard_frac or row_frac > contracts.max_quarantined_row_frac:
        names = ", ".join(s.path for s in manifest.quarantined)
        raise QuarantineLimitExceeded(
            f"{len(manifest.quarantined)}/{total_shards} shards ({row_frac:.1%} of rows) quarantined, over the "
            f"limits ({contracts.max_quarantined_shard_frac:.1%} shards, "
            f"{contracts.max_quarantined_row_frac:.1%} rows): {names}"
        )
