"""The whole chain through Prefect: build, train, evaluate, register; a second refresh trains nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config, registered_model_name
from pipeline.registry import list_models, tracking_uri_for

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_refresh_trains_registers_with_lineage_and_skips_an_unchanged_version(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.refresh import refresh

    data = load_config(REPO / "configs" / "demo.yaml").model_dump(mode="json")
    data["run_dir"] = str(tmp_path / "run")
    data["train"]["pretrain"].update(max_steps=40, checkpoint_every=20, log_every=10)
    data["train"]["baseline_random_init"] = True
    for task in data["train"]["tasks"]:
        task.update(epochs=2)
    config_path = tmp_path / "demo.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True))

    first = refresh(str(config_path))
    assert first["trained"] and set(first["tasks"]) == {"sentiment_zh", "ner_zh"}
    assert first["lm"]["perplexity"] > 1
    sentiment = first["tasks"]["sentiment_zh"]
    assert {"accuracy", "macro_f1", "majority_accuracy", "majority_macro_f1"} <= set(sentiment)
    assert first["tasks"]["ner_zh"]["majority_entity_f1"] == 0.0

    config = load_config(config_path)
    tracking_uri = tracking_uri_for(Path(config.run_dir), config.registry.tracking_uri)
    for task in config.train.tasks:
        registry = config.registry.model_copy(update={"model_name": registered_model_name(config.registry, task.name)})
        (version,) = list_models(registry, tracking_uri)
        assert {"candidate", "champion"} <= set(version["aliases"])
        metric = task.primary_metric
        gain = version["metrics"][f"pretraining_gain_{metric}"]
        assert gain == pytest.approx(version["metrics"][metric] - version["metrics"][f"random_init_{metric}"])
        assert first["tasks"][task.name][f"pretraining_gain_{metric}"] == pytest.approx(gain)
        tags = version["tags"]
        assert tags["dataset_version"] == first["dataset_version"]
        assert len(tags["manifest_sha256"]) == 64 and tags["config_hash"] == config.config_hash()
        assert tags["git_commit"] and "documents.v1" in tags["contracts"]

    second = refresh(str(config_path))
    assert second == {"dataset_version": first["dataset_version"], "trained": False,
                      "why": "dataset version unchanged"}
