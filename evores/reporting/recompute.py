"""A run directory's report made again from its files: ``python -m evores.report RUN_DIR``.

Everything the driver reports is a function of the run directory: the configuration
(``config.toml``), the search's state (the checkpoint), the evaluation log and the data report
(``data_report.json``). :func:`recompute` reads them as a resume would (each checked, a torn
last log line skipped), rebuilds the search's progress view from the checkpoint, and writes
the summary's statistics, ``importance.json`` and every plot again, for a run finished,
stopped mid-stage or killed.

What the summary becomes depends on how the run stands:

- unfinished (no ``summary.json``): ``summary.provisional.json`` is written afresh; its
  ``wall_seconds`` is the latest run time the checkpoint or the log records;
- finished: ``summary.json`` is never rewritten. The recomputed summary (with the stored
  ``wall_seconds``, a clock reading and not a statistic) is compared with it, in the keys it
  holds (a key a later evores added to the summary is no difference); equal, the run
  is reproduced and the file is left as it is; different, the recomputation goes to
  ``summary.recomputed.json`` and the differing keys are named (:attr:`Recomputed.differs`);
- a run killed before evores kept ``data_report.json`` has nothing that describes its data
  but its dataset cache, which this does not open: it gets no summary, only the rest.

The directory is locked while its files are written, so a live run refuses (one line) and
two reports never interleave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evores import config as configuration
from evores.core.atomic import write_json
from evores.core.errors import UNPARSABLE, CheckpointError
from evores.core.paths import usable_path
from evores.reporting import importance, plots
from evores.reporting import summary as report
from evores.store.checkpoint import CONFIG, EVALUATIONS, SUMMARY, RunDirectory
from evores.store.names import PLOTS, PROVISIONAL_SUMMARY, RECOMPUTED_SUMMARY
from evores.store.resume import check_config_unchanged, read_log, state_problems
from evores.store.rundir import DATA_REPORT, RunData


@dataclass(frozen=True)
class Recomputed:
    """What :func:`recompute` wrote: the summary file (None: the run's data is described
    nowhere, see :func:`_data`), whether the run had finished, the keys in which a finished
    run's ``summary.json`` differs from its recomputation (empty: it is reproduced), and the
    other files."""

    summary_file: str | None
    finished: bool
    differs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def recompute(path: str | Path) -> Recomputed:
    """Recompute the summary, the importance and the plots of the run directory ``path``.

    Raises CheckpointError or ConfigError (one line) for what is not a readable run
    directory, before anything is written."""
    run_dir = _run_directory(Path(path))
    config = configuration.load(run_dir.file(CONFIG))
    run_dir.lock()
    try:
        return _recompute(run_dir, config)
    finally:
        run_dir.unlock()


def _run_directory(path: Path) -> RunDirectory:
    path = usable_path(path, "run directory", CheckpointError)
    if not path.is_dir():
        problem = "is a file" if path.exists() else "does not exist"
        raise CheckpointError(
            f"{str(path)!r} {problem}; give the directory of a run (its out=, --out)"
        )
    run_dir = RunDirectory(path)
    for name in (CONFIG, EVALUATIONS):
        if not run_dir.file(name).is_file():
            raise CheckpointError(
                f"{str(path)!r} has no {name}, so it is not a run directory (or its run never "
                "evaluated anything); give the directory of a run (its out=, --out)"
            )
    return run_dir


def _recompute(run_dir: RunDirectory, config: dict[str, Any]) -> Recomputed:
    from evores.strategies.generational import LadderSearch
    from evores.strategies.steady import SteadyStateSearch

    checkpoint = run_dir.load_checkpoint(check=lambda state: state_problems(state, config))
    if checkpoint is not None:
        check_config_unchanged(checkpoint, config, quiet=True)
    records = read_log(run_dir)
    stored = _stored_summary(run_dir)
    finished = run_dir.file(SUMMARY).is_file()
    searches = SteadyStateSearch if config["search"]["asynchronous"] else LadderSearch
    search = searches(config, checkpoint["search"] if checkpoint else None)
    view = search.progress()
    data = _data(run_dir, stored)
    name, differs = None, []
    if data is not None:
        wall = stored["wall_seconds"] if finished else _run_time(checkpoint, records)
        summary = report.summary(config, view, search.winner(), records, data, wall, not finished)
        name, differs = _write_summary(run_dir, summary, stored if finished else None)
    plots.plot_run(run_dir.path, records, view.transitions)
    importance.write_importance(run_dir.path, config, records)
    files = [*PLOTS.values(), importance.IMPORTANCE, importance.IMPORTANCE_PLOT]
    return Recomputed(name, finished, differs, files)


def _write_summary(
    run_dir: RunDirectory, summary: dict[str, Any], finished: dict[str, Any] | None
) -> tuple[str, list[str]]:
    """Where the summary goes (see the module's docstring), and the keys in which a finished
    run's ``summary.json`` differs from it."""
    if finished is None:
        write_json(run_dir.file(PROVISIONAL_SUMMARY), summary)
        return PROVISIONAL_SUMMARY, []
    # A key the stored summary lacks was added by a later evores (the baseline, the warnings):
    # what that run wrote is what it reported, not a difference.
    differs = sorted(k for k in summary.keys() | finished.keys()
                     if k in finished and summary.get(k) != finished.get(k))  # fmt: skip
    if not differs:
        return SUMMARY, []
    write_json(run_dir.file(RECOMPUTED_SUMMARY), summary)
    return RECOMPUTED_SUMMARY, differs


def _stored_summary(run_dir: RunDirectory) -> dict[str, Any] | None:
    """The summary on disk (the final one, else the provisional one), or None."""
    for name in (SUMMARY, PROVISIONAL_SUMMARY):
        path = run_dir.file(name)
        if not path.is_file():
            continue
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except UNPARSABLE:
            stored = None
        if not isinstance(stored, dict):
            if name == SUMMARY:
                raise CheckpointError(
                    f"{path} is damaged (not a JSON object); move it aside to recompute the "
                    "summary into summary.provisional.json"
                )
            continue  # a provisional summary is only a fallback for the data report
        return stored
    return None


def _run_time(checkpoint: dict[str, Any] | None, records: list[dict[str, Any]]) -> float:
    """The latest run time on record: a killed run logged evaluations after its checkpoint."""
    times = [float(r["elapsed"]) for r in records if "elapsed" in r]
    return max([checkpoint["elapsed"] if checkpoint else 0.0, *times])


def _data(run_dir: RunDirectory, stored: dict[str, Any] | None) -> RunData | None:
    """The data the run was made on: ``data_report.json``, else what its summary says; None
    for a run killed before evores kept that file, which only its dataset cache could tell."""
    path = run_dir.file(DATA_REPORT)
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        return RunData(list(kept["classes"]), dict(kept["report"]))
    except FileNotFoundError:
        pass
    except (*UNPARSABLE, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path} is damaged ({type(error).__name__}); restore it to recompute the summary"
        ) from None
    if stored is not None and isinstance(stored.get("data"), dict):
        return RunData(list(stored["data"]["classes"]), dict(stored["data"]["report"]))
    return None
