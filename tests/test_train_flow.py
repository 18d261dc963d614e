"""The whole chain through Prefect: build, train, evaluate, register (a champion that pyfunc loads), the summary
a person reads at the end; a second refresh trains nothing."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import mlflow
import pytest
import yaml
from rich.console import Console

from flows.summary import print_run_summary
from pipeline.config import ContinuationConfig, CorpusflowConfig, load_config, registered_model_name
from pipeline.registry import list_models, tracking_uri_for

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_refresh_trains_registers_with_lineage_and_skips_an_unchanged_version(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
        assert tags["training_config_hash"] == config.training_hash()
        assert tags["git_commit"] and "documents.v1" in tags["contracts"]

    # the champion as a person uses it: the demo's 0/1 sentiment labels come back as the names in label_names
    reviews = ["房间干净，服务热情，下次还来", "太吵了，很失望"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    champion = mlflow.pyfunc.load_model(f"models:/{config.registry.model_name}-sentiment_zh@champion")
    predictions = champion.predict(reviews)
    assert set(predictions["label"]) <= {"negative", "positive"} and len(predictions) == 2

    screen = _summary(first, config, config_path)
    assert f"Dataset demo version {first['dataset_version']}" in screen
    for name, task in first["tasks"].items():
        metric = task["primary_metric"]
        figures = [f"{task[key]:.4f}" for key in (metric, f"majority_{metric}", f"random_init_{metric}")]
        gain = f"{task[f'pretraining_gain_{metric}']:+.4f}"
        cells = [name, metric, *figures, gain, f"{task['model_name']} v1 champion"]
        assert re.search(r"[\s│]+".join(re.escape(cell) for cell in cells), screen), screen
    assert "corpusflow serve-model" in screen and "Prefect UI:" in screen

    second = refresh(str(config_path))
    assert second == {"dataset_version": first["dataset_version"], "manifest": first["manifest"], "trained": False,
                      "why": "dataset version unchanged"}
    screen = _summary(second, config, config_path)
    assert "No training: dataset version unchanged." in screen
    assert "Champions in the registry" in screen and f"{first['tasks']['ner_zh']['model_name']} v1 champion" in screen

    # A later refresh adds text and continues the champion instead of starting over.
    # New reviews are pairs of the sample reviews joined, so the demo's tokenizer still covers them.
    with (REPO / "samples" / "comments" / "reviews_gbk.csv").open(encoding="gbk", newline="") as handle:
        sample_reviews = [row["review"] for row in csv.DictReader(handle)]
    extra = tmp_path / "extra_reviews.csv"
    with extra.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "label"])
        for first_review, second_review in list(itertools.combinations(sample_reviews, 2))[::7][:40]:
            writer.writerow([f"{first_review} {second_review}", "1"])
    data["sources"].append({"name": "reviews_extra", "kind": "comments", "lang": "zh", "uri": str(extra),
                            "format": "csv", "fields": {"text": "review", "label": "label"}})
    data["train"]["continue_from"] = "champion"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True))
    third = refresh(str(config_path))
    assert third["trained"], third
    parent = f"{registered_model_name(config.registry, 'sentiment_zh')}/1"
    assert third["pretrain"]["continued_from"] == parent, third["pretrain"]["note"]
    assert 0 < third["pretrain"]["steps"] < data["train"]["pretrain"]["max_steps"]
    budget = re.search(r"; (\d+) steps, [\d,]+ tokens of new text, replay share (0\.\d\d) of its tokens$",
                       third["pretrain"]["note"])
    assert budget and int(budget[1]) == third["pretrain"]["steps"], third["pretrain"]["note"]
    configured = ContinuationConfig(**data["train"].get("continuation", {})).replay_share
    assert float(budget[2]) >= configured - 0.005, third["pretrain"]["note"]  # more only when steps allow more passes
    registry = config.registry.model_copy(update={"model_name": registered_model_name(config.registry, "sentiment_zh")})
    newest = max(list_models(registry, tracking_uri), key=lambda version: int(version["version"]))
    assert newest["tags"]["parent_version"] == parent
    assert newest["tags"]["continuation"].startswith(f"continued from {parent}")
    assert newest["tags"]["dataset_version"] == third["dataset_version"] != first["dataset_version"]


def _summary(result: dict, config: CorpusflowConfig, config_path: Path) -> str:
    console = Console(record=True, width=200)
    print_run_summary(console, result, config, config_path)
    return console.export_text()
