"""What changed between two dataset versions: documents added, removed and changed, per source.

Documents are matched by their stable `id`; a document present in both versions whose `content_hash`
differs is "changed". Shards are streamed batch by batch and only (id -> source, hash) is kept, so memory
grows with the number of documents (about 150 bytes each), never with their text. Besides the document
counts, the result names what differs in the manifests (inputs, config hash, ledger totals), which is
usually why the documents differ.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipeline import storage
from pipeline.schema import Manifest
from pipeline.versions import load_manifest, version_dir

CHANGE_KINDS = ("added", "removed", "changed", "unchanged")
EXAMPLES_PER_KIND = 5  # ids listed per source and kind, enough to look a few up in the shards


def document_keys(manifest_uri: str, manifest: Manifest) -> dict[str, tuple[str, bytes]]:
    """id -> (source, content hash) of every document in the version's usable shards."""
    keys: dict[str, tuple[str, bytes]] = {}
    for shard in manifest.usable_shards():
        shard_uri = storage.join(version_dir(manifest_uri), shard.path)
        with storage.open_arrow(shard_uri, shard.sha256) as (_, batches):
            for batch in batches:
                ids = batch.column("id").to_pylist()
                sources = batch.column("source").to_pylist()
                hashes = batch.column("content_hash").to_pylist()
                for doc_id, source, content_hash in zip(ids, sources, hashes):
                    keys[doc_id] = (source, bytes.fromhex(content_hash))  # 32 bytes instead of 64 chars
    return keys


def diff_versions(manifest_a: str, manifest_b: str) -> dict[str, Any]:
    """Compare version A (older) with version B (newer).

    Returns {"a", "b": version summaries; "totals" and "by_source": counts of added, removed, changed,
    unchanged; "examples": a few ids per source and kind; "config_changed"; "inputs": inputs whose
    fingerprint differs; "ledger_by_source": ledger totals that differ, as [A, B]}.
    """
    old, new = load_manifest(manifest_a), load_manifest(manifest_b)
    old_keys = document_keys(manifest_a, old)
    new_keys = document_keys(manifest_b, new)
    by_source: dict[str, Counter[str]] = {}
    examples: dict[str, dict[str, list[str]]] = {}

    def record(source: str, kind: str, doc_id: str) -> None:
        by_source.setdefault(source, Counter())[kind] += 1
        listed = examples.setdefault(source, {}).setdefault(kind, [])
        if kind != "unchanged" and len(listed) < EXAMPLES_PER_KIND:
            listed.append(doc_id)

    for doc_id in sorted(new_keys):  # sorted: the listed examples are the same on every run
        source, content_hash = new_keys[doc_id]
        if doc_id not in old_keys:
            record(source, "added", doc_id)
        else:
            record(source, "changed" if old_keys[doc_id][1] != content_hash else "unchanged", doc_id)
    for doc_id in sorted(old_keys.keys() - new_keys.keys()):
        record(old_keys[doc_id][0], "removed", doc_id)

    totals = Counter({kind: 0 for kind in CHANGE_KINDS})
    for counts in by_source.values():
        totals.update(counts)
    return {
        "a": _version_summary(manifest_a, old, len(old_keys)),
        "b": _version_summary(manifest_b, new, len(new_keys)),
        "totals": dict(totals),
        "by_source": {
            source: {kind: counts.get(kind, 0) for kind in CHANGE_KINDS} for source, counts in sorted(by_source.items())
        },
        "examples": {source: {k: v for k, v in kinds.items() if v} for source, kinds in sorted(examples.items())},
        "config_changed": old.config_hash != new.config_hash,
        "inputs": _input_changes(old, new),
        "ledger_by_source": _ledger_changes(old, new),
    }


def _version_summary(manifest_uri: str, manifest: Manifest, documents: int) -> dict[str, Any]:
    return {
        "manifest": manifest_uri,
        "dataset": manifest.dataset,
        "version": manifest.version,
        "documents": documents,
        "config_hash": manifest.config_hash,
    }


def _input_changes(old: Manifest, new: Manifest) -> list[dict[str, str | None]]:
    """Inputs whose fingerprint differs, or that exist on one side only; keyed by (source, uri)."""
    before = {(i.source, i.uri): i.fingerprint for i in old.inputs}
    after = {(i.source, i.uri): i.fingerprint for i in new.inputs}
    changes = []
    for source, uri in sorted(before.keys() | after.keys()):
        fingerprint_a, fingerprint_b = before.get((source, uri)), after.get((source, uri))
        if fingerprint_a != fingerprint_b:
            status = "added" if fingerprint_a is None else "removed" if fingerprint_b is None else "changed"
            changes.append({"source": source, "uri": uri, "status": status, "a": fingerprint_a, "b": fingerprint_b})
    return changes


def _ledger_changes(old: Manifest, new: Manifest) -> dict[str, dict[str, list[int]]]:
    """Per source, the ledger totals that differ, as [A, B]."""
    changes: dict[str, dict[str, list[int]]] = {}
    for source in sorted(old.ledger_by_source.keys() | new.ledger_by_source.keys()):
        a, b = old.ledger_by_source.get(source, {}), new.ledger_by_source.get(source, {})
        differing = {k: [a.get(k, 0), b.get(k, 0)] for k in sorted(a.keys() | b.keys()) if a.get(k, 0) != b.get(k, 0)}
        if differing:
            changes[source] = differing
    return changes


def render_diff(result: dict[str, Any]) -> str:
    """The diff as plain text for a terminal: header, per-source table, then the reasons."""
    a, b = result["a"], result["b"]
    lines = [
        f"dataset {b['dataset']}: {a['version']} ({a['documents']} docs) -> {b['version']} ({b['documents']} docs)",
        "",
        f"{'source':<24}" + "".join(f"{kind:>11}" for kind in CHANGE_KINDS),
    ]
    for source, counts in result["by_source"].items():
        lines.append(f"{source:<24}" + "".join(f"{counts[kind]:>11}" for kind in CHANGE_KINDS))
    lines.append(f"{'total':<24}" + "".join(f"{result['totals'][kind]:>11}" for kind in CHANGE_KINDS))
    lines += ["", "why:"]
    lines.append(f"  config: {'changed' if result['config_changed'] else 'same'}")
    if not result["inputs"]:
        lines.append("  inputs: same fingerprints")
    for change in result["inputs"]:
        lines.append(f"  input {change['status']}: {change['source']} {change['uri']}")
    for source, totals in result["ledger_by_source"].items():
        moved = ", ".join(f"{outcome} {before} -> {after}" for outcome, (before, after) in totals.items())
        lines.append(f"  ledger {source}: {moved}")
    for source, kinds in result["examples"].items():
        for kind, ids in kinds.items():
            lines.append(f"  e.g. {kind} in {source}: {', '.join(ids)}")
    return "\n".join(lines)
