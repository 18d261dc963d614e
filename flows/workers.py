"""A process pool for CPU-heavy partition work (parsing, normalising, jieba) called from threads.

Task threads hand whole partitions to worker processes: the GIL would otherwise serialise every stage
but segmentation. Workers are spawned, not forked, because the calling process runs threads and an event
loop that a fork would copy in an undefined state; each worker loads the chain's dictionaries once.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from flows.progress import BuildProgress

T = TypeVar("T")

_pools: dict[int, ProcessPoolExecutor] = {}
_lock = threading.Lock()


def _warm_worker(warm_up: Callable[[], object] | None) -> None:
    import jieba

    jieba.setLogLevel(60)
    if warm_up is not None:
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - a failing initializer breaks the whole pool; the first task
            pass  # that needs what failed to load raises the same error, named in its own partition


def worker_pool(workers: int, warm_up: Callable[[], object] | None = None) -> ProcessPoolExecutor:
    """The pool of `workers` processes, created on first use and kept for later builds in this process.

    Each new worker runs `warm_up` (picklable) first: what it loads, it loads while the flow plans, not
    during its first task; `warm_up` counts only when the pool is created.
    """
    with _lock:
        if not _pools:
            atexit.register(shutdown_workers)  # idle workers would otherwise outlive a crashed parent's exit
        if workers not in _pools:
            _pools[workers] = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_worker,
                initargs=(warm_up,))
        return _pools[workers]


def start_workers(workers: int, warm_up: Callable[[], object] | None = None) -> None:
    """Spawn the pool's processes now, so they warm up while the flow is still planning its partitions."""
    pool = worker_pool(workers, warm_up)
    for _ in range(workers):
        pool.submit(int)


def preload_as_workers_free(workers: int, load: Callable[[], object]) -> Callable[[BuildProgress], None]:
    """A progress listener that hands `load` to each worker as the partitions left no longer need it.

    Used to import what a later stage needs (Great Expectations takes seconds) in the time a worker would
    otherwise wait for the last partitions and the global steps, instead of on that stage's critical path.
    """
    handed = 0

    def on_progress(progress: BuildProgress) -> None:
        nonlocal handed
        idle = workers - (progress.total - progress.done)  # never more than `workers`: done <= total
        while handed < idle:
            worker_pool(workers).submit(load)
            handed += 1

    return on_progress


def run_in_worker(workers: int, fn: Callable[..., T], *args: object) -> T:
    """Run fn(*args) in the shared pool of `workers` processes and wait for its result."""
    return worker_pool(workers).submit(fn, *args).result()


def shutdown_workers() -> None:
    with _lock:
        for pool in _pools.values():
            pool.shutdown(cancel_futures=True)
        _pools.clear()
