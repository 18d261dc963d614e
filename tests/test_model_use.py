"""Registered task models as people use them: `mlflow.pyfunc` gives label names and scores, or entity spans;
the registered folder is still a transformers model and carries its card; `corpusflow serve-model` answers
`/invocations` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers.tasks import ner_task, sentiment_task, tiny_pretrained, write_sentiment_csv
from seqeval.metrics.sequence_labeling import get_entities
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from flows.servers import free_port
from pipeline.config import ModelConfig, RegistryConfig, TaskConfig, registered_model_name
from pipeline.model_card import Pretraining, write_model_card
from pipeline.registry import ENTITY_SPANS, LABEL_AND_SCORE, TEXTS, pretraining_gain, register_model, tracking_uri_for
from pipeline.train.evaluate import load_task_model, predict_sequence, predict_tokens
from pipeline.train.finetune import FinetuneResult, finetune
from pipeline.train.pretrain import save_random_init
from pipeline.train.tasks import TaskDataRejected, example_texts, load_task

REPO = Path(__file__).resolve().parents[1]
ENCODER = "tiny"
LABEL_NAMES = {"0": "negative", "1": "positive"}
REVIEWS = ["这家酒店非常干净，很满意", "前台服务态度恶劣，再也不来"]
SENTENCES = ["张伟去北京。", "李娜离开上海。"]
LINEAGE = {"dataset": "fixture", "dataset_version": "0123456789abcdef", "manifest_uri": "/data/manifest.json",
           "manifest_sha256": "ab" * 32, "config_hash": "cd" * 32, "git_commit": "deadbeef",
           "contracts": "documents=1", "contract_results": "4/4 usable shards passed; 0 quarantined"}
PRETRAINING = Pretraining(arch="bert", steps=20, tokens_seen=10_240, train_seconds=3.5, tokens_per_s=2_925.7,
                          validation_loss=5.2, validation_perplexity=181.3)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two task models registered as the chain registers them (card, then registry), in a run directory with
    the config that names them: sentiment with numbered labels named by `label_names`, and NER."""
    root = tmp_path_factory.mktemp("model-use")
    pretrained = tiny_pretrained(root / "pretrained")
    random_init = save_random_init(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                               max_seq_len=64), pretrained, root / "random-init", seed=0)
    tasks = [sentiment_task(write_sentiment_csv(root / "reviews.csv"), epochs=8, label_names=LABEL_NAMES),
             ner_task(root / "ner", epochs=8)]
    run_dir = root / "run"
    results: dict[str, FinetuneResult] = {}
    gains: dict[str, dict[str, float]] = {}
    for task in tasks:
        results[task.name] = finetune(task, pretrained, root / "models" / task.name)
        if task.name == "sentiment":  # a random-init baseline for one task; the other's card goes without
            baseline = finetune(task, random_init, root / "random-init-models" / task.name)
            gains[task.name] = pretraining_gain(results[task.name].metrics, baseline.metrics)
        else:
            gains[task.name] = {}
        _register(results[task.name], task, run_dir, gains[task.name])
    config_path = root / "run.yaml"
    config_path.write_text(yaml.safe_dump({
        "dataset": "fixture", "run_dir": str(run_dir),
        "sources": [{"name": "zhwiki", "kind": "wiki", "lang": "zh", "format": "mediawiki",
                     "uri": str(REPO / "samples/wiki/zhwiki-sample.xml.bz2")}],
        "train": {"tasks": [task.model_dump(mode="json") for task in tasks]},
        "registry": {"model_name": ENCODER},
    }, allow_unicode=True))
    return {"tasks": {t.name: t for t in tasks}, "results": results, "gains": gains, "config": config_path,
            "tracking_uri": tracking_uri_for(run_dir, None)}


def _register(result: FinetuneResult, task: TaskConfig, run_dir: Path, gain: dict[str, float]) -> None:
    name = registered_model_name(RegistryConfig(model_name=ENCODER), task.name)
    contamination = {"contaminated": 1, "test_items": 12, "n": 13, "unit": "char"}
    evaluation = {**result.evaluation, "decontamination": contamination}
    write_model_card(result.model_dir, name=name, task=task, evaluation=evaluation, gain=gain, lineage=LINEAGE,
                     pretraining=PRETRAINING, license_id="cc-by-sa-4.0")
    register_model(result.model_dir, config=RegistryConfig(model_name=name, champion_metric=task.primary_metric),
                   tracking_uri=tracking_uri_for(run_dir, None), params={"task": task.name},
                   metrics={**result.metrics, **gain}, curves=result.curves(), lineage=LINEAGE, artifacts={},
                   input_example=example_texts(task))


def test_sequence_champion_loads_through_pyfunc_and_answers_label_names_and_scores(
    run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _champion(run, "sentiment", monkeypatch)
    predictions = model.predict(REVIEWS)

    assert list(predictions.columns) == ["label", "score"]
    task = run["tasks"]["sentiment"]
    folder_model, tokenizer = load_task_model(run["results"]["sentiment"].model_dir, task)
    # the same answers as the evaluation that scored the model, in names
    assert list(predictions["label"]) == predict_sequence(folder_model, tokenizer, REVIEWS, task.max_seq_len)
    assert set(predictions["label"]) <= {"negative", "positive"}
    assert all(0.5 <= score <= 1.0 for score in predictions["score"])  # the winner of two classes
    assert model.metadata.get_input_schema() == TEXTS and model.metadata.get_output_schema() == LABEL_AND_SCORE
    assert model.input_example == example_texts(task)
    assert model.metadata.metadata["labels"] == ["negative", "positive"]


def test_token_champion_loads_through_pyfunc_and_answers_entity_spans(
    run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _champion(run, "ner", monkeypatch)
    spans = model.predict(SENTENCES)

    task = run["tasks"]["ner"]
    folder_model, tokenizer = load_task_model(run["results"]["ner"].model_dir, task)
    tags = predict_tokens(folder_model, tokenizer, [list(text) for text in SENTENCES], task.max_seq_len)
    # each character is a word here, so the BIO tags' chunks are character spans (seqeval ends are inclusive)
    assert [[(s["entity"], s["start"], s["end"]) for s in found] for found in spans] == \
        [[(kind, start, end + 1) for kind, start, end in get_entities(sentence)] for sentence in tags]
    assert any(spans), "the tagger found no entity at all: nothing was compared"
    for text, found in zip(SENTENCES, spans):
        assert all(s["text"] == text[s["start"]:s["end"]] and 0 < s["score"] <= 1 for s in found)
    assert model.metadata.get_output_schema() == ENTITY_SPANS


def test_a_text_longer_than_the_model_reads_is_cut_or_tagged_window_by_window(
    run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_text = "".join(SENTENCES * 40)  # 520 characters; the models read 32 tokens at once
    (label,) = _champion(run, "sentiment", monkeypatch).predict([long_text])["label"]
    assert label in {"negative", "positive"}
    (spans,) = _champion(run, "ner", monkeypatch).predict([long_text])
    assert max(s["end"] for s in spans) > len(long_text) // 2  # tagged past the first window
    assert all(s["text"] == long_text[s["start"]:s["end"]] for s in spans)
    assert len({s["start"] for s in spans}) == len(spans)  # overlapping windows report an entity once


def test_registered_folder_is_still_a_transformers_model_and_carries_its_card(
    run: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run["tracking_uri"])
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{ENCODER}-sentiment@champion", dst_path=str(tmp_path)))

    assert AutoModelForSequenceClassification.from_pretrained(folder).config.id2label == {0: "negative", 1: "positive"}
    AutoTokenizer.from_pretrained(folder)
    assert (folder / "MLmodel").is_file() and (folder / "code" / "corpusflow_pyfunc.py").is_file()

    card = (folder / "README.md").read_text(encoding="utf-8")
    _, header, body = card.split("---\n", 2)
    metadata = yaml.safe_load(header)
    assert (metadata["pipeline_tag"], metadata["language"], metadata["license"]) == \
        ("text-classification", ["zh"], "cc-by-sa-4.0")
    metrics = run["results"]["sentiment"].metrics
    (result,) = metadata["model-index"][0]["results"]
    assert {m["name"]: m["value"] for m in result["metrics"]} == \
        {"accuracy": round(metrics["accuracy"], 4), "macro F1": round(metrics["macro_f1"], 4)}
    gain = run["gains"]["sentiment"]
    assert (f"| **accuracy** | {metrics['accuracy']:.4f} | {metrics['majority_accuracy']:.4f} | "
            f"{gain['random_init_accuracy']:.4f} | {gain['pretraining_gain_accuracy']:+.4f} |") in body
    assert "| 0 | negative |" in body and "| 1 | positive |" in body
    assert LINEAGE["dataset_version"] in body and LINEAGE["manifest_sha256"] in body
    assert "1 of 12 test items share a 13-char n-gram" in body
    assert "## Intended use and limits" in body
    assert f'mlflow.pyfunc.load_model("models:/{ENCODER}-sentiment@champion")' in body


def test_token_model_card_names_its_entity_types(run: dict) -> None:
    card = (run["results"]["ner"].model_dir / "README.md").read_text(encoding="utf-8")
    metadata = yaml.safe_load(card.split("---\n", 2)[1])
    assert metadata["pipeline_tag"] == "token-classification"
    assert "named-entity tagging (2 entity types, BIO tags)" in card
    assert "random-init baseline" in card  # the column stays, empty, when no baseline was trained
    AutoModelForTokenClassification.from_pretrained(run["results"]["ner"].model_dir)


def test_numbered_labels_take_their_names_and_an_unnamed_label_is_refused(tmp_path: Path) -> None:
    reviews = write_sentiment_csv(tmp_path / "reviews.csv")
    data = load_task(sentiment_task(reviews, label_names={0: "negative", 1: "positive"}))  # YAML reads 0 as int
    assert data.labels == ["negative", "positive"]

    with pytest.raises(TaskDataRejected, match=r"reviews.csv row \d+: label '1' has no name"):
        load_task(sentiment_task(reviews, label_names={"0": "negative"}))
    with pytest.raises(ValueError, match="label_names is for sequence_classification"):
        ner_task(tmp_path / "ner", label_names={"0": "x"})


@pytest.mark.slow
def test_serve_model_answers_two_texts_on_loopback(run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    command = [sys.executable, "-m", "flows.cli", "serve-model", "sentiment", "-c", str(run["config"]),
               "--port", str(port)]
    cli = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        printed = _lines_until(cli, "Ctrl-C stops it")
        url = f"http://127.0.0.1:{port}/invocations"
        assert f"serving {ENCODER}-sentiment version 1 at {url}" in printed, printed

        answer = _post(url, {"inputs": REVIEWS})
        in_process = _champion(run, "sentiment", monkeypatch).predict(REVIEWS)
        assert [p["label"] for p in answer["predictions"]] == list(in_process["label"])
        assert [p["score"] for p in answer["predictions"]] == pytest.approx(list(in_process["score"]), abs=1e-6)

        curl = next(line for line in printed.splitlines() if line.startswith("curl "))
        if shutil.which("curl"):  # the printed example, as a person pastes it
            pasted = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60, check=True)
            assert len(json.loads(pasted.stdout)["predictions"]) == len(example_texts(run["tasks"]["sentiment"]))
    finally:
        os.killpg(cli.pid, signal.SIGTERM)
        cli.wait(timeout=60)
    with pytest.raises(urllib.error.URLError):  # the CLI took its server's whole process group down with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5)


def _champion(run: dict, task: str, monkeypatch: pytest.MonkeyPatch) -> mlflow.pyfunc.PyFuncModel:
    """As a user loads it: the store named by the environment, the model by its alias."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run["tracking_uri"])
    return mlflow.pyfunc.load_model(f"models:/{ENCODER}-{task}@champion")


def _lines_until(process: subprocess.Popen, marker: str) -> str:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"serve-model exited ({process.wait()}) before serving:\n{''.join(lines)}")


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())
