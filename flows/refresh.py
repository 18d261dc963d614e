"""The scheduled parent: build the corpus, then train only when the dataset version changed.

A refresh whose inputs did not change recomputes nothing but the cheap global steps (partitions come from
cache) and yields the same dataset version id, so no model is retrained for it unless forced.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.build_corpus import build_corpus
from flows.train_models import train_models
from pipeline.config import load_config, registered_model_name
from pipeline.registry import list_models, tracking_uri_for
from pipeline.versions import load_manifest


@flow(name="refresh")  # no log_prints: see train_models
def refresh(config_path: str, force_train: bool = False, wait: bool = True) -> dict:
    config = load_config(config_path)
    manifest_path = build_corpus(config_path, refresh=True, wait=wait)
    version = load_manifest(manifest_path).version
    if not config.train.enabled:
        return {"dataset_version": version, "manifest": manifest_path, "trained": False,
                "why": "training disabled in config"}
    if not force_train and _already_trained(config, version):
        get_run_logger().info("dataset version %s already has registered models: nothing to train", version)
        return {"dataset_version": version, "manifest": manifest_path, "trained": False,
                "why": "dataset version unchanged"}
    result = train_models(config_path, manifest_path=manifest_path)
    return {"dataset_version": version, "trained": True, **result}


def _already_trained(config, version: str) -> bool:
    tracking_uri = tracking_uri_for(Path(config.run_dir), config.registry.tracking_uri)
    names = [registered_model_name(config.registry, task.name) for task in config.train.tasks]
    for name in names:
        registry = config.registry.model_copy(update={"model_name": name})
        if not any(m["tags"].get("dataset_version") == version for m in list_models(registry, tracking_uri)):
            return False
    return bool(names)
