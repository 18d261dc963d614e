"""Model registry on MLflow: log a run, register a version, tag its lineage, move the aliases.

Layout of one registration (all through an `MlflowClient`, no global MLflow state):
- a run in the experiment `config.experiment` with the params, the final metrics, the curves as step
  metrics and the lineage as run tags;
- under the run's artifact path `model`, the model directory as it is (config.json, model.safetensors,
  tokenizer files, README.md model card) plus the files that make it an MLflow model: `MLmodel` (a
  python_function whose loader is `pipeline/corpusflow_pyfunc.py`, copied into `code/`, which says why not
  the transformers flavor), a signature (texts in; label and score, or entity spans, out), an input example
  and the pinned requirements. So a version loads both ways: `AutoModel*.from_pretrained(<downloaded>)` and
  `mlflow.pyfunc.load_model("models:/<name>@champion")`, and `mlflow models serve` serves it;
- other files (evaluation reports, loss plots) under their own artifact paths;
- a registered version of `config.model_name` whose source is that `model` folder, tagged with the
  lineage and with the decision of the champion gate.
`create_model_version` on the logged folder works offline and keeps the model's files byte for byte.

Aliases: `candidate` moves to every new version; `champion` moves only when the new version's
`config.champion_metric` beats the champion's by more than `config.champion_margin` (the first version
becomes champion). `set_alias` promotes or rolls back by hand.

By default the store is SQLite in the run directory with artifacts beside it; any tracking URI works. A
server that asks for a login (MLflow's `basic-auth` app) gets the account in MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, which MLflow's client sends with every call; they live in the environment, never in
the config file. A refused call says which of them to set.
"""

from __future__ import annotations

import os

# before mlflow is imported: no telemetry, no progress bars in logs, nothing reaches out from a run
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import functools  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from importlib.metadata import version as installed_version  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import Model, ModelSignature  # noqa: E402
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode  # noqa: E402
from mlflow.types.schema import Array, ColSpec, Object, Property, Schema  # noqa: E402

from pipeline.config import RegistryConfig  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

MODEL_ARTIFACT = "model"
PYFUNC_LOADER = Path(__file__).with_name("corpusflow_pyfunc.py")
TEXTS = Schema([ColSpec("string")])
LABEL_AND_SCORE = Schema([ColSpec("string", "label"), ColSpec("double", "score")])
ENTITY_SPANS = Schema([ColSpec(Array(Object([
    Property("entity", "string"), Property("text", "string"), Property("start", "long"), Property("end", "long"),
    Property("score", "double"),
])))])
# What loading a registered model needs besides mlflow (which pins itself): the versions it was trained with
RUNTIME_PACKAGES = ("torch", "transformers", "pandas")
CANDIDATE = "candidate"
CHAMPION = "champion"
LOG_BATCH_LIMIT = 1000  # MLflow accepts at most 1000 metrics per log_batch call
USERNAME_VARIABLE = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VARIABLE = "MLFLOW_TRACKING_PASSWORD"
REFUSALS = {"UNAUTHENTICATED", "PERMISSION_DENIED"}

Returned = TypeVar("Returned")


class RegistryAccessRefused(UserError, PermissionError):
    hint = (f"set {USERNAME_VARIABLE} and {PASSWORD_VARIABLE} to an account of the tracking server with edit "
            "rights on the model (the shared stack's workers use corpusflow-worker; see README.md, Security)")


def _explains_refusals(function: Callable[..., Returned]) -> Callable[..., Returned]:
    """A tracking server's 401/403 becomes an error that names the account variables, instead of a bare HTTP
    failure deep in a training run."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Returned:
        try:
            return function(*args, **kwargs)
        except MlflowException as error:
            if error.error_code not in REFUSALS:
                raise
            account = os.environ.get(USERNAME_VARIABLE)
            who = f"as {account!r}" if account else f"anonymously ({USERNAME_VARIABLE} is not set)"
            raise RegistryAccessRefused(
                f"the tracking server refused a call made {who}: {error.error_code}: {error.message[:200]}"
            ) from error

    return wrapper


def tracking_uri_for(run_dir: Path, configured: str | None) -> str:
    """The configured URI, or a SQLite store in the run directory (artifacts go to <run_dir>/mlartifacts)."""
    if configured:
        return configured
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


@_explains_refusals
def register_model(
    model_dir: Path,
    *,
    config: RegistryConfig,
    tracking_uri: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    curves: dict[str, list[tuple[int, float]]],
    lineage: dict[str, str],
    artifacts: dict[str, Path],
    input_example: list[str],
) -> dict[str, Any]:
    """Log `model_dir` as an MLflow model (`input_example`: texts like the task's) and register it; returns
    {run_id, version, aliases, promoted, model_uri}."""
    if config.champion_metric not in metrics:
        raise ValueError(
            f"champion metric {config.champion_metric!r} is not among the metrics {sorted(metrics)}; "
            "set registry.champion_metric to one of them"
        )
    client = _client(tracking_uri)
    run_id = _log_run(client, _experiment_id(client, config, tracking_uri), model_dir, input_example, params, metrics,
                      curves, lineage, artifacts)
    version = _create_version(client, config.model_name, run_id, lineage)
    promoted, decision = _champion_gate(client, config, metrics[config.champion_metric])
    client.set_model_version_tag(config.model_name, version, "champion_gate", decision)
    client.set_registered_model_alias(config.model_name, CANDIDATE, version)
    if promoted:
        client.set_registered_model_alias(config.model_name, CHAMPION, version)
    aliases = client.get_model_version(config.model_name, version).aliases
    return {
        "run_id": run_id,
        "version": version,
        "aliases": sorted(aliases),
        "promoted": promoted,
        "model_uri": f"models:/{config.model_name}/{version}",
    }


def pretraining_gain(finetuned: dict[str, float], random_init: dict[str, float]) -> dict[str, float]:
    """The random-init baseline's scores and the pretrained model's gain over it, as registry metrics:
    `random_init_<metric>` and `pretraining_gain_<metric>` for every score both have (majority baselines,
    the same for both, are left out)."""
    shared = [key for key in finetuned if key in random_init and not key.startswith("majority_")]
    return {
        **{f"random_init_{key}": float(random_init[key]) for key in shared},
        **{f"pretraining_gain_{key}": float(finetuned[key]) - float(random_init[key]) for key in shared},
    }


@_explains_refusals
def list_models(config: RegistryConfig, tracking_uri: str) -> list[dict[str, Any]]:
    """Every version of the registered model, newest first, with aliases, run metrics and lineage tags."""
    client = _client(tracking_uri)
    if not _registered_model_exists(client, config.model_name):
        return []
    versions = client.search_model_versions(f"name = '{config.model_name}'")
    # search results leave `aliases` empty; the registered model holds them as alias -> version
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(config.model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    listed = []
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        run = client.get_run(version.run_id)
        listed.append(
            {
                "version": str(version.version),
                "aliases": sorted(aliases.get(str(version.version), [])),
                "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(version.creation_timestamp / 1000)),
                "run_id": version.run_id,
                "source": version.source,
                "metrics": dict(run.data.metrics),
                "tags": dict(version.tags),
            }
        )
    return listed


class ModelVersionNotFound(UserError, LookupError):
    """No registered version answers to the name and alias asked for."""

    hint = "`corpusflow models -c <config>` lists the versions and their aliases; `corpusflow run` trains them"


@_explains_refusals
def version_for_alias(config: RegistryConfig, tracking_uri: str, alias: str) -> dict[str, str]:
    """{version, run_id} of the version `alias` points at; ModelVersionNotFound when none does."""
    client = _client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(config.model_name, alias)
    except MlflowException as error:
        # a missing model is RESOURCE_DOES_NOT_EXIST, a missing alias of a model INVALID_PARAMETER_VALUE
        if error.error_code not in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)):
            raise
        raise ModelVersionNotFound(f"no version of {config.model_name!r} has the alias {alias!r} in the registry "
                                   f"{tracking_uri}") from None
    return {"version": str(version.version), "run_id": version.run_id}


@_explains_refusals
def serving_example(tracking_uri: str, run_id: str) -> str:
    """The request body MLflow wrote for the model of `run_id` (its input example as `{"inputs": [...]}`)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = _client(tracking_uri).download_artifacts(run_id, f"{MODEL_ARTIFACT}/serving_input_example.json", scratch)
        return json.dumps(json.loads(Path(path).read_text(encoding="utf-8")), ensure_ascii=False)


@_explains_refusals
def set_alias(config: RegistryConfig, tracking_uri: str, alias: str, version: str | int) -> None:
    """Point `alias` at `version` (promotion or rollback); the version must exist."""
    client = _client(tracking_uri)
    client.get_model_version(config.model_name, str(version))  # raises with a clear message when missing
    client.set_registered_model_alias(config.model_name, alias, str(version))


# --- internals -----------------------------------------------------------------------------------------


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _experiment_id(client: MlflowClient, config: RegistryConfig, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(config.experiment, artifact_location=_artifact_location(tracking_uri))
    except MlflowException:
        # Several tasks register at once: the first creates the experiment, the others find it.
        experiment = client.get_experiment_by_name(config.experiment)
        if experiment is None:
            raise
        return experiment.experiment_id


def _artifact_location(tracking_uri: str) -> str | None:
    """<store dir>/mlartifacts for a SQLite store (MLflow would otherwise write ./mlruns in the working
    directory); None lets a tracking server choose."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix):]).parent / "mlartifacts").resolve().as_uri()


def _log_run(
    client: MlflowClient,
    experiment_id: str,
    model_dir: Path,
    input_example: list[str],
    params: dict[str, Any],
    metrics: dict[str, float],
    curves: dict[str, list[tuple[int, float]]],
    lineage: dict[str, str],
    artifacts: dict[str, Path],
) -> str:
    run = client.create_run(experiment_id, tags={key: str(value) for key, value in lineage.items()})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in _flatten(params).items()])
        points = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        points += [Metric(name, float(value), now, int(step)) for name, curve in curves.items() for step, value in curve]
        for start in range(0, len(points), LOG_BATCH_LIMIT):
            client.log_batch(run_id, metrics=points[start : start + LOG_BATCH_LIMIT])
        with mlflow_model_dir(Path(model_dir), input_example) as packaged:
            client.log_artifacts(run_id, str(packaged), MODEL_ARTIFACT)
        for name, path in artifacts.items():
            _log_artifact(client, run_id, name, Path(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


@contextmanager
def mlflow_model_dir(model_dir: Path, input_example: list[str]) -> Iterator[Path]:
    """A temporary directory holding `model_dir`'s files (hard links where possible) and the MLflow model files
    beside them; checked by predicting `input_example` with the loader the registered model will use."""
    # here, not at the top: pyfunc and the loader bring torch and transformers, which listing models does without
    import mlflow.pyfunc

    from pipeline import corpusflow_pyfunc
    from pipeline.train.loading import MODEL_LOCK

    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-mlflow-", dir=model_dir.parent))
    try:
        labels, schema = _labels_and_output(model_dir)
        mlflow.pyfunc.save_model(
            str(staging), loader_module=PYFUNC_LOADER.stem, code_paths=[str(PYFUNC_LOADER)],
            signature=ModelSignature(inputs=TEXTS, outputs=schema), input_example=input_example,
            pip_requirements=[_pinned(name) for name in RUNTIME_PACKAGES], metadata={"labels": labels},
        )
        for path in sorted(model_dir.iterdir()):
            _link_or_copy(path, staging / path.name)
        _record_size(staging)
        with MODEL_LOCK:  # tasks register in threads; see pipeline/train/loading.py
            loaded = corpusflow_pyfunc._load_pyfunc(str(staging))
        loaded.predict(input_example)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _labels_and_output(model_dir: Path) -> tuple[list[str], Schema]:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    labels = [label for _, label in sorted((int(i), label) for i, label in config.get("id2label", {}).items())]
    token_task = any(name.endswith("ForTokenClassification") for name in config.get("architectures") or [])
    return labels, ENTITY_SPANS if token_task else LABEL_AND_SCORE


def _pinned(package: str) -> str:
    return f"{package}=={installed_version(package).split('+')[0]}"  # no local label: 2.13.0+cpu -> 2.13.0


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        raise FileExistsError(f"{source} has the name of an MLflow model file ({target.name}); rename it")
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_or_copy_file)
    else:
        _link_or_copy_file(source, target)


def _link_or_copy_file(source: str | Path, target: str | Path) -> None:
    try:
        Path(target).hardlink_to(source)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def _record_size(model_root: Path) -> None:
    """MLmodel's `model_size_bytes` counted the MLflow files alone: count the weights and tokenizer too."""
    mlmodel = Model.load(str(model_root / "MLmodel"))
    mlmodel.model_size_bytes = sum(p.stat().st_size for p in model_root.rglob("*") if p.is_file())
    mlmodel.save(str(model_root / "MLmodel"))


def _log_artifact(client: MlflowClient, run_id: str, name: str, path: Path) -> None:
    if path.is_dir():
        client.log_artifacts(run_id, str(path), name)
    else:
        client.log_artifact(run_id, str(path), name)


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config sections become dotted keys (train.pretrain.lr), the form MLflow compares runs by."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _create_version(client: MlflowClient, name: str, run_id: str, lineage: dict[str, str]) -> str:
    if not _registered_model_exists(client, name):
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    version = client.create_model_version(
        name, source, run_id=run_id, tags={key: str(value) for key, value in lineage.items()}
    )
    return str(version.version)


def _registered_model_exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return False
        raise
    return True


def _champion_gate(client: MlflowClient, config: RegistryConfig, score: float) -> tuple[bool, str]:
    """Whether the new score takes the champion alias, and why, in words kept as a version tag."""
    metric = config.champion_metric
    champion_version = client.get_registered_model(config.model_name).aliases.get(CHAMPION)
    if champion_version is None:
        return True, f"promoted: first champion ({metric} {score:.6g})"
    champion = client.get_model_version(config.model_name, str(champion_version))
    champion_score = client.get_run(champion.run_id).data.metrics.get(metric)
    if champion_score is None:
        return True, f"promoted: champion v{champion.version} has no {metric}"
    if score > champion_score + config.champion_margin:
        return True, (
            f"promoted: {metric} {score:.6g} > champion v{champion.version} {champion_score:.6g} "
            f"+ margin {config.champion_margin:g}"
        )
    return False, (
        f"kept champion v{champion.version}: {metric} {score:.6g} <= {champion_score:.6g} "
        f"+ margin {config.champion_margin:g}"
    )
