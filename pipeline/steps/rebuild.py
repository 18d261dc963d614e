"""An unchanged rebuild: the version a build would publish is known before its global steps run.

A build's version is a function of what reaches its global steps: the staged partitions (whose directories
are named by their input fingerprint, config section and code version), the inputs as the manifest lists
them, the config, the contracts' suites and the code. After a publish, the build remembers that key and
the manifest it led to, under the work URL. A later build with the same key (every partition from cache,
nothing else changed) takes that version again instead of deduplicating, writing and validating the same
shards to the same bytes: it only points LATEST at it. A key whose version lost its manifest or any of its
files is ignored, and the build runs in full.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from pipeline import contracts, storage, versions
from pipeline.config import NOT_DATASET_CONTENT, CorpusflowConfig
from pipeline.schema import InputRecord
from pipeline.steps.partitions import StagedPartition, staged_key
from pipeline.steps.provenance import code_version

# Sections that never change what a build writes (the runner, training) or that are written once per version
# (the card); output_uri stays in: the key also says where the version was published.
NOT_IN_CONTENT = {name: True for name in NOT_DATASET_CONTENT if name != "output_uri"}


def build_key(config: CorpusflowConfig, inputs: Sequence[InputRecord], staged: Sequence[StagedPartition],
              datasets_uri: str, contracts_dir: str) -> str:
    """What decides the version this build publishes, and where: equal keys, equal versions.
    `datasets_uri` and `contracts_dir` are the build's resolved ones (absolute, or URLs)."""
    names = (config.contracts.documents_suite, config.contracts.rejects_suite)
    suites = {name: contracts.suite_path(contracts_dir, name).read_text(encoding="utf-8")
              for name in names} if config.contracts.enabled else {}
    parts = {
        "config": config.model_dump(mode="json", exclude=NOT_IN_CONTENT),
        "datasets": datasets_uri,
        "inputs": [record.model_dump(mode="json") for record in inputs],
        "partitions": staged_key(staged),
        "suites": suites,
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def remember(work_uri: str, key: str, manifest_uri: str) -> None:
    storage.write_text(_memo(work_uri, key), json.dumps({"manifest": manifest_uri}))


def recall(work_uri: str, key: str) -> str | None:
    """The manifest an earlier build with this key published, if it and every file it lists are still there."""
    memo = _memo(work_uri, key)
    if not storage.exists(memo):
        return None
    manifest_uri = json.loads(storage.read_text(memo))["manifest"]
    if not storage.exists(manifest_uri):
        return None
    manifest = versions.load_manifest(manifest_uri)
    root = versions.version_dir(manifest_uri)
    files = [shard.path for shard in manifest.shards + manifest.quarantined + manifest.rejects] + [versions.LEDGER]
    present = set(storage.list_files(root))  # one listing, not a request per file on an object store
    return manifest_uri if all(path in present for path in files) else None


def _memo(work_uri: str, key: str) -> str:
    return storage.join(work_uri, "built", f"{key}.json")
