"""The `corpusflow` command.

Flows are imported inside the commands that run them: `inspect`, `validate` and `diff` work without
starting Prefect, and every command that runs a flow first points Prefect at the local server.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from flows.servers import corpusflow_home
from flows.terminal import flow_display, silence_library_progress_bars
from pipeline.config import CorpusflowConfig, load_config, registered_model_name
from pipeline.errors import UserError
from pipeline.versions import LEDGER, resolve_manifest

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Chinese and English corpora to shards to models.")
console = Console()
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML run config")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the whole result as JSON instead of the summary "
                                                     "(progress goes to stderr)")]
_debug = False  # --debug: tracebacks on the terminal, and a known error raised instead of summarised
# of an unknown error's message: some carry a whole response body or one paragraph per field
UNEXPECTED_MESSAGE_LINES, UNEXPECTED_MESSAGE_CHARS = 3, 400
PROJECT_PACKAGES = tuple(str(Path(__file__).resolve().parents[1] / package) for package in ("flows", "pipeline"))


def _run_flow(description: str, flow_path: str, *args: Any, progress_to_stderr: bool = False, **kwargs: Any) -> Any:
    """Run `module:flow` against the local server; the server must be chosen before Prefect is imported."""
    from flows.servers import use_prefect_server

    display = Console(stderr=True) if progress_to_stderr else console
    api = use_prefect_server()
    display.print(f"Prefect API: {api.removesuffix('/api')}")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    module, name = flow_path.split(":")
    flow = getattr(importlib.import_module(module), name)
    # The flow runs in this foreground process, whose exit ends it: no heartbeat thread to tell Prefect it
    # lives (that thread sleeps in one-second steps, and the command waited for it to wake before exiting).
    # Runs of deployments, on workers, keep their heartbeats.
    no_heartbeat = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    with no_heartbeat, flow_display(display, description, debug=_debug):
        return flow(*args, **kwargs)


def _start_workers(config: CorpusflowConfig, to_stderr: bool = False) -> None:
    """The warm pool of a `corpusflow serve` of this user when one offers it (nothing to start), else this
    command's own, started now: the fork server loads the chain's dictionaries while Prefect is imported."""
    from flows.workers import adopt_served_pool

    served_by = adopt_served_pool(config.runner.workers) if config.runner.kind == "local" else None
    if served_by is not None:
        (Console(stderr=True) if to_stderr else console).print(
            f"workers: the warm pool of `corpusflow serve` (pid {served_by})", highlight=False)
        return
    from flows.forkserver import start_fork_server

    start_fork_server()
    from flows.workers import start_build_workers

    start_build_workers(config)


WaitOption = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="when another build of the dataset runs: wait for it, or exit 2 at once")]


@app.command()
def build(config: ConfigOption = Path("configs/demo.yaml"), wait: WaitOption = True) -> None:
    """Build the dataset: ingest, clean, segment, filter, dedup, validate, write shards and manifest."""
    _start_workers(load_config(config))  # a bad config fails here, before a server starts
    manifest = _run_flow(f"building corpus from {config}", "flows.build_corpus:build_corpus", str(config),
                         wait=wait)
    _print_manifest(manifest)


@app.command()
def inspect(
    dataset: Annotated[str, typer.Argument(help="a manifest.json, a version directory or a dataset directory")],
    samples: int = 3,
    reason: Annotated[str | None, typer.Option(help="print dropped records of this reason instead")] = None,
    sample: Annotated[int, typer.Option(help="with --reason: how many records")] = 10,
) -> None:
    """Summary of a dataset version: ledger, notes, drop rates per label, shards, drops and samples.

    With --reason R, prints --sample N records dropped for R with their text, file and position, so a rule
    can be judged in one command.
    """
    manifest_path = resolve_manifest(dataset)
    if reason:
        _print_drops(manifest_path, reason, sample)
    else:
        _print_manifest(manifest_path, samples=samples)


def _print_drops(manifest_path: str, reason: str, n: int) -> None:
    from pipeline.drop_sample import sample_drops
    from pipeline.versions import version_dir

    rows = sample_drops(version_dir(manifest_path), reason, n)
    if not rows:
        console.print(f"no record of {manifest_path} was dropped for {reason!r}")
        return
    for row in rows:
        console.print(f"[cyan]{row['file']}:{row['position']}[/cyan] [{row['source']}] {row.get('label') or ''} "
                      f"({row['outcome']})", highlight=False)
        console.print(f"  {row['text']}", highlight=False, markup=False)


@app.command()
def verify(
    manifest: Annotated[str, typer.Argument(help="manifest, version directory or dataset directory to check")],
    rebuild: Annotated[bool, typer.Option(help="after the stored files, rebuild and compare every shard")] = True,
) -> None:
    """Check every stored file against the manifest's sha256, then rebuild in a scratch directory and compare."""
    from pipeline.reproduce import compare_manifests, rebuild_config
    from pipeline.versions import check_stored_files

    original = resolve_manifest(manifest)
    problems = check_stored_files(original)
    if problems:
        console.print(f"[red]corrupt[/red]: {len(problems)} stored file(s) differ from the manifest")
        for line in problems:
            console.print(f"  {line}")
        raise typer.Exit(1)
    console.print(f"[green]intact[/green]: every stored file of {original} has its manifest sha256")
    if not rebuild:
        return
    scratch = Path(tempfile.mkdtemp(prefix="corpusflow-verify-"))
    try:
        config_path = rebuild_config(original, scratch)
        rebuilt = _run_flow("rebuilding in a scratch directory", "flows.build_corpus:build_corpus", str(config_path))
        differences = compare_manifests(original, rebuilt)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if differences:
        console.print("[red]not reproducible[/red]; differing shards:")
        for line in differences:
            console.print(f"  {line}")
        raise typer.Exit(1)
    console.print(f"[green]reproduced[/green]: every shard of {original} has the same sha256")


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="a shard (.arrow) or a directory of shards")]) -> None:
    """Validate shards against the current contracts in data_contracts/."""
    from pipeline.contracts import validate_path

    results = validate_path(path)
    table = Table("shard", "suite", "rows", "passed", "failed expectations")
    for result in results:
        failed = [f"{e['type']}({e.get('column') or ''})" for e in result["expectations"] if not e["success"]]
        failed += ["unreadable (see below)"] if result.get("error") else []
        table.add_row(str(result.get("shard", "")), f"{result['suite']} v{result['version']}", str(result["rows"]),
                      "[green]yes[/green]" if result["success"] else "[red]no[/red]", ", ".join(failed))
    console.print(table)
    for result in results:
        if result.get("error"):
            console.print(f"[red]unreadable[/red] {result['shard']}: {result['error']}", highlight=False, soft_wrap=True)
    if any(r["critical_failed"] for r in results):
        raise typer.Exit(1)


@app.command()
def train(
    config: ConfigOption = Path("configs/demo.yaml"),
    manifest: Annotated[str | None, typer.Option(help="dataset manifest; default: the newest version")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train tokenizer, pretrain, fine-tune, evaluate and register, from a built dataset version."""
    cfg = load_config(config)  # a bad config fails here, before a server starts
    result = _run_flow("training models", "flows.train_models:train_models", str(config), manifest_path=manifest,
                       force=True, progress_to_stderr=as_json)
    _print_result(result, cfg, config, as_json)


@app.command()
def run(
    config: ConfigOption = Path("configs/demo.yaml"), force_train: bool = False, wait: WaitOption = True,
    as_json: JsonOption = False,
) -> None:
    """The whole chain: refresh the corpus, then train and register when the dataset version changed.

    As a refresh, the build keeps the newest version's ids: a text ingested again is the duplicate.
    """
    cfg = load_config(config)  # a bad config fails here, before a server starts
    _start_workers(cfg, to_stderr=as_json)
    result = _run_flow("building corpus and training models", "flows.refresh:refresh", str(config),
                       force_train=force_train, wait=wait, progress_to_stderr=as_json)
    _print_result(result, cfg, config, as_json)


def _print_result(result: dict, cfg: Any, config: Path, as_json: bool) -> None:
    from flows.summary import print_run_summary

    if as_json:
        console.print_json(data=result)
    else:
        print_run_summary(console, result, cfg, config)


@app.command()
def models(config: ConfigOption = Path("configs/demo.yaml")) -> None:
    """Registered model versions of every task: aliases, score next to the majority and random-init baselines,
    the gain pretraining brought, lineage."""
    from pipeline.registry import list_models, tracking_uri_for

    cfg = load_config(config)
    tracking_uri = tracking_uri_for(Path(cfg.run_dir), cfg.registry.tracking_uri)
    for task in cfg.train.tasks:
        registry = _task_registry(cfg, task.name)
        metric = task.primary_metric
        table = Table("version", "aliases", metric, "majority", "random init", "gain", "dataset", "commit",
                      title=registry.model_name)
        for row in list_models(registry, tracking_uri):
            metrics, tags = row.get("metrics", {}), row.get("tags", {})
            gain = metrics.get(f"pretraining_gain_{metric}")
            table.add_row(str(row["version"]), ", ".join(row.get("aliases", [])), _fmt(metrics.get(metric)),
                          _fmt(metrics.get(f"majority_{metric}")), _fmt(metrics.get(f"random_init_{metric}")),
                          "" if gain is None else f"{gain:+.4f}", tags.get("dataset_version", ""),
                          tags.get("git_commit", "")[:10])
        console.print(table)


@app.command("serve-model")
def serve_model(
    task: Annotated[str, typer.Argument(help="the task whose registered model to serve")],
    alias: Annotated[str, typer.Option(help="which version, by alias")] = "champion",
    port: Annotated[int | None, typer.Option(help="port on 127.0.0.1; default: a free one")] = None,
    config: ConfigOption = Path("configs/demo.yaml"),
) -> None:
    """Serve a task's registered model on 127.0.0.1 with `mlflow models serve` until Ctrl-C (POST /invocations)."""
    from flows.servers import start_model_server, stop_model_server
    from pipeline.registry import serving_example, tracking_uri_for, version_for_alias

    cfg = load_config(config)
    registry = _task_registry(cfg, task)
    tracking_uri = tracking_uri_for(Path(cfg.run_dir), cfg.registry.tracking_uri)
    found = version_for_alias(registry, tracking_uri, alias)
    model_uri = f"models:/{registry.model_name}@{alias}"
    log = Path(cfg.run_dir).resolve() / "logs" / f"serve-{registry.model_name}.log"
    console.print(f"starting {model_uri} (version {found['version']}) ...", highlight=False)
    # SIGTERM ends the command as Ctrl-C does, through the `finally` that stops the server's process group
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    process, url = start_model_server(model_uri, tracking_uri, log, port)
    try:
        body = serving_example(tracking_uri, found["run_id"])
        console.print(f"serving {registry.model_name} version {found['version']} at {url}/invocations",
                      highlight=False, soft_wrap=True)
        console.print(f"curl -s {url}/invocations -H 'Content-Type: application/json' -d {shlex.quote(body)}",
                      highlight=False, markup=False, soft_wrap=True)
        console.print(f"server log: {log}; Ctrl-C stops it", highlight=False, soft_wrap=True)
        returncode = process.wait()
    finally:
        stop_model_server(process)
    console.print(f"[red]the model server exited with code {returncode}[/red]; see {log}", highlight=False)
    raise typer.Exit(1)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="model version number")],
    task: Annotated[str, typer.Option(help="the task whose model to promote")],
    alias: str = "champion",
    config: ConfigOption = Path("configs/demo.yaml"),
) -> None:
    """Point an alias (default champion) at a task model's version: promote, or roll back."""
    from pipeline.registry import set_alias, tracking_uri_for

    cfg = load_config(config)
    registry = _task_registry(cfg, task)
    set_alias(registry, tracking_uri_for(Path(cfg.run_dir), cfg.registry.tracking_uri), alias, version)
    console.print(f"{registry.model_name}: alias [bold]{alias}[/bold] -> version {version}")


def _task_registry(cfg: Any, task: str) -> Any:
    names = [t.name for t in cfg.train.tasks]
    if task not in names:
        console.print(f"[red]no task {task!r} in the config; tasks: {names}[/red]")
        raise typer.Exit(2)
    return cfg.registry.model_copy(update={"model_name": registered_model_name(cfg.registry, task)})


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


@app.command()
def diff(
    old: Annotated[str, typer.Argument(help="manifest or version directory of the older version")],
    new: Annotated[str, typer.Argument(help="manifest or version directory of the newer version")],
) -> None:
    """Documents added, removed and changed between two dataset versions, per source."""
    from pipeline.diff import diff_versions, render_diff

    console.print(render_diff(diff_versions(resolve_manifest(old), resolve_manifest(new))))


@app.command()
def ui(config: ConfigOption = Path("configs/demo.yaml")) -> None:
    """Start (or find) the local Prefect server and the MLflow UI and print both URLs."""
    from flows.servers import ensure_mlflow_ui, ensure_prefect_server

    cfg = load_config(config)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    console.print(f"Prefect UI: {ensure_prefect_server().removesuffix('/api')}")
    console.print(f"MLflow UI:  {ensure_mlflow_ui(Path(cfg.run_dir))}")


@app.command()
def deploy(config: ConfigOption = Path("configs/demo.yaml")) -> None:
    """Register the scheduled deployments (nightly refresh, weekly retraining) with the Prefect server."""
    names = _run_flow("registering deployments", "flows.deploy:deploy_all", str(config))
    console.print_json(data=names)


infra_app = typer.Typer(no_args_is_help=True, help="The shared stack (infra/docker-compose.yml): its secrets.")
app.add_typer(infra_app, name="infra")


@infra_app.command("init-env")
def init_env(
    path: Annotated[Path | None, typer.Option(help="env file to write; default: infra/.env")] = None,
    rotate: Annotated[list[str] | None, typer.Option(help="give only this secret a new value (repeatable)")] = None,
    force: Annotated[bool, typer.Option(help="replace every secret of an existing file")] = False,
) -> None:
    """Write infra/.env with a random value for every secret the compose stack reads (owner-only file)."""
    from flows import infra

    target = path or infra.ENV_FILE
    written = infra.rotate(rotate, target) if rotate else infra.init_env(target, force=force)
    changed = ", ".join(rotate) if rotate else f"{len(infra.SECRETS)} secrets"
    console.print(f"{written}: {changed} written; published ports bind {infra.read_env(written).get('CORPUSFLOW_BIND_ADDRESS')}")


@app.command()
def serve(config: ConfigOption = Path("configs/demo.yaml")) -> None:
    """Run a local worker that executes the scheduled deployments (Ctrl-C stops it); your builds beside it use
    its warm worker pool."""
    from flows.servers import use_prefect_server

    console.print(f"Prefect API: {use_prefect_server()}")
    importlib.import_module("flows.deploy").serve(str(config))


def _print_manifest(manifest_path: str, samples: int = 0) -> None:
    from pipeline.storage import join, read_arrow_table
    from pipeline.versions import load_manifest, version_dir

    manifest = load_manifest(manifest_path)
    root = version_dir(manifest_path)
    console.print(f"[bold]{manifest.dataset}[/bold] version [bold]{manifest.version}[/bold]  ({manifest_path})")
    ledger = Table("source", "read", "kept", "filtered", "duplicate", "rejected", title="ledger")
    for source, totals in manifest.ledger_by_source.items():
        ledger.add_row(source, *(str(totals[k]) for k in ("read", "kept", "filtered", "duplicate", "rejected")))
    t = manifest.ledger_totals
    ledger.add_row("[bold]all[/bold]", *(str(t[k]) for k in ("read", "kept", "filtered", "duplicate", "rejected")))
    console.print(ledger)
    skipped = [i for i in manifest.inputs if i.status == "skipped"]
    for record in skipped:
        console.print(f"[yellow]skipped input[/yellow] {record.source}: {record.uri}: {record.reason}", highlight=False)
    _print_notes(manifest.notes_by_source)
    _print_label_rates(manifest.drop_rate_by_label, manifest.label_skews)
    shard_table = Table("shard", "rows", "bytes", "contract", title="shards")
    for shard in manifest.shards + manifest.quarantined:
        passed = "[green]passed[/green]" if shard.usable else "[red]quarantined[/red]"
        shard_table.add_row(shard.path, str(shard.rows), str(shard.bytes), passed)
    console.print(shard_table)
    _print_reasons(root, manifest)
    if samples and manifest.shards:
        shard = manifest.shards[0]
        documents = read_arrow_table(join(root, shard.path), ["id", "lang", "title", "text"], shard.sha256).slice(0, samples)
        for row in documents.to_pylist():
            console.print(f"[cyan]{row['id']}[/cyan] [{row['lang']}] {row['title'] or ''}\n  {row['text'][:200]}")


def _print_notes(notes_by_source: dict[str, dict[str, int]]) -> None:
    """What the stages did to kept records without dropping them: PII redactions per type, then the rest."""
    from pipeline.text.pii import NOTE_PREFIX, redaction_rows

    redactions = Table("source", "PII type", "redactions", title="PII redactions by source")
    for source, kind, count in redaction_rows(notes_by_source):
        redactions.add_row(source, kind, str(count))
    others = Table("source", "note", "count", title="other notes by source")
    for source, notes in sorted(notes_by_source.items()):
        for note, count in sorted(notes.items()):
            if not note.startswith(NOTE_PREFIX):
                others.add_row(source, note, str(count))
    for table in (redactions, others):
        if table.row_count:
            console.print(table)


def _print_label_rates(rates: dict[str, dict[str, dict[str, float]]], skews: list[str]) -> None:
    table = Table("source", "label", "read", "filtered", "rate", title="filtered share per label")
    for source, labels in rates.items():
        for label, figures in labels.items():
            table.add_row(source, label, str(int(figures["read"])), str(int(figures["dropped"])), f"{figures['rate']:.2%}")
    if table.row_count:
        console.print(table)
    for skew in skews:
        console.print(f"[red]label skew[/red]: {skew}", highlight=False)


def _print_reasons(root: str, manifest: Any) -> None:
    from pipeline.storage import exists, join, read_arrow_table

    if not exists(join(root, LEDGER)):
        return
    ledger = read_arrow_table(join(root, LEDGER)).to_pylist()
    reasons: dict[tuple[str, str], int] = {}
    for row in ledger:
        if row["outcome"] != "kept":
            key = (row["outcome"], row["reason"])
            reasons[key] = reasons.get(key, 0) + row["count"]
    table = Table("outcome", "reason", "count", title="drops by reason")
    for (outcome, reason), count in sorted(reasons.items(), key=lambda item: -item[1]):
        table.add_row(outcome, reason, str(count))
    console.print(table)


def main() -> None:
    global _debug
    _debug = "--debug" in sys.argv
    if _debug:
        sys.argv.remove("--debug")
    if not console.is_terminal:
        silence_library_progress_bars()
    try:
        app()
    except SystemExit as done:
        _exit(done.code)
    except UserError as error:
        if _debug:
            raise
        _print_user_error(error)
        _exit(2)
    except Exception as error:  # a bug, or a failure nobody has named yet: still a short block, not pages
        if _debug:
            raise
        _print_unexpected_error(error)
        _exit(1)
    _exit(0)


def _exit(code: int | str | None) -> NoReturn:
    """Exit once the other threads and the exit handlers are done (Prefect's flush of logs and events, the
    worker pool's shutdown), skipping the interpreter's teardown of every module and object it loaded:
    half a second after every build, spent on nothing anyone reads."""
    if isinstance(code, str):  # sys.exit("message") prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    # What the interpreter does on its way out, in its order, up to the teardown: threading's exit hooks
    # (thread pools told to finish) and the join of non-daemon threads, then the exit handlers.
    threading._shutdown()  # noqa: SLF001
    atexit._run_exitfuncs()  # noqa: SLF001
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _print_user_error(error: UserError) -> None:
    """What failed, where (the message names file, record or setting), what to do, where the whole story is."""
    log = _save_traceback(error)
    console.print(f"[bold red]{type(error).__name__}[/bold red]: {error}", highlight=False, soft_wrap=True)
    console.print(f"[bold]what to do[/bold]: {error.hint}", highlight=False)
    _print_where_the_traceback_is(log)


def _print_unexpected_error(error: Exception) -> None:
    """What failed, the line of corpusflow's code it failed in, and where the traceback is."""
    log = _save_traceback(error)
    lines = str(error).splitlines() or [""]
    message = "\n  ".join(lines[:UNEXPECTED_MESSAGE_LINES])[:UNEXPECTED_MESSAGE_CHARS]
    if len(lines) > UNEXPECTED_MESSAGE_LINES or len(message) == UNEXPECTED_MESSAGE_CHARS:
        message += " ..."
    console.print(f"[bold red]unexpected error[/bold red] {type(error).__name__}: {message}", highlight=False,
                  soft_wrap=True)
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if f.filename.startswith(PROJECT_PACKAGES)]
    for frame in (ours or frames)[-1:]:
        console.print(f"[bold]where[/bold]: {frame.filename}:{frame.lineno} in {frame.name}", highlight=False,
                      soft_wrap=True)
    _print_where_the_traceback_is(log)


def _save_traceback(error: BaseException) -> Path:
    log = corpusflow_home() / "logs" / "last-error.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    return log


def _print_where_the_traceback_is(log: Path) -> None:
    console.print(f"[dim]traceback: {log} (or run again with --debug); flow runs and their logs: `corpusflow ui`[/dim]",
                  highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
