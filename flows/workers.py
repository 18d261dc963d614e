"""A process pool for CPU-heavy partition work (parsing, normalising, jieba) called from threads.

Task threads hand whole partitions to worker processes: the GIL would otherwise serialise every stage
but segmentation. Workers are not forked from the calling process, which runs threads and an event loop
that a fork would copy in an undefined state: they are forked from a fork server, a fresh single-threaded
process that first imports pipeline.steps.preload. The chain's modules, dictionaries and models are thus
loaded once per pool, not once per worker, and a worker starts in milliseconds, warm. A forked worker
also ends without tearing its modules down one by one (a spawned one takes seconds to exit).

The global steps after the partitions (shard writing with its validation, the card's pictures, Data Docs)
run in a pool of their own: Great Expectations and matplotlib take seconds to import, which each chain
worker would pay again on the build's critical path. That pool's process is forked from the fork server
a few seconds before the partitions should end (or when a chain worker has none left); it imports them
once, while the last partitions run, then forks its workers, warm, and serves their calls on a local socket.

A served process (`corpusflow serve`) keeps both pools warm for all the flow runs it starts, each in a
process of its own: `serving_workers` offers them on local sockets whose addresses the runs inherit in
their environment, and `run_in_worker` / `run_in_step_worker` in a run hand their work there. Start-up
(the fork server's preload, the steps' pool's imports) is then paid once per served process, not per run.
It also offers the pool in a file of the user's CORPUSFLOW_HOME, where a `corpusflow build` or `run` of the
same code and worker count finds it (`adopt_served_pool`) and starts no pool of its own.

Every worker ends with the process that started its pool, through a lifeline pipe: a worker waiting for
work holds both ends of its queue, so without it `kill -9` of a build would leave the workers running.
"""

from __future__ import annotations

import atexit
import importlib
import json
import multiprocessing
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from multiprocessing.connection import Client, Connection
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from flows.forkserver import fork_context
from flows.servers import corpusflow_home
from pipeline.steps.provenance import code_version
from pipeline.config import CorpusflowConfig

if TYPE_CHECKING:
    from flows.progress import BuildProgress

T = TypeVar("T")

SERVED_POOL_ENV = "CORPUSFLOW_WORKER_POOL"  # where a served process offers its pool to the runs it starts
STEP_POOL_LEAD_S = 3.0  # what the global steps' pool takes to import Great Expectations and matplotlib

_pools: dict[int, ProcessPoolExecutor] = {}
_lifelines: dict[int, Connection] = {}  # the builder's end of each pool's lifeline (see _warm_worker)
_lock = threading.Lock()
_shutdown_registered = False


def _warm_worker(warm_up: Callable[[], object] | None, lifeline: Connection) -> None:
    # A worker waits for work on a queue whose both ends it holds, so it never sees its builder die: it
    # watches the builder's end of a pipe instead, and ends with it (kill -9 of a build leaves no process).
    threading.Thread(target=_end_with, args=(lifeline,), name="builder-lifeline", daemon=True).start()
    import jieba

    jieba.setLogLevel(60)
    if warm_up is not None:
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - a failing initializer breaks the whole pool; the first task
            pass  # that needs what failed to load raises the same error, named in its own partition


def _end_with(lifeline: Connection) -> None:
    try:
        lifeline.recv()  # nothing is ever sent: this returns when the builder's end closes
    except EOFError:
        pass
    os._exit(1)


def worker_pool(workers: int, warm_up: Callable[[], object] | None = None) -> ProcessPoolExecutor:
    """The pool of `workers` processes, created on first use and kept for later builds in this process.

    Each new worker runs `warm_up` (picklable) first: what it loads, it loads while the flow plans, not
    during its first task; `warm_up` counts only when the pool is created.
    """
    with _lock:
        _shut_down_at_exit()
        if workers not in _pools:
            context = fork_context()
            theirs, ours = context.Pipe(duplex=False)
            _lifelines[workers] = ours
            _pools[workers] = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_warm_worker, initargs=(warm_up, theirs))
        return _pools[workers]


def _shut_down_at_exit() -> None:
    """Once per process: idle workers would otherwise outlive a crashed parent's exit."""
    global _shutdown_registered
    if not _shutdown_registered:
        atexit.register(shutdown_workers)
        _shutdown_registered = True


def start_workers(workers: int, warm_up: Callable[[], object] | None = None) -> None:
    """Start the pool's processes in the background, so they warm up while the caller goes on (importing
    Prefect, planning partitions): a worker's start waits for the fork server's preload. A task handed to
    the pool meanwhile waits for its worker."""
    pool = worker_pool(workers, warm_up)
    threading.Thread(target=_fill, args=(pool, workers), name="worker-pool-start", daemon=True).start()


def _fill(pool: ProcessPoolExecutor, workers: int) -> None:
    try:
        for _ in range(workers):
            pool.submit(int)
    except RuntimeError:  # shut down before its workers started: a build that failed at once, or an exit
        pass


def start_build_workers(config: CorpusflowConfig) -> None:
    """Start a local build's pool, each worker warmed up for `config`'s chain (on Ray, nothing to start).

    The CLI calls this before it imports Prefect, so the pool is warm when the first partition comes.
    """
    if config.runner.kind == "local" and _served_pool(config.runner.workers) is None:
        # imported here, not with this module: the CLI looks for a served pool before its fork server starts
        from pipeline.steps import partitions

        start_workers(config.runner.workers, warm_up=partial(partitions.warm_up, config))


def import_in_background(module: str) -> None:
    """Import `module` in a thread of this process, for a later step that would otherwise wait for it."""
    threading.Thread(target=importlib.import_module, args=(module,), name=f"import-{module}", daemon=True).start()


def start_step_pool_ahead(workers: int) -> Callable[[BuildProgress], None]:
    """A progress listener that starts the global steps' pool when the partitions left should take about as
    long as its imports (STEP_POOL_LEAD_S at the pace so far), or a chain worker has none left: the pool is
    ready as the global steps begin, and its imports mostly take a core the last partitions leave idle."""

    def on_progress(progress: BuildProgress) -> None:
        near_the_end = progress.eta_s is not None and progress.eta_s <= STEP_POOL_LEAD_S
        if (near_the_end or progress.total - progress.done < workers) and not _served_pool(workers):
            step_pool(workers)

    return on_progress


def run_in_worker(workers: int, fn: Callable[..., T], *args: object) -> T:
    """Run fn(*args) in the pool of `workers` processes (a served one when this run has it) and wait.

    An exception of fn is raised here as itself, so retry conditions see its type.
    """
    served = _served_pool(workers)
    environment = dict(os.environ)
    if served is None:
        return worker_pool(workers).submit(_in_environment, environment, fn, *args).result()
    return _call(served["address"], served["authkey"], _in_environment, (environment, fn, *args))


def run_in_step_worker(workers: int, fn: Callable[..., T], *args: object) -> T:
    """Run fn(*args) in the global steps' pool of `workers` processes (started now if it is not) and wait."""
    served = _served_pool(workers)
    steps = served["steps"] if served else step_pool(workers).endpoint()
    return _call(steps["address"], steps["authkey"], _in_environment, (dict(os.environ), fn, *args))


def _call(address: str, authkey: str, fn: Callable[..., T], args: tuple) -> T:
    client = _PoolClient(address=address, authkey=bytes.fromhex(authkey))
    client.connect()
    return client.pool().run(fn, args)


def _in_environment(environment: dict[str, str], fn: Callable[..., T], *args: object) -> T:
    """fn(*args) under the caller's environment variables, not the ones the worker was forked with.

    Workers come from a fork server started with the pool (or, served, by another process), so variables
    set since then (object-store credentials and endpoints above all) would otherwise not reach them.
    """
    if os.environ != environment:
        import fsspec.config

        os.environ.clear()
        os.environ.update(environment)
        fsspec.config.set_conf_env(fsspec.config.conf)  # fsspec read FSSPEC_* once, when it was imported
    return fn(*args)


class _Pool:
    """What a pool's server offers: a call run in one of its processes."""

    def __init__(self, executor: Callable[[], ProcessPoolExecutor]) -> None:
        self.executor = executor

    def run(self, fn: Callable[..., T], args: tuple) -> T:
        return self.executor().submit(fn, *args).result()


class _PoolClient(BaseManager):
    pass


_PoolClient.register("pool")


@contextmanager
def serving_workers(config: CorpusflowConfig) -> Iterator[Path | None]:
    """While inside, this process keeps a warm pool for `config` that the flow runs it starts use; yields
    the file that offers it to this user's builds (None on Ray, where nothing is served).

    The pool starts now; each worker also imports Great Expectations and matplotlib now, once for every
    later run.
    Runs find the pool through their environment and use it only when they want as many workers and
    run the same code (a run of newer code on disk gets a pool of its own); on Ray nothing is served.
    """
    if config.runner.kind != "local":
        yield
        return
    workers = config.runner.workers
    start_build_workers(config)
    steps = step_pool(workers)
    with _serving(partial(worker_pool, workers)) as endpoint:
        offer = {**endpoint, "steps": steps.endpoint(), "workers": workers, "code": code_version(),
                 "pid": os.getpid()}
        os.environ[SERVED_POOL_ENV] = json.dumps(offer)
        _publish(offer)
        try:
            yield _offer_path(workers)
        finally:
            os.environ.pop(SERVED_POOL_ENV, None)
            _withdraw(offer)


def adopt_served_pool(workers: int) -> int | None:
    """Use the warm pool a served process of this user offers for `workers` workers and this code, when one
    lives: returns that process's pid (None: there is none, and the caller starts its own pool).

    So a `corpusflow build` beside a running `corpusflow serve` pays no start-up either. Its work then runs
    in the served process's workers, alongside the scheduled runs, and ends with them, not with the build.
    """
    if _served_pool(workers) is not None:
        return json.loads(os.environ[SERVED_POOL_ENV])["pid"]
    try:
        offer = json.loads(_offer_path(workers).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(offer, dict) or offer.get("workers") != workers or offer.get("code") != code_version() \
            or not _lives(offer):
        return None
    os.environ[SERVED_POOL_ENV] = json.dumps(offer)
    return offer["pid"]


def _offer_path(workers: int) -> Path:
    return corpusflow_home() / "pools" / f"workers-{workers}.json"


def _publish(offer: dict) -> None:
    """Write the offer where this user's builds look for it. Its authkey lets whoever reads it run code in the
    pool, so the file is the user's alone (0600, in a 0700 folder), and written whole (renamed into place)."""
    path = _offer_path(offer["workers"])
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    with os.fdopen(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(offer, out)
    os.replace(staged, path)


def _withdraw(offer: dict) -> None:
    """Remove the offer, unless a later served process has replaced it with its own."""
    path = _offer_path(offer["workers"])
    try:
        if json.loads(path.read_text()).get("pid") == offer["pid"]:
            path.unlink()
    except (OSError, ValueError):
        pass


def _lives(offer: dict) -> bool:
    """Both of the offer's pools answer on their sockets. An offer left by a killed process does not: its
    socket files may remain, and its pid may have been given to another process since."""
    try:
        for endpoint in (offer, offer["steps"]):
            _PoolClient(address=endpoint["address"], authkey=bytes.fromhex(endpoint["authkey"])).connect()
    except (OSError, EOFError, KeyError, TypeError, ValueError, multiprocessing.AuthenticationError):
        return False
    return True


@contextmanager
def _serving(executor: Callable[[], ProcessPoolExecutor]) -> Iterator[dict[str, str]]:
    """While inside, calls to `executor`'s pool are served on a private local socket: {address, authkey}."""
    directory = tempfile.mkdtemp(prefix="corpusflow-pool-")  # private (0700): only this user reaches the socket
    authkey = secrets.token_bytes(32)
    manager = type("PoolServer", (BaseManager,), {})  # registrations are per class: one for each server
    manager.register("pool", callable=partial(_Pool, executor))
    server = manager(address=str(Path(directory) / "socket"), authkey=authkey).get_server()
    server.stop_event = threading.Event()  # what its connections' threads watch; serve_forever would set it
    accepting = threading.Thread(target=_accept, args=(server,), name="worker-pool-server", daemon=True)
    accepting.start()
    try:
        yield {"address": server.address, "authkey": authkey.hex()}
    finally:
        server.stop_event.set()
        Client(server.address).close()  # wakes the accepting thread, which then ends (no handshake: see _accept)
        accepting.join()  # it removes the socket as it closes
        shutil.rmtree(directory, ignore_errors=True)


class StepPool:
    """The global steps' pool: a process of its own, forked from the fork server, that imports what the
    steps need once and then forks its `workers` from itself; calls reach them through its socket."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("forkserver")
        self._lifeline, theirs = context.Pipe()  # its end closes when this process ends, however it ends
        # not a daemon: a daemonic process may not have children, and this one forks its workers
        self.process = context.Process(target=_serve_steps, args=(workers, theirs), name="corpusflow-steps",
                                       daemon=False)
        self.process.start()
        theirs.close()
        self._endpoint: dict[str, str] | None = None
        self._starting = threading.Lock()

    def endpoint(self) -> dict[str, str]:
        """{address, authkey} of its socket, once its workers are up (waits for that)."""
        with self._starting:
            if self._endpoint is None:
                try:
                    self._endpoint = self._lifeline.recv()
                except EOFError:
                    raise RuntimeError(f"the global steps' worker pool (pid {self.process.pid}) ended while "
                                       f"starting, exit code {self.process.exitcode}") from None
            return self._endpoint

    def close(self) -> None:
        self._lifeline.close()
        if self._endpoint is None:  # never used (an unchanged rebuild), maybe still importing: nothing to finish
            self.process.terminate()
        self.process.join(timeout=10)


def _serve_steps(workers: int, lifeline: Connection) -> None:
    """The global steps' pool process: import, fork the workers, serve until the builder's end closes."""
    import gc

    from pipeline.steps import writing

    try:
        writing.warm_up()
    except Exception:  # noqa: BLE001 - the step that needs what failed to import raises the same error, named
        pass
    gc.freeze()  # as in the fork server: the workers skip these objects in their collections
    # Forked from this process, which has no other thread yet (with "fork", all workers start on the first
    # submit, before the executor's own thread): the workers start with everything imported.
    watched, kept = multiprocessing.Pipe(duplex=False)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_forked_worker, initargs=(watched, kept))
    for started in [executor.submit(int) for _ in range(workers)]:
        started.result()
    with _serving(lambda: executor) as endpoint:
        lifeline.send(endpoint)
        try:
            lifeline.recv()  # nothing is ever sent: this returns when the builder's end closes
        except EOFError:
            pass
    executor.shutdown(cancel_futures=True)


def _forked_worker(watched: Connection, kept: Connection) -> None:
    """A steps' worker ends with the process that forked it (which keeps `kept` open while it lives)."""
    kept.close()  # this copy of the helper's end, inherited by the fork
    threading.Thread(target=_end_with, args=(watched,), name="pool-lifeline", daemon=True).start()


_step_pools: dict[int, StepPool] = {}


def step_pool(workers: int) -> StepPool:
    """The global steps' pool of `workers` processes, started on first use and kept like the chain's."""
    with _lock:
        _shut_down_at_exit()
        if workers not in _step_pools:
            _step_pools[workers] = StepPool(workers)
        return _step_pools[workers]


def _accept(server: Any) -> None:
    """The manager server's accept loop (its own `serve_forever` ends by exiting, and rebinds stdout).

    A connection is authenticated by `handle_request`, in its own thread, not here.
    """
    with server.listener:
        while True:
            connection = server.listener.accept()
            if server.stop_event.is_set():
                return
            threading.Thread(target=server.handle_request, args=(connection,), daemon=True).start()


def _served_pool(workers: int) -> dict | None:
    """The served pool this process may use for `workers` workers: same size, same code; else None."""
    offered = os.environ.get(SERVED_POOL_ENV)
    if not offered:
        return None
    served = json.loads(offered)
    return served if served["workers"] == workers and served["code"] == code_version() else None


def shutdown_workers() -> None:
    with _lock:
        for pool in _pools.values():
            pool.shutdown(cancel_futures=True)
        _pools.clear()
        for lifeline in _lifelines.values():
            lifeline.close()
        _lifelines.clear()
        steps = list(_step_pools.values())
        _step_pools.clear()
    for step in steps:
        step.close()
