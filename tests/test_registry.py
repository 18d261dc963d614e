"""MLflow registry with a real SQLite store: versions, aliases, the champion gate, lineage, reload."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from helpers.tasks import sentiment_task, tiny_pretrained, write_sentiment_csv
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from pipeline.config import RegistryConfig
from pipeline.registry import list_models, pretraining_gain, register_model, set_alias, tracking_uri_for
from pipeline.train.evaluate import evaluate_task
from pipeline.train.finetune import FinetuneResult, finetune

LINEAGE = {
    "dataset_version": "0123456789abcdef",
    "manifest_sha256": "ab" * 32,
    "config_hash": "cd" * 32,
    "git_commit": "deadbeef",
    "contracts": json.dumps({"documents.v1": "passed 12/12"}),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneResult, object]:
    root = tmp_path_factory.mktemp("finetuned")
    task = sentiment_task(write_sentiment_csv(root / "reviews.csv"), epochs=4)
    return finetune(task, tiny_pretrained(root / "pretrained"), root / "model"), task


def _register(run_dir: Path, result: FinetuneResult, config: RegistryConfig, **metric_overrides: float) -> dict:
    (run_dir / "report.json").write_text(json.dumps(result.evaluation))
    return register_model(
        result.model_dir,
        config=config,
        tracking_uri=tracking_uri_for(run_dir, config.tracking_uri),
        params={"task": {"name": result.task, "lr": 3e-3}, "seed": 0},
        metrics={**result.metrics, **metric_overrides},
        curves=result.curves(),
        lineage=LINEAGE,
        artifacts={"evaluation": run_dir / "report.json"},
        input_example=["这家酒店非常干净，很满意", "房间太脏了，很失望"],
    )


def test_default_store_is_sqlite_in_the_run_directory(tmp_path: Path) -> None:
    assert tracking_uri_for(tmp_path, None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_uri_for(tmp_path, "http://mlflow:5000") == "http://mlflow:5000"


def test_candidate_on_every_version_champion_only_when_beaten_by_margin(trained, tmp_path: Path) -> None:
    result, _ = trained
    config = RegistryConfig(champion_metric="accuracy", champion_margin=0.05)
    uri = tracking_uri_for(tmp_path, None)

    first = _register(tmp_path, result, config, accuracy=0.80)
    assert (first["version"], first["aliases"], first["promoted"]) == ("1", ["candidate", "champion"], True)

    second = _register(tmp_path, result, config, accuracy=0.84)  # better, but not by the 0.05 margin
    assert (second["aliases"], second["promoted"]) == (["candidate"], False)

    third = _register(tmp_path, result, config, accuracy=0.86)  # beats 0.80 + 0.05
    assert (third["aliases"], third["promoted"]) == (["candidate", "champion"], True)

    listed = {row["version"]: row for row in list_models(config, uri)}
    assert [v for v in listed] == ["3", "2", "1"]
    assert listed["3"]["aliases"] == ["candidate", "champion"] and listed["1"]["aliases"] == []
    assert listed["2"]["tags"]["champion_gate"].startswith("kept champion v1")
    assert listed["2"]["metrics"]["accuracy"] == 0.84
    assert (tmp_path / "mlartifacts").is_dir() and not (Path.cwd() / "mlruns").exists()

    set_alias(config, uri, "champion", 1)  # roll back
    assert {row["version"]: row["aliases"] for row in list_models(config, uri)}["1"] == ["champion"]
    with pytest.raises(mlflow.exceptions.MlflowException):
        set_alias(config, uri, "champion", 9)


def test_registered_model_reloads_and_reproduces_its_test_metric(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, task = trained
    config = RegistryConfig(champion_metric="accuracy")
    registered = _register(tmp_path, result, config)
    uri = tracking_uri_for(tmp_path, None)

    # as a user would: the store named by the environment, the model by its models:/ URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    downloaded = Path(mlflow.artifacts.download_artifacts(registered["model_uri"], dst_path=str(tmp_path / "dl")))
    assert AutoModel.from_pretrained(downloaded).config.id2label == {0: "0", 1: "1"}
    AutoModelForSequenceClassification.from_pretrained(downloaded)
    AutoTokenizer.from_pretrained(downloaded)
    assert evaluate_task(downloaded, task)["metrics"] == result.metrics

    client = mlflow.MlflowClient(uri)
    version = client.get_model_version(config.model_name, registered["version"])
    assert {key: version.tags[key] for key in LINEAGE} == LINEAGE
    run = client.get_run(registered["run_id"])
    assert run.data.params["task.lr"] == "0.003"
    assert run.data.metrics["accuracy"] == result.metrics["accuracy"]
    curve = client.get_metric_history(registered["run_id"], "sentiment/train_loss")
    assert [point.step for point in curve] == [row["epoch"] for row in result.history]
    assert {a.path for a in client.list_artifacts(registered["run_id"])} == {"model", "evaluation"}


def test_missing_champion_metric_is_refused_before_anything_is_logged(trained, tmp_path: Path) -> None:
    result, _ = trained
    with pytest.raises(ValueError, match="entity_f1"):
        _register(tmp_path, result, RegistryConfig(champion_metric="entity_f1"))
    assert list_models(RegistryConfig(), tracking_uri_for(tmp_path, None)) == []


def test_pretraining_gain_over_random_init_is_logged_as_a_metric(trained, tmp_path: Path) -> None:
    result, _ = trained
    random_init = {"accuracy": 0.70, "macro_f1": 0.60, "majority_accuracy": 0.5, "majority_macro_f1": 0.33}
    finetuned = {"accuracy": 0.75, "macro_f1": 0.55, "majority_accuracy": 0.5, "majority_macro_f1": 0.33}
    gain = pretraining_gain(finetuned, random_init)
    assert gain == pytest.approx({"random_init_accuracy": 0.70, "random_init_macro_f1": 0.60,
                                  "pretraining_gain_accuracy": 0.05, "pretraining_gain_macro_f1": -0.05})

    config = RegistryConfig(champion_metric="accuracy")
    registered = _register(tmp_path, result, config, **gain)
    (listed,) = list_models(config, tracking_uri_for(tmp_path, None))
    assert listed["version"] == registered["version"]
    assert listed["metrics"]["pretraining_gain_accuracy"] == pytest.approx(0.05)
    assert listed["metrics"]["random_init_macro_f1"] == pytest.approx(0.60)
