"""What a run reports in words: the summary (``summary.json``) and the progress line's text.

The summary is made from the evaluation log and the search's progress view when a run ends;
``evores report RUN_DIR`` makes it again from a run directory (:mod:`evores.reporting.recompute`).
Its statistics come from :mod:`evores.core.stats`, so the summary's median is the progress
lines' (:mod:`evores.reporting.progress`). The plots are :mod:`evores.reporting.plots`.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from evores import __version__
from evores.core.results import FAILED, INTERRUPTED
from evores.reporting import outcome
from evores.store.names import PLOTS, PROVISIONAL_SUMMARY

if TYPE_CHECKING:
    from evores.strategies.ladder import Progress

__all__ = ["PROVISIONAL_SUMMARY", "completed", "format_progress", "summary"]


def _duration(seconds: float) -> str:
    """Compact duration: 45s, 3m12s, 2h05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_progress(
    stage: int,
    n_stages: int,
    resolution: int,
    done: int,
    total: int,
    best: float | None,
    median: float | None,
    elapsed: float,
    remaining: float | None,
) -> str:
    """One progress line, e.g. ``stage 2/3  64 px  evals 40/72  best 0.812  median 0.640
    elapsed 3m12s  eta 1m40s``.

    ``stage`` is shown as given (pass it 1-based); ``best``/``median`` None (nothing succeeded
    yet) show as "-"; ``remaining`` None (no estimate yet) shows as "eta ?".
    """
    eta = "?" if remaining is None else _duration(remaining)
    return (
        f"stage {stage}/{n_stages}  {resolution} px  evals {done}/{total}  "
        f"best {_accuracy(best)}  median {_accuracy(median)}  "
        f"elapsed {_duration(elapsed)}  eta {eta}"
    )


# -- the run's summary and plots ----------------------------------------------------------------


def completed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per finished evaluation, in log order (a re-run replaces an interrupted
    record; a record logged twice around a crash counts once)."""
    latest = {tuple(r["key"]): r for r in records}
    return [r for r in latest.values() if r["status"] != INTERRUPTED]


def summary(
    config: dict[str, Any],
    progress: Progress,
    winner: dict[str, Any] | None,
    records: list[dict[str, Any]],
    cache: Any,
    wall_seconds: float,
    provisional: bool = False,
) -> dict[str, Any]:
    """``summary.json``: the winner beside the majority-class baseline (and a warning when it
    does not beat it), the stages and transitions, the failures by type, and what produced it
    (seed, strategy, data, version). ``cache`` is the run's dataset cache
    (its ``class_names`` and build ``report``). ``provisional``: written while the run goes
    (at a stage change, or when it stops), so the winner and test accuracy are not in yet."""
    failed = [r for r in completed(records) if r["status"] == FAILED]
    failures = Counter(r.get("failure") or "unknown" for r in failed)
    floor = outcome.baseline(cache.report, list(cache.class_names))
    return {
        "best_hparams": winner["hparams"] if winner else None,
        "test_accuracy": winner["test_accuracy"] if winner else None,
        "test_resolution": config["schedule"]["resolutions"][-1],
        "val_accuracy": winner["val_accuracy"] if winner else None,
        "baseline": floor,
        "warnings": outcome.warnings_of(winner, floor),
        "wall_seconds": round(wall_seconds, 3),
        "n_evaluations": progress.n_evaluations,
        "stages": list(progress.stages),
        "transitions": list(progress.transitions),
        "adaptive": {
            "enabled": bool(config["schedule"].get("adaptive")),
            "fidelity_threshold": config["schedule"].get("fidelity_threshold"),
            "decisions": list(progress.decisions),
        },
        "final_candidates": list(progress.final),
        "failures": dict(sorted(failures.items())),
        "outcome": outcome.of_run(progress, winner, failed, bool(config["fitness"]["function"])),
        "seed": config["seed"],
        "strategy": config["search"]["strategy"],
        "data": {
            "path": config["data"]["path"],
            "filter": config["data"]["filter"],
            "resizer": config["data"].get("resizer", "fixed"),
            "classes": list(cache.class_names),
            "report": cache.report,
        },
        "plots": dict(PLOTS),
        "evores_version": __version__,
        "provisional": provisional,
    }


# -- python -m evores.report RUN_DIR ------------------------------------------------------------
