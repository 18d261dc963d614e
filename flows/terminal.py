"""What the terminal shows while a flow runs in this process.

- A build's progress: a live rich display on a terminal, plain lines (at most one every few seconds)
  when the output goes to a file or a pipe.
- Prefect's log lines without tracebacks: a failed task's message stays, its traceback goes only to the
  run's log in the Prefect API (and to the terminal with `--debug`).
- No progress bars from libraries (tqdm, `datasets`, the Hub client) when nobody watches a terminal.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:  # flows.progress imports Prefect, which commands that run no flow do without
    from flows.progress import BuildProgress, Listener

PLAIN_LINE_EVERY_S = 5.0
FINISHING = "dedup, shards, contracts, publish"  # the global steps after the partitions
LIBRARY_PROGRESS_BARS_OFF = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                             "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def silence_library_progress_bars() -> None:
    """Before libraries are imported: their bars are noise in a log file and in CI output."""
    for name, value in LIBRARY_PROGRESS_BARS_OFF.items():
        os.environ.setdefault(name, value)


@contextmanager
def flow_display(console: Console, description: str, debug: bool = False) -> Iterator[None]:
    """Show the flow's progress (and Prefect's log lines, tracebacks only with `debug`) until it returns."""
    from flows.progress import listening

    handlers = _prefect_console_handlers()
    formatters = [handler.formatter for handler in handlers]
    if not debug:
        for handler in handlers:
            handler.setFormatter(_WithoutTraceback(handler.formatter))
    try:
        live = console.is_terminal
        display = _live_display(console, description, handlers) if live else _plain_lines(console, description)
        with display as show, listening(show):
            yield
    finally:
        for handler, formatter in zip(handlers, formatters):
            handler.setFormatter(formatter)


@contextmanager
def _live_display(console: Console, description: str, handlers: list[logging.Handler]) -> Iterator["Listener"]:
    """Two rows: the whole command (spinner, clock) and, once a build has planned them, its partitions."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
               TextColumn("{task.fields[counts]} {task.fields[eta]}"), TimeElapsedColumn(),
               TextColumn("{task.fields[detail]}"))
    progress = Progress(*columns, console=console, transient=False)
    command = progress.add_task(description, total=None, counts="", eta="", detail="")
    partitions: list[TaskID] = []

    def show(snapshot: "BuildProgress") -> None:
        if not partitions:
            partitions.append(progress.add_task("partitions", counts="", eta="", detail=""))
        elif snapshot.done == 0:  # another build in the same command
            progress.reset(partitions[0])
        progress.update(partitions[0], total=snapshot.total, completed=snapshot.done,
                        counts=f"{snapshot.done}/{snapshot.total}", eta=f"ETA {snapshot.eta()}",
                        detail=f"{snapshot.rates()} | {snapshot.drops()}")

    # Prefect's console handler writes to the stream it was made with; through the display's console its
    # lines appear above the live display instead of tearing it.
    consoles = [handler.console for handler in handlers]
    for handler in handlers:
        handler.console = console
    try:
        with progress:
            yield show
            progress.update(command, description=f"[green]done[/green] {description}", total=1, completed=1)
    finally:
        for handler, previous in zip(handlers, consoles):
            handler.console = previous


@contextmanager
def _plain_lines(console: Console, description: str) -> Iterator["Listener"]:
    last_printed = -PLAIN_LINE_EVERY_S

    def show(snapshot: "BuildProgress") -> None:
        nonlocal last_printed
        now = time.monotonic()
        if snapshot.done in (0, 1, snapshot.total) or now - last_printed >= PLAIN_LINE_EVERY_S:
            last_printed = now
            console.print(snapshot.line(), highlight=False, soft_wrap=True)
        if snapshot.done == snapshot.total:
            console.print(f"every partition is in; then {FINISHING}", highlight=False)

    console.print(f"{description} ...", highlight=False)
    started = time.monotonic()
    yield show
    console.print(f"done {description} in {time.monotonic() - started:.0f} s", highlight=False)


def _prefect_console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    found = {id(h): h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers
             if isinstance(h, PrefectConsoleHandler)}
    return list(found.values())


class _WithoutTraceback(logging.Formatter):
    """Formats a record as the wrapped formatter would, minus its traceback (other handlers still get it)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info, bare.exc_text, bare.stack_info = None, None, None
        return self.inner.format(bare)
