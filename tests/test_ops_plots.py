"""The pictures exist, are real PNGs of the expected size, and are not blank (many colours, ink spread)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from helpers.versions import write_version
from pipeline.plots import plot_dataset, plot_eval_curves, plot_training_loss
from pipeline.schema import InputRecord
from pipeline.storage import read_arrow_table
from pipeline.versions import LEDGER, load_manifest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_nontrivial_png(path: str, min_colors: int = 8) -> None:
    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    pixels = imread(path)[..., :3]
    height, width = pixels.shape[:2]
    assert width >= 400 and height >= 200, (path, pixels.shape)
    colors = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colors) >= min_colors, (path, len(colors))
    inked_rows = np.flatnonzero((pixels < 0.9).any(axis=(1, 2)))
    assert inked_rows.size and inked_rows.max() - inked_rows.min() > height * 0.5, path


@pytest.fixture()
def version_dir(tmp_path: Path) -> Path:
    rng = random.Random(0)
    docs = [
        {"source": "zhwiki", "lang": "zh", "id": f"w{i}", "text": "长城" * rng.randint(20, 2000)} for i in range(120)
    ] + [
        {"source": "news_en", "lang": "en", "id": f"n{i}", "text": "word " * rng.randint(30, 600)} for i in range(80)
    ] + [
        {"source": "reviews", "lang": "zh", "id": f"r{i}", "text": "好吃" * rng.randint(3, 60)} for i in range(150)
    ]
    ledger = [
        {"source": "zhwiki", "partition": "zhwiki-00000", "outcome": "kept", "reason": "", "count": 120},
        {"source": "zhwiki", "partition": "zhwiki-00000", "outcome": "filtered", "reason": "redirect", "count": 40},
        {"source": "zhwiki", "partition": "zhwiki-00000", "outcome": "duplicate", "reason": "near", "count": 6},
        {"source": "news_en", "partition": "news_en-00000", "outcome": "kept", "reason": "", "count": 80},
        {"source": "news_en", "partition": "news_en-00000", "outcome": "filtered", "reason": "quality:min_words", "count": 12},
        {"source": "news_en", "partition": "news_en-00000", "outcome": "duplicate", "reason": "exact", "count": 9},
        {"source": "reviews", "partition": "reviews-00000", "outcome": "kept", "reason": "", "count": 150},
        {"source": "reviews", "partition": "reviews-00000", "outcome": "duplicate", "reason": "exact", "count": 30},
        {"source": "reviews", "partition": "reviews-00000", "outcome": "duplicate", "reason": "near", "count": 15},
        {"source": "reviews", "partition": "reviews-00000", "outcome": "filtered", "reason": "quality:spam", "count": 7},
        {"source": "reviews", "partition": "reviews-00000", "outcome": "rejected", "reason": "decode", "count": 2},
    ]
    inputs = [InputRecord(source=s, uri=f"samples/{s}", fingerprint="x") for s in ("zhwiki", "news_en", "reviews")]
    return write_version(tmp_path / "datasets", docs, ledger, inputs).parent


def test_dataset_pictures_are_written_to_reports(version_dir: Path) -> None:
    paths = plot_dataset(str(version_dir))
    assert [Path(p).name for p in paths] == ["lengths.png", "funnel.png", "duplicates.png"]
    for path in paths:
        assert Path(path).parent == version_dir / "reports"
        _assert_nontrivial_png(path)


def test_pictures_from_the_build_s_shards_and_ledger_equal_those_from_the_written_version(version_dir: Path) -> None:
    """A build draws them before it writes its manifest and ledger, from what it assembled."""
    from_files = [Path(p).read_bytes() for p in plot_dataset(str(version_dir))]
    manifest = load_manifest(str(version_dir / "manifest.json"))
    ledger = read_arrow_table(str(version_dir / LEDGER))
    given = [Path(p).read_bytes() for p in plot_dataset(str(version_dir), manifest.usable_shards(), ledger)]
    assert given == from_files
    without_rows = [Path(p).read_bytes() for p in plot_dataset(str(version_dir), [], ledger.slice(0, 1))]
    assert all(a != b for a, b in zip(without_rows, from_files))  # what is given is what is drawn


def test_training_pictures(tmp_path: Path) -> None:
    history = [
        {"step": s, "loss": 9.0 * np.exp(-s / 60) + 1.5, "lr": 5e-4 * min(1, s / 20)} for s in range(0, 201, 10)
    ] + [{"step": s, "eval_loss": 9.0 * np.exp(-s / 60) + 1.8} for s in (50, 100, 150, 200)]
    evaluation = [
        {"task": task, "epoch": e, "accuracy": 0.5 + 0.1 * e + shift, "macro_f1": 0.4 + 0.1 * e + shift}
        for task, shift in (("sentiment_zh", 0.0), ("news_topic_en", 0.05))
        for e in (1, 2, 3)
    ]
    _assert_nontrivial_png(plot_training_loss(history, str(tmp_path / "loss.png")))
    _assert_nontrivial_png(plot_eval_curves(evaluation, str(tmp_path / "eval.png")))


@pytest.mark.parametrize(("low", "high", "minor_labels"), [(17, 330, ["20", "50", "200"]), (8, 180_000, [])])
def test_log_axes_are_labelled_with_plain_numbers(low: float, high: float, minor_labels: list[str]) -> None:
    from matplotlib.figure import Figure

    from pipeline.plots import _plain_log_ticks

    ax = Figure().subplots()
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    _plain_log_ticks(ax, low, high)
    ax.figure.canvas.draw()
    majors = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
    minors = [label.get_text() for label in ax.get_xticklabels(minor=True) if label.get_text()]
    assert majors and all("^" not in text and "times" not in text for text in majors + minors)
    assert "100" in majors or "1,000" in majors
    assert set(minor_labels) <= set(minors) and all(text[0] in "25" for text in minors)
    assert bool(minors) == bool(minor_labels)  # a wide axis labels its decades only
