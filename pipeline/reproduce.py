"""Reproducing a dataset version: the config it was built with, and the comparison of two builds."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline import storage
from pipeline.config import CorpusflowConfig
from pipeline.versions import load_manifest, version_dir

CONFIG_FILE = "config.json"  # the resolved config, stored beside the manifest of every version


def save_build_config(root: str, config: CorpusflowConfig) -> None:
    storage.write_text(storage.join(str(root), CONFIG_FILE), config.model_dump_json(indent=2))


def rebuild_config(manifest_path: str, scratch: Path) -> Path:
    """A config file that rebuilds the version into `scratch` (paths in it resolve from the current directory)."""
    config = CorpusflowConfig.model_validate_json(storage.read_text(storage.join(version_dir(manifest_path), CONFIG_FILE)))
    rebuilt = config.model_copy(update={"run_dir": str(scratch / "run"), "output_uri": None})
    path = scratch / "config.yaml"
    path.write_text(yaml.safe_dump(rebuilt.model_dump(mode="json"), allow_unicode=True), encoding="utf-8")
    return path


def compare_manifests(original_path: str, rebuilt_path: str) -> list[str]:
    """Lines naming every shard whose hash differs or that exists in only one build; empty when identical."""
    original, rebuilt = load_manifest(original_path), load_manifest(rebuilt_path)
    differences = []
    groups = (("shards", original.shards + original.quarantined, rebuilt.shards + rebuilt.quarantined),
              ("rejects", original.rejects, rebuilt.rejects))
    for kind, before, after in groups:
        old = {s.path: s.sha256 for s in before}
        new = {s.path: s.sha256 for s in after}
        for path in sorted(old.keys() | new.keys()):
            if path not in new:
                differences.append(f"{kind}: {path} missing from the rebuild")
            elif path not in old:
                differences.append(f"{kind}: {path} only in the rebuild")
            elif old[path] != new[path]:
                differences.append(f"{kind}: {path} sha256 {old[path][:12]} != {new[path][:12]}")
    if original.version != rebuilt.version and not differences:
        differences.append(f"manifest: version {original.version} != {rebuilt.version} (ledger or contracts differ)")
    return differences
