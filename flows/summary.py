"""The last screen of `corpusflow run` and `corpusflow train`: what a person needs from the result.

The dataset version and what happened to its records, each task's score next to the majority and
random-init baselines and whether it became champion, then where to look next (the UIs) and how to use a
model. The full result, every figure at full precision, is what `--json` prints instead.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.config import CorpusflowConfig, registered_model_name
from pipeline.registry import CHAMPION, list_models, tracking_uri_for
from pipeline.versions import load_manifest

OUTCOMES = ("filtered", "duplicate", "rejected")


def print_run_summary(console: Console, result: dict[str, Any], config: CorpusflowConfig, config_path: Path) -> None:
    console.print()
    _dataset(console, result)
    tasks = result.get("tasks") or {}
    if tasks:
        console.print(models_table(tasks, "Task models (test split)"))
        _language_model(console, result.get("lm") or {})
    else:
        console.print(f"No training: {result.get('why', 'nothing to train')}.", highlight=False)
        champions = registered_champions(config)
        if champions:
            console.print(models_table(champions, "Champions in the registry (test split)"))
    _where_next(console, config, config_path, [t.name for t in config.train.tasks])


def models_table(tasks: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table("task", "metric", "model", "majority", "random init", "gain", "registered",
                  title=title, title_justify="left")
    for name, task in tasks.items():
        metric = task["primary_metric"]
        gain = task.get(f"pretraining_gain_{metric}")
        table.add_row(name, metric, _figure(task.get(metric)), _figure(task.get(f"majority_{metric}")),
                      _figure(task.get(f"random_init_{metric}")), "" if gain is None else f"{gain:+.4f}",
                      _registered(task))
    return table


def registered_champions(config: CorpusflowConfig) -> dict[str, dict[str, Any]]:
    """Each task's champion version, in the shape of a training result's task entry."""
    tracking_uri = tracking_uri_for(Path(config.run_dir), config.registry.tracking_uri)
    champions = {}
    for task in config.train.tasks:
        registry = config.registry.model_copy(update={"model_name": registered_model_name(config.registry, task.name)})
        for version in list_models(registry, tracking_uri):
            if CHAMPION in version["aliases"]:
                champions[task.name] = {**version["metrics"], "primary_metric": task.primary_metric,
                                        "model_name": registry.model_name, "registered_version": version["version"],
                                        "promoted": True}
    return champions


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _registered(task: dict[str, Any]) -> str:
    where = f"{task['model_name']} v{task['registered_version']}"
    return f"{where} [green]champion[/green]" if task["promoted"] else f"{where} candidate (champion kept)"


def _dataset(console: Console, result: dict[str, Any]) -> None:
    manifest = load_manifest(result["manifest"])
    totals = manifest.ledger_totals
    console.print(f"Dataset [bold]{manifest.dataset}[/bold] version [bold]{manifest.version}[/bold]  "
                  f"({result['manifest']})", highlight=False)
    dropped = ", ".join(f"{totals.get(outcome, 0):,} {outcome}" for outcome in OUTCOMES)
    console.print(f"  {totals.get('read', 0):,} records read: {totals.get('kept', 0):,} kept, {dropped}",
                  highlight=False)


def _language_model(console: Console, lm: dict[str, float]) -> None:
    if "loss" in lm:
        console.print(f"Pretrained encoder on the validation split: loss {lm['loss']:.4f}, "
                      f"perplexity {lm.get('perplexity', float('nan')):.1f}", highlight=False)


def _where_next(console: Console, config: CorpusflowConfig, config_path: Path, tasks: list[str]) -> None:
    option = f"-c {shlex.quote(str(config_path))}"
    lines = []
    if tasks:
        lines += [f"Serve a model: corpusflow serve-model {tasks[0]} {option}",
                  f"All versions:  corpusflow models {option}"]
    prefect_api = os.environ.get("PREFECT_API_URL")
    if prefect_api:
        lines.append(f"Prefect UI:    {prefect_api.removesuffix('/api')}   (flow runs, logs, artifacts)")
    if config.registry.tracking_uri:
        lines.append(f"MLflow:        {config.registry.tracking_uri}")
    else:
        lines.append(f"MLflow UI:     corpusflow ui {option}   (store {Path(config.run_dir) / 'mlflow.db'})")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
