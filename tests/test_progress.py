"""Build progress figures and what the terminal shows of Prefect's log records (no server needed)."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from flows.progress import BuildProgress, listening
from flows.terminal import _plain_lines, _WithoutTraceback


def test_progress_line_has_counts_rates_eta_and_drops() -> None:
    progress = BuildProgress(total=8, done=2, elapsed_s=30.0, staged_bytes=6_000_000,
                             outcomes={"kept": 900, "filtered": 80, "duplicate": 0, "rejected": 20})
    assert progress.eta_s == 90.0 and progress.percent == 25.0
    line = progress.line()
    assert line.startswith("partitions 2/8 (25%)")
    assert "1,000 records (33/s)" in line and "6.0 MB staged (0.20 MB/s)" in line
    assert "ETA 0:01:30" in line and "filtered 80, rejected 20" in line and "duplicate" not in line
    assert BuildProgress(total=3).eta() == "?"


def test_eta_goes_by_input_bytes_when_planning_measured_them() -> None:
    """The largest partitions run first: 2 of 8 done may be most of the work."""
    progress = BuildProgress(total=8, done=2, elapsed_s=30.0, planned_bytes=1_000, done_bytes=750)
    assert progress.eta_s == 10.0


def test_plain_lines_print_the_first_partitions_and_the_last() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    with _plain_lines(console, "building") as show, listening(show):
        for done in range(0, 5):
            show(BuildProgress(total=4, done=done, elapsed_s=float(done)))
    lines = out.getvalue().splitlines()
    assert lines[0] == "building ..." and lines[-1].startswith("done building in")
    assert [line.split(" (")[0] for line in lines[1:-2]] == ["partitions 0/4", "partitions 1/4", "partitions 4/4"]
    assert lines[-2].startswith("every partition is in; then dedup")


def test_console_format_drops_the_traceback_that_other_handlers_keep() -> None:
    console_out, api_out = io.StringIO(), io.StringIO()
    console_handler, api_handler = logging.StreamHandler(console_out), logging.StreamHandler(api_out)
    console_handler.setFormatter(_WithoutTraceback(logging.Formatter("%(levelname)s %(message)s")))
    logger = logging.getLogger("corpusflow-test-traceback")
    logger.propagate = False
    for handler in (api_handler, console_handler):
        logger.addHandler(handler)
    try:
        raise ValueError("unreadable input x.csv")
    except ValueError:
        logger.exception("Task run failed with exception: ValueError('unreadable input x.csv')")
    assert console_out.getvalue() == "ERROR Task run failed with exception: ValueError('unreadable input x.csv')\n"
    assert "Traceback (most recent call last)" in api_out.getvalue()
