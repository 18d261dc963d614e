"""The fork server the build's workers come from, startable before anything heavy is imported.

It imports the partition chain and loads its dictionaries and models (about two seconds of one core)
before it forks a worker. `corpusflow build` starts it first thing, so that happens on the other core while
the command imports Prefect and starts its flow, and the first partition finds its worker ready.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver

PRELOAD = ["pipeline.steps.preload"]  # what the fork server imports before it forks the first worker


def fork_context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its preload set (read when the server starts)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_fork_server() -> None:
    """Start the server now (it does not wait for the preload); pools started later fork from it."""
    fork_context()
    multiprocessing.forkserver.ensure_running()
