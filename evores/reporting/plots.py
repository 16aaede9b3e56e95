"""The run's plots: best validation accuracy against evaluations and time, the elites' climb up
the ladder, and the genes' importance; written with matplotlib's Agg backend, never a screen."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evores.core.atomic import atomic_path
from evores.core.results import KIND_SEARCH
from evores.core.stats import median, spearman
from evores.reporting.summary import completed
from evores.store.names import PLOTS

_DPI = 100


def _figure(size: tuple[float, float] = (7.0, 4.5)) -> Any:
    """A Figure drawn by an explicit Agg canvas and never registered with pyplot.

    No ``matplotlib.use``: switching the global backend would close the figures of a caller
    who already uses pyplot (a notebook), and a Figure with its own Agg canvas needs no backend
    and no display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    """Write the PNG atomically (readers never see half a plot), then free the figure."""
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, format="png")
    finally:
        fig.clear()


def _message_plot(path: Path, message: str) -> None:
    fig = _figure((5.0, 3.0))
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14)
    ax.set_axis_off()
    _save(fig, path)


def _stage_of(record: dict) -> int:
    return int(record["stage"]) if "stage" in record else int(record["key"][0])


def progress_series(records: list[dict]) -> dict[str, np.ndarray]:
    """Per evaluation (search records, completion order): x values and stage-wise statistics.

    ``best`` and ``median`` are over the successful evaluations of the *current stage* so far
    (cumulative, not rolling): accuracies at different resolutions are not comparable, so both
    restart at each stage boundary. They are NaN until the stage has a success. Failed
    evaluations still advance the evaluation count.
    """
    search = [r for r in records if r.get("kind", KIND_SEARCH) == KIND_SEARCH]
    best, medians, stages, accuracy = [], [], [], []
    current, scores = None, []
    for record in search:
        stage = _stage_of(record)
        if stage != current:
            current, scores = stage, []
        ok = record.get("status") == "ok"
        if ok:
            scores.append(float(record["val_accuracy"]))
        accuracy.append(float(record["val_accuracy"]) if ok else math.nan)
        best.append(max(scores) if scores else math.nan)
        medians.append(math.nan if not scores else median(scores))
        stages.append(stage)
    return {
        "evaluations": np.arange(1, len(search) + 1, dtype=float),
        "seconds": np.array([float(r["elapsed"]) for r in search]),
        "minutes": np.array([float(r["elapsed"]) / 60 for r in search]),
        "resolution": np.array([int(r["resolution"]) for r in search]),
        "stage": np.array(stages, dtype=int),
        "accuracy": np.array(accuracy),
        "best": np.array(best),
        "median": np.array(medians),
    }


def _stage_starts(series: dict[str, np.ndarray]) -> np.ndarray:
    stage = series["stage"]
    return np.flatnonzero(np.r_[True, stage[1:] != stage[:-1]])


def _boundary(x: np.ndarray, start: int, on_time_axis: bool) -> float:
    """Where a stage starts: just before its first evaluation, or (on the time axis) when the
    previous stage's last evaluation completed (the run's start for the first stage)."""
    if not on_time_axis:
        return float(x[start]) - 0.5
    return float(x[start - 1]) if start > 0 else 0.0


# The time axis's unit: the largest whose run still spans at least two of them.
_TIME_UNITS = (("hours", 3600.0), ("minutes", 60.0), ("seconds", 1.0))


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit to plot a run of ``seconds`` in, and its length in seconds."""
    return next((u for u in _TIME_UNITS if seconds >= 2 * u[1]), _TIME_UNITS[-1])


def _draw_progress(ax: Any, x: np.ndarray, series: dict[str, np.ndarray], unit: str) -> None:
    """One progress plot; ``unit`` is the x axis's: "evaluations" or a :func:`time_unit`."""
    from matplotlib.ticker import MaxNLocator

    on_time = unit != "evaluations"
    ok = ~np.isnan(series["accuracy"])
    ax.scatter(x[ok], series["accuracy"][ok], s=8, color="0.65", label="evaluation")
    if (~ok).any():
        ax.scatter(x[~ok], np.zeros((~ok).sum()), s=14, marker="x", color="tab:red", label="failed")
    starts = list(_stage_starts(series))
    for n, (a, b) in enumerate(zip(starts, starts[1:] + [len(x)], strict=True)):
        # One segment per stage: the statistics restart, so the lines must not join stages.
        # The best is drawn last and wider, so it stays visible where the median equals it.
        labels = ("best in stage", "median in stage") if n == 0 else (None, None)
        ax.plot(x[a:b], series["median"][a:b], color="tab:orange", label=labels[1], zorder=2)
        ax.step(x[a:b], series["best"][a:b], where="post", color="tab:blue", label=labels[0],
                linewidth=2.2, alpha=0.85, zorder=3)  # fmt: skip
        pos = _boundary(x, a, on_time)
        ax.axvline(pos, color="0.3", linestyle="--", linewidth=0.8)
        ax.annotate(
            f"{series['resolution'][a]} px",
            (pos, 1.0),
            xycoords=("data", "axes fraction"),
            # Successive labels step down a line, so short stages' labels never overlap.
            xytext=(3, -12 - 11 * (n % 3)),
            textcoords="offset points",
            fontsize=9,
        )
    if on_time:
        ax.set_xlabel(f"wall time ({unit})")
    else:
        ax.set_xlabel("evaluations (completion order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def plot_progress(records: list[dict], path_evaluations: Path, path_time: Path) -> None:
    """Best and median validation accuracy per stage against evaluations and wall time.

    Uses the ``kind == "search"`` records in completion order (see ``progress_series``);
    dashed lines mark where each stage starts, labelled with its resolution. Without any
    search record both files show "no evaluations yet".
    """
    series = progress_series(records)
    if len(series["evaluations"]) == 0:
        _message_plot(path_evaluations, "no evaluations yet")
        _message_plot(path_time, "no evaluations yet")
        return
    for path, on_time in ((path_evaluations, False), (path_time, True)):
        _save(progress_figure(series, on_time), path)


def progress_figure(series: dict[str, np.ndarray], on_time: bool) -> Any:
    """The progress plot of :func:`progress_series` against evaluations or wall time (in the
    unit that suits the run's length)."""
    fig = _figure((8.5, 4.5))
    if on_time:
        unit, length = time_unit(float(series["seconds"].max()))
        x = series["seconds"] / length
    else:
        unit, x = "evaluations", series["evaluations"]
    _draw_progress(fig.add_subplot(), x, series, unit)
    fig.tight_layout()
    return fig


def plot_elites(transitions: list[dict], path: Path) -> None:
    """Each stage change: the elites' and the probe's accuracy at the low vs the high resolution.

    One colour per transition (circles: elites, triangles: probe), the diagonal y = x, and in
    the legend Spearman's rho (the stored ``rank_correlation``, recomputed when absent), its
    bootstrap interval, the pairs used and the failures left out. A pair with one failed side
    is marked with an x on the axis of the failed side; it is in no statistic. With no
    transitions the file still gets written, showing "no stage changes", so the run directory
    always has the same plots.
    """
    if not transitions:
        _message_plot(path, "no stage changes")
        return
    fig = _figure((5.5, 5.0))
    ax = fig.add_subplot()
    values: list[float] = []
    drawn = []
    for t in transitions:
        low, high = list(t["low"]), list(t["high"])
        if len(low) != len(high):
            raise ValueError(
                f"transition {t['from_resolution']}->{t['to_resolution']} has "
                f"{len(low)} low and {len(high)} high accuracies"
            )
        # Transitions recorded before the probe have no pairs: all their members are elites.
        pairs = t.get("pairs") or [
            {"role": "elite", "low": x, "high": y} for x, y in zip(low, high, strict=True)
        ]
        drawn.append((pairs, _elites_label(t, low, high)))
        values += [v for p in pairs for v in (p["low"], p["high"]) if v is not None]
    lo = min(values, default=0.0) - 0.02
    hi = max(values, default=1.0) + 0.02
    for i, (pairs, label) in enumerate(drawn):
        colour = f"C{i % 10}"  # the colour cycle's i-th
        for role, marker in (("elite", "o"), ("probe", "^")):
            used = [p for p in pairs if p["role"] == role and None not in (p["low"], p["high"])]
            ax.scatter(
                [p["low"] for p in used], [p["high"] for p in used], s=28, alpha=0.8,
                marker=marker, color=colour, label=label if role == "elite" else None,
            )  # fmt: skip
        failed = [p for p in pairs if None in (p["low"], p["high"])]
        ax.scatter([lo if p["low"] is None else p["low"] for p in failed],
                   [lo if p["high"] is None else p["high"] for p in failed],
                   marker="x", s=40, color=colour, clip_on=False)  # fmt: skip
    ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=0.8, label="y = x")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("validation accuracy at the lower resolution")
    ax.set_ylabel("validation accuracy at the higher resolution")
    ax.set_title("elites (o) and probe (△) re-evaluated; x: failed, left out", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _elites_label(t: dict, low: list[float], high: list[float]) -> str:
    rho = t.get("rank_correlation")
    rho = spearman(low, high) if rho is None and len(low) > 1 else rho
    label = f"{t['from_resolution']} → {t['to_resolution']} px  (ρ = "
    label += "n/a" if rho is None else f"{rho:.2f}"
    interval = t.get("interval")
    if interval is not None:
        label += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    label += f", n {t.get('n', len(low))}"
    if t.get("n_failed"):
        label += f", {t['n_failed']} failed"
    return label + ")"


def plot_importance(data: dict[str, Any], path: Path) -> None:
    """``importance.json`` (``evores.reporting.importance``) as one heat map: a row per gene, a
    column per
    stage labelled with its resolution and the successful evaluations it rests on. A stage
    without importance is a grey column marked "n/a" (its reason is in the file); with none at
    all the file shows why, so the run directory always has the plot."""
    stages, genes = data["stages"], list(data["genes"])
    if not any(s["importance"] for s in stages):
        _message_plot(path, "no stage has enough successful\nevaluations for importance")
        return
    values = np.full((len(genes), len(stages)), np.nan)
    for column, stage in enumerate(stages):
        if stage["importance"]:
            values[:, column] = [stage["importance"][gene] for gene in genes]
    fig = _figure((2.2 + 1.1 * len(stages), 5.0))
    ax = fig.add_subplot()
    ax.set_facecolor("0.85")  # the colour of a stage without importance
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        text = "n/a" if math.isnan(value) else f"{value:.2f}"
        colour = "black" if math.isnan(value) or value > 0.6 else "white"
        ax.text(column, row, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels([f"{s['resolution']} px\nn={s['n_used']}" for s in stages])
    ax.set_yticks(range(len(genes)))
    ax.set_yticklabels([gene.replace("_", " ") for gene in genes])
    ax.set_xlabel("stage (resolution, successful evaluations)")
    ax.set_title("gene importance per stage (fANOVA)")
    fig.colorbar(image, ax=ax, label="share of the explained variance")
    fig.tight_layout()
    _save(fig, path)


def plot_run(directory: Path, records: list[dict[str, Any]], transitions: Sequence[dict]) -> None:
    """The run directory's three :data:`PLOTS`, from its log and the search's transitions."""
    directory = Path(directory)
    search = [r for r in completed(records) if r["kind"] == KIND_SEARCH]
    plot_progress(search, directory / PLOTS["evaluations"], directory / PLOTS["time"])
    plot_elites(list(transitions), directory / PLOTS["elites"])
