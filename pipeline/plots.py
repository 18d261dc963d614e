"""PNG pictures of a dataset version and of a training run, for the run directory and the flow's artifacts.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), which renders with Agg and
never touches pyplot's global state, so plotting from worker threads or without a display is safe.
Every function writes one PNG (through `storage`, so the target may be an fsspec URL) and returns its
location. Dataset pictures land in `<version>/reports/` unless told otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage, versions
from pipeline.schema import ShardRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
DROP_COLORS = {"filtered": "#e07b39", "duplicate": "#8c6bb1", "rejected": "#c0392b"}
LENGTHS, FUNNEL, DUPLICATES = "lengths.png", "funnel.png", "duplicates.png"  # under <version>/reports/
DATASET_PICTURES = (LENGTHS, FUNNEL, DUPLICATES)


def plot_dataset(version_dir: str, shards: Sequence[ShardRecord] | None = None, ledger: pa.Table | None = None,
                 ) -> list[str]:
    """All dataset pictures of a version (DATASET_PICTURES): length histograms, filter funnel, duplicate rates.

    `shards` (the usable ones) and `ledger` default to the version's manifest and ledger; a build passes
    them, to draw while it writes those files."""
    if shards is None:
        shards = versions.load_manifest(storage.join(version_dir, versions.MANIFEST)).usable_shards()
    ledger = ledger if ledger is not None else storage.read_arrow_table(storage.join(version_dir, versions.LEDGER))
    return [plot_length_histograms(version_dir, shards), plot_filter_funnel(version_dir, ledger),
            plot_duplicate_rates(version_dir, ledger)]


def warm_up() -> None:
    """Import matplotlib and its Agg canvas (half a second) ahead of the first picture in this process."""
    from matplotlib.backends import backend_agg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def dataset_pictures(version_dir: str) -> list[str]:
    """The pictures `plot_dataset` left in a version's reports/, wherever the version has moved since."""
    uris = [_report_uri(version_dir, name) for name in DATASET_PICTURES]
    return [uri for uri in uris if storage.exists(uri)]


def plot_length_histograms(version_dir: str, shards: Sequence[ShardRecord], out_uri: str | None = None) -> str:
    """Characters per kept document, one panel per language, one line per source (log-spaced bins)."""
    lengths = _lengths_by_lang_and_source(version_dir, shards)
    langs = sorted(lengths)
    panels = max(len(langs), 1)
    # Margins fixed in inches: the constrained layout measured every tick label of the log axes, half
    # of this picture's time on the build's last steps, for margins that do not vary.
    height = 3.2 * panels
    figure = _new_figure((6.5, height), layout=None)
    figure.subplots_adjust(left=0.85 / 6.5, right=1 - 0.3 / 6.5, top=1 - 0.35 / height, bottom=0.55 / height,
                           hspace=0.95 / 2.2)  # the gap over the height of one panel
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    for ax, lang in zip(axes, langs):
        by_source = lengths[lang]
        shortest = max(min(int(np.min(values)) for values in by_source.values()), 1)  # log axis: no zero
        longest = max(int(np.max(values)) for values in by_source.values())
        bins = np.geomspace(shortest / 1.05, max(longest, shortest * 2) * 1.05, 40)
        for source, values in sorted(by_source.items()):
            ax.hist(values, bins=bins, histtype="step", linewidth=1.6, label=f"{source} (n={len(values)})")
        ax.set_xscale("log")
        _plain_log_ticks(ax, bins[0], bins[-1])
        ax.set_title(f"Document length, lang={lang}")
        ax.set_xlabel("characters per document (log scale)")
        ax.set_ylabel("documents")
        ax.legend(fontsize="small")
    if not langs:
        _empty(axes[0], "no kept documents")
    return _save(figure, out_uri or _report_uri(version_dir, LENGTHS))


def _plain_log_ticks(ax: Axes, low: float, high: float) -> None:
    """Plain numbers on a log axis (20, 50, 100 ...): matplotlib writes 2x10^1, 3x10^1 ... on the minor
    ticks of an axis spanning about a decade, and those labels run into each other. Minor ticks are labelled
    at 2 and 5 times a power of ten while the axis spans two decades or fewer, and not at all beyond."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(_two_or_five_times) if high / low <= 100 else NullFormatter())


def _two_or_five_times(value: float, _: int) -> str:
    leading = round(value / 10 ** np.floor(np.log10(value)))
    return f"{value:,.0f}" if leading in (2, 5) else ""


def _lengths_by_lang_and_source(version_dir: str, shards: Sequence[ShardRecord]) -> dict[str, dict[str, np.ndarray]]:
    chunks: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for shard in shards:
        with storage.open_arrow(storage.join(version_dir, shard.path)) as (_, batches):
            for batch in batches:
                # a shard holds one source in one language, so its record names both
                chunks[shard.lang][shard.source].append(batch.column("n_chars").to_numpy(zero_copy_only=False))
    return {lang: {src: np.concatenate(parts) for src, parts in by_src.items()} for lang, by_src in chunks.items()}


def plot_filter_funnel(version_dir: str, ledger: pa.Table, out_uri: str | None = None) -> str:
    """Waterfall from documents read to documents kept: one bar per drop reason, largest first."""
    counts = _sum_by(ledger, ("outcome", "reason"))
    kept = sum(c for (outcome, _), c in counts.items() if outcome == "kept")
    drops = sorted(((o, r, c) for (o, r), c in counts.items() if o != "kept"), key=lambda d: (-d[2], d[0], d[1]))
    read = kept + sum(c for _, _, c in drops)

    labels, lefts, widths, colors = ["read"], [0], [read], ["#4c72b0"]
    remaining = read
    for outcome, reason, count in drops:
        remaining -= count
        labels.append(f"{outcome}: {reason}")
        lefts.append(remaining)
        widths.append(count)
        colors.append(DROP_COLORS.get(outcome, "#7f7f7f"))
    labels.append("kept")
    lefts.append(0)
    widths.append(kept)
    colors.append("#55a868")

    figure = _new_figure((7.5, 1.2 + 0.38 * len(labels)))
    ax = figure.subplots()
    positions = np.arange(len(labels))
    ax.barh(positions, widths, left=lefts, color=colors)
    for position, left, width, label in zip(positions, lefts, widths, labels):
        text = f"{width:,}" if label in ("read", "kept") else f"-{width:,}"
        ax.text(left + width, position, f" {text}", va="center", fontsize="small")
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()  # read at the top, kept at the bottom, like a funnel
    ax.set_xlim(0, max(read, 1) * 1.15)
    ax.set_xlabel("documents")
    share = f"{kept / read:.1%}" if read else "n/a"
    ax.set_title(f"Filter funnel: read {read:,} -> kept {kept:,} ({share})")
    return _save(figure, out_uri or _report_uri(version_dir, FUNNEL))


def plot_duplicate_rates(version_dir: str, ledger: pa.Table, out_uri: str | None = None) -> str:
    """Per source, the share of documents read that were dropped as duplicates, stacked by kind."""
    read_by_source = _sum_by(ledger, ("source",))
    duplicates = _sum_by(ledger.filter(pc.equal(ledger["outcome"], "duplicate")), ("source", "reason"))
    sources = sorted(s for (s,) in read_by_source)
    kinds = sorted({reason for _, reason in duplicates})

    figure = _new_figure((7.0, 1.4 + 0.45 * max(len(sources), 1)))
    ax = figure.subplots()
    positions = np.arange(len(sources))
    lefts = np.zeros(len(sources))
    for kind in kinds:
        rates = np.array([100 * duplicates.get((s, kind), 0) / read_by_source[(s,)] for s in sources])
        ax.barh(positions, rates, left=lefts, label=kind or "duplicate")
        lefts += rates
    for position, total in zip(positions, lefts):
        ax.text(total, position, f" {total:.1f}%", va="center", fontsize="small")
    ax.set_yticks(positions, sources)
    ax.invert_yaxis()
    ax.set_xlim(0, max(float(lefts.max(initial=0)) * 1.25, 1.0))
    ax.set_xlabel("duplicates, % of documents read")
    ax.set_title("Duplicate rate per source")
    if kinds:
        ax.legend(title="kind", fontsize="small")
    else:
        _empty(ax, "no duplicates")
    return _save(figure, out_uri or _report_uri(version_dir, DUPLICATES))


def plot_training_loss(history: Sequence[Mapping[str, float]], out_uri: str) -> str:
    """Loss against step; rows have "step" and "loss", optionally "eval_loss" and "lr" (right axis)."""
    figure = _new_figure((7.0, 3.8))
    ax = figure.subplots()
    for key, style in (("loss", "-"), ("eval_loss", "o--")):
        points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, style, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    handles = list(ax.lines)
    rates = [(row["step"], row["lr"]) for row in history if row.get("lr") is not None]
    if rates:
        lr_axis = ax.twinx()
        steps, values = zip(*rates)
        handles += lr_axis.plot(steps, values, color="#999999", linewidth=1, label="learning rate")
        lr_axis.set_ylabel("learning rate")
        lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if ax.lines:
        # one legend for both axes, away from the top where the warmed-up learning rate runs
        ax.legend(handles=handles, loc="center right", fontsize="small")
    else:
        _empty(ax, "no loss logged")
    return _save(figure, out_uri)


def plot_eval_curves(rows: Sequence[Mapping[str, float | str]], out_uri: str) -> str:
    """Evaluation metrics against epoch, one panel per task; rows have "task", "epoch" and metric columns."""
    by_task: dict[str, list[Mapping[str, float | str]]] = defaultdict(list)
    for row in rows:
        by_task[str(row["task"])].append(row)
    tasks = sorted(by_task)
    figure = _new_figure((4.2 * max(len(tasks), 1), 3.6))
    axes = figure.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        task_rows = sorted(by_task[task], key=lambda r: float(r["epoch"]))
        metrics = sorted({k for r in task_rows for k, v in r.items() if k not in ("task", "epoch") and _is_number(v)})
        for metric in metrics:
            points = [(float(r["epoch"]), float(r[metric])) for r in task_rows if _is_number(r.get(metric))]
            epochs, values = zip(*points)
            ax.plot(epochs, values, "o-", label=metric)
        ax.set_title(f"Evaluation: {task}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_ylabel("metric value")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not tasks:
        _empty(axes[0], "no evaluation rows")
    return _save(figure, out_uri)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sum_by(ledger: pa.Table, keys: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    grouped = ledger.group_by(list(keys)).aggregate([("count", "sum")]).to_pylist()
    return {tuple(row[k] for k in keys): row["count_sum"] for row in grouped}


def _report_uri(version_dir: str, name: str) -> str:
    return storage.join(version_dir, "reports", name)


def _new_figure(figsize: tuple[float, float], layout: str | None = "constrained") -> Figure:
    # matplotlib is imported here, not with this module: it takes half a second, and a build's start-up
    # (which imports the card and so this module) should not wait for pictures drawn at its end
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=DPI, layout=layout)


def _integer_ticks() -> object:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777777")


def _save(figure: Figure, out_uri: str) -> str:
    with storage.open_output(out_uri) as handle:
        figure.savefig(handle, format="png")
    return out_uri
