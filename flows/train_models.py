"""Train from a dataset version: tokenizer -> pretrain -> fine-tune -> evaluate -> register.

1. A tokenizer is trained on the train split named by the manifest (only shards that passed contracts),
   unless the run continues a registered model (`train.continue_from`): then that model's tokenizer is
   kept, or the run falls back to a fresh start with a note when it can no longer be continued.
2. A transformer is pretrained from config, or from the parent's encoder on the new and changed documents
   with a replay of the old (GPU when there is one), the sources in steady token shares (`train.mix`); a
   retry resumes from its newest checkpoint, and one GPU task runs per GPU at a time.
3. It is fine-tuned on every task of the config, in parallel.
4. Language-model loss on the validation split, task metrics (of the saved models, reloaded) next to a
   majority baseline, and a decontamination report per task.
5. Each fine-tuned model gets a model card and is registered in MLflow as an MLflow model (loadable with
   `mlflow.pyfunc`, servable with `mlflow models serve`, still a `from_pretrained` folder) with the dataset
   version, manifest hash, config hash, commit and parent version, and the pretrained encoder it was
   fine-tuned from (what a later run continues); `champion` moves only when the new version beats it.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.concurrency.sync import concurrency
from prefect.logging import get_run_logger

from pipeline import plots
from pipeline.config import ContractsConfig, CorpusflowConfig, TaskConfig, load_config, registered_model_name
from pipeline.model_card import Pretraining, write_model_card
from pipeline.registry import pretraining_gain, register_model, tracking_uri_for
from pipeline.storage import file_sha256
from pipeline.train.continuation import PRETRAINED_ARTIFACT, Continuation, plan_continuation
from pipeline.train.evaluate import decontamination_report, evaluate_lm
from pipeline.train.finetune import FinetuneResult, finetune
from pipeline.train.pretrain import PretrainResult, pretrain, save_random_init
from pipeline.train.tasks import check_task_data, example_texts
from pipeline.versions import load_manifest, resolve_manifest
from pipeline.train.tokenizer import train_tokenizer

GPU_LIMIT = "gpu"  # global concurrency limit: one training process per GPU


@task(retries=1)
def tokenizer_task(config: CorpusflowConfig, manifest_path: str, models_dir: str) -> str:
    return str(train_tokenizer(manifest_path, config.train.tokenizer, Path(models_dir) / "tokenizer"))


@task
def continuation_task(config: CorpusflowConfig, manifest_path: str, models_dir: str) -> tuple[Continuation | None, str]:
    model_name = registered_model_name(config.registry, config.train.tasks[0].name)
    tracking_uri = tracking_uri_for(Path(config.run_dir), config.registry.tracking_uri)
    continuation, note = plan_continuation(config.train, model_name, tracking_uri, manifest_path, Path(models_dir))
    (get_run_logger().info if continuation else get_run_logger().warning)("%s", note)
    return continuation, note


@task(retries=3, retry_delay_seconds=10, tags=["gpu"])
def pretrain_task(config: CorpusflowConfig, manifest_path: str, tokenizer_dir: str, models_dir: str,
                  continuation: Continuation | None) -> PretrainResult:
    logger = get_run_logger()
    _ensure_gpu_limit()
    with concurrency(GPU_LIMIT, occupy=1, strict=True):
        return pretrain(manifest_path, Path(tokenizer_dir), config.train,
                        _pretrain_dir(config, tokenizer_dir, models_dir, continuation),
                        on_log=lambda entry: logger.info("pretrain %s", entry), continuation=continuation)


@task(task_run_name="check-data-{task_config.name}")
def check_task_data_task(task_config: TaskConfig, contracts_config: ContractsConfig) -> list[dict]:
    return check_task_data(task_config, contracts_config)


@task(retries=2, retry_delay_seconds=10, task_run_name="finetune-{task_config.name}")
def finetune_task(task_config: TaskConfig, pretrained_dir: str, models_dir: str, seed: int) -> FinetuneResult:
    with concurrency(GPU_LIMIT, occupy=1, strict=True):
        return finetune(task_config, Path(pretrained_dir), Path(models_dir) / "tasks" / task_config.name, seed)


@task
def random_init_task(config: CorpusflowConfig, tokenizer_dir: str, models_dir: str) -> str:
    out_dir = Path(models_dir) / "random-init" / "model"
    return str(save_random_init(config.train.model, Path(tokenizer_dir), out_dir, config.train.pretrain.seed))


@task
def evaluate_pretrained(pretrained_dir: str, manifest_path: str) -> dict:
    return evaluate_lm(Path(pretrained_dir), manifest_path, split="validation")


@task(task_run_name="evaluate-{task_config.name}")
def evaluate_task_model(task_config: TaskConfig, result: FinetuneResult, manifest_path: str) -> dict:
    # finetune() already scored the saved model, reloaded from disk, on the test split: reuse that evaluation.
    return {"task": task_config.name, **result.evaluation,
            "decontamination": decontamination_report(task_config, manifest_path)}


@task(task_run_name="register-{task_config.name}")
def register_task(
    config: CorpusflowConfig, task_config: TaskConfig, result: FinetuneResult, evaluation: dict,
    lm_metrics: dict, pretrained: PretrainResult, lineage: dict[str, str], loss_png: str, gain: dict[str, float],
) -> dict:
    registry = config.registry.model_copy(update={
        "model_name": registered_model_name(config.registry, task_config.name),
        "champion_metric": task_config.primary_metric,
    })
    write_model_card(
        result.model_dir, name=registry.model_name, task=task_config, evaluation=evaluation, gain=gain,
        lineage=lineage, license_id=config.card.license,
        pretraining=Pretraining(
            arch=config.train.model.arch, steps=pretrained.steps, tokens_seen=pretrained.tokens_seen,
            train_seconds=pretrained.train_seconds, tokens_per_s=pretrained.tokens_per_s,
            validation_loss=lm_metrics.get("loss"), validation_perplexity=lm_metrics.get("perplexity"),
        ),
    )
    metrics = {**_numbers(evaluation["metrics"]), **{f"lm_{k}": v for k, v in _numbers(lm_metrics).items()}, **gain}
    registered = register_model(
        result.model_dir, config=registry, tracking_uri=tracking_uri_for(Path(config.run_dir), registry.tracking_uri),
        params={"task": task_config.name, "arch": config.train.model.arch, **config.train.model.model_dump(),
                "pretrain_steps": pretrained.steps},
        metrics=metrics, curves={"pretrain_loss": pretrained.losses, **_mix_curves(pretrained), **result.curves()},
        lineage=lineage, artifacts={"pretrain_loss.png": Path(loss_png), PRETRAINED_ARTIFACT: pretrained.model_dir},
        input_example=example_texts(task_config),
    )
    return {**registered, "model_name": registry.model_name}


# No log_prints here: datasets hashes functions through dill, which reads `dis` output from a captured stdout
# that Prefect's print patching would divert into the run log (and hide from dill).
@flow(name="train-models")
def train_models(config_path: str, manifest_path: str | None = None, force: bool = False) -> dict:
    """Train, evaluate and register models from a dataset version (default: the newest)."""
    config = load_config(config_path)
    manifest_path = resolve_manifest(manifest_path or "latest", config.datasets_uri, config.dataset)
    models_dir = str(Path(config.run_dir) / "models" / load_manifest(manifest_path).version)
    continuation, note = (continuation_task(config, manifest_path, models_dir) if config.train.continue_from
                          else (None, None))
    tokenizer_dir = (str(continuation.parent.pretrained_dir) if continuation
                     else tokenizer_task(config, manifest_path, models_dir))
    pretrained = pretrain_task(config, manifest_path, tokenizer_dir, models_dir, continuation)
    if pretrained.continued_from:  # the budget and replay share are known once pretraining has planned its mix
        note = f"{note}; {pretrained.budget()}"
    loss_png = plots.plot_training_loss([{"step": step, "loss": loss} for step, loss in pretrained.losses],
                                        f"{models_dir}/pretrain_loss.png")
    lm_metrics = evaluate_pretrained.submit(str(pretrained.model_dir), manifest_path)
    tasks = config.train.tasks
    checked = check_task_data_task.map(tasks, unmapped(config.contracts))  # labelled data is gated like the corpus
    finetuned = finetune_task.map(tasks, unmapped(str(pretrained.model_dir)), unmapped(models_dir),
                                  unmapped(config.train.pretrain.seed), wait_for=[checked]).result()
    evaluations = evaluate_task_model.map(tasks, finetuned, unmapped(manifest_path)).result()
    baselines = _random_init_baselines(config, tokenizer_dir, models_dir) if config.train.baseline_random_init else None
    gains = ([pretraining_gain(e["metrics"], b.metrics) for e, b in zip(evaluations, baselines)] if baselines
             else [{} for _ in tasks])
    lineage = _lineage(config, manifest_path, pretrained, note)
    registered = register_task.map(unmapped(config), tasks, finetuned, evaluations, unmapped(lm_metrics.result()),
                                   unmapped(pretrained), unmapped(lineage), unmapped(loss_png), gains).result()
    _publish_artifacts(loss_png, lm_metrics.result(), evaluations, registered, gains)
    _publish_mix(pretrained, note)
    return {"dataset_version": lineage["dataset_version"], "manifest": manifest_path,
            "lm": _numbers(lm_metrics.result()),
            "pretrain": {"steps": pretrained.steps, "continued_from": pretrained.continued_from, "note": note},
            "tasks": {t.name: {**_numbers(e["metrics"]), **g, "primary_metric": t.primary_metric,
                               "model_name": r["model_name"], "registered_version": r["version"],
                               "aliases": r["aliases"], "promoted": r["promoted"]}
                      for t, e, r, g in zip(tasks, evaluations, registered, gains)}}


# ---- helpers ------------------------------------------------------------------------------------------


def _random_init_baselines(config: CorpusflowConfig, tokenizer_dir: str, models_dir: str) -> list[FinetuneResult]:
    """Every task fine-tuned from the untrained model with the same settings and seed."""
    random_dir = random_init_task(config, tokenizer_dir, models_dir)
    return finetune_task.map(config.train.tasks, unmapped(random_dir), unmapped(f"{models_dir}/random-init"),
                             unmapped(config.train.pretrain.seed)).result()


def _ensure_gpu_limit() -> None:
    """One slot per GPU (one on a CPU machine, so CPU training does not oversubscribe the cores either)."""
    import torch
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    slots = max(torch.cuda.device_count(), 1)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except Exception:  # noqa: BLE001 - prefect raises ObjectNotFound, whose import path moved across 3.x
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))


def _pretrain_dir(config: CorpusflowConfig, tokenizer_dir: str, models_dir: str,
                  continuation: Continuation | None) -> Path:
    """Checkpoints are resumed only by the same run: same data, tokenizer, model, loop settings and parent."""
    settings = config.train.model_dump_json(include={"tokenizer", "model", "pretrain", "mix", "mix_temperature",
                                                     "continuation"})
    parent = f"{continuation.parent.reference}" if continuation else ""
    identity = settings + file_sha256(Path(tokenizer_dir) / "tokenizer.json") + parent
    return Path(models_dir) / f"pretrain-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def _lineage(config: CorpusflowConfig, manifest_path: str, pretrained: PretrainResult,
             continuation_note: str | None) -> dict[str, str]:
    manifest = load_manifest(manifest_path)
    contracts = ", ".join(f"{name}={version}" for name, version in sorted(manifest.contracts.items()))
    passed = sum(1 for s in manifest.shards if (s.contract or {}).get("success"))
    continued = {"parent_version": pretrained.continued_from} if pretrained.continued_from else {}
    noted = {"continuation": continuation_note} if continuation_note else {}
    return {
        **continued,
        **noted,
        "dataset": manifest.dataset,
        "dataset_version": manifest.version,
        "manifest_uri": manifest_path,
        "manifest_sha256": file_sha256(manifest_path),
        "config_hash": config.config_hash(),
        "training_config_hash": config.training_hash(),
        "git_commit": _git_commit(),
        "contracts": contracts,
        "contract_results": f"{passed}/{len(manifest.shards)} usable shards passed; "
                            f"{len(manifest.quarantined)} quarantined",
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _mix_curves(pretrained: PretrainResult) -> dict[str, list[tuple[int, float]]]:
    """The realised token share of every strand of the stream, one point per logging window."""
    return {f"mix_share/{name}": [(step, shares.get(name, 0.0)) for step, shares in pretrained.mix_windows]
            for name in pretrained.mix_target}


def _publish_mix(pretrained: PretrainResult, continuation_note: str | None) -> None:
    rows = [{"step": "target", **{name: round(share, 4) for name, share in pretrained.mix_target.items()}}]
    rows += [{"step": step, **{name: round(shares.get(name, 0.0), 4) for name in pretrained.mix_target}}
             for step, shares in pretrained.mix_windows]
    create_table_artifact(rows, key="pretrain-mix", description="Token share of each source per logging window")
    if continuation_note:
        create_markdown_artifact(f"**Pretraining:** {continuation_note}", key="pretrain-continuation",
                                 description="Whether pretraining continued a registered model, and why")


def _publish_artifacts(loss_png: str, lm_metrics: dict, evaluations: list[dict], registered: list[dict],
                       gains: list[dict[str, float]]) -> None:
    data = base64.b64encode(Path(loss_png).read_bytes()).decode()
    create_image_artifact(f"data:image/png;base64,{data}", key="pretrain-loss", description="Pretraining loss")
    rows = [{"task": e["task"], **{k: round(v, 4) for k, v in {**_numbers(e["metrics"]), **g}.items()},
             "contaminated test items": e["decontamination"]["contaminated"]} for e, g in zip(evaluations, gains)]
    rows.append({"task": "pretrain (validation)", **{k: round(v, 4) for k, v in _numbers(lm_metrics).items()}})
    create_table_artifact(rows, key="evaluation", description="Task metrics next to majority baselines; LM loss")
    for evaluation, entry in zip(evaluations, registered):
        create_link_artifact(entry["model_uri"], key=f"registry-{evaluation['task']}".replace("_", "-"),
                             link_text=f"{evaluation['task']}: MLflow model version {entry['version']}")
