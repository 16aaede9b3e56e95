"""TensorBoard scalars of a run (``report.tensorboard = true``), through PyTorch's own
``torch.utils.tensorboard.SummaryWriter``; they need the ``tensorboard`` package
(``pip install 'evores[tensorboard]'``).

The run directory's ``tensorboard/`` folder gets, per search evaluation (the step is the
evaluation's place in completion order, as in the plots): ``search/best_in_stage`` and
``search/median_in_stage`` (the plots' statistics, restarting at each stage),
``search/val_accuracy``, ``search/resolution``, ``evaluation/wall_seconds`` and
``evaluation/failures`` (the running count); per final candidate ``final/test_accuracy``.
A resumed run continues the steps where the log left them.

TensorBoard's HParams table gets a row per successful evaluation (genome, resolution and kind
-> ``hparam/val_accuracy``, or ``hparam/test_accuracy`` for a final retraining), each in its
own run ``hparams/<key>`` as the HParams plugin reads them.

The final retrainings, the winner's among them, get per-epoch curves: ``final/train_loss`` and
``final/epoch_seconds`` at each epoch, in the run ``final-<index>``, written by the rank that
trains the candidate through the training's ``on_epoch`` hook (:func:`epoch_curves`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from evores.core.errors import ConfigError
from evores.core.results import FAILED, KIND_FINAL, KIND_SEARCH, OK
from evores.core.stats import median
from evores.store.names import TENSORBOARD

FOLDER = TENSORBOARD


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "report.tensorboard = true needs the tensorboard package; "
            "pip install 'evores[tensorboard]' or set report.tensorboard = false"
        ) from None
    return SummaryWriter


class RunScalars:
    """Writes a run's scalars as its records are logged."""

    def __init__(self, directory: Path, earlier: Iterable[dict[str, Any]] = ()) -> None:
        summary_writer = _summary_writer()
        self.step = 0  # search evaluations so far
        self.finals = 0
        self.failures = 0
        self.stage: int | None = None
        self.scores: list[float] = []
        for record in earlier:  # already written by the process that logged them
            self._count(record)
        self.writer = summary_writer(log_dir=str(directory), flush_secs=10)

    def _count(self, record: dict[str, Any]) -> bool:
        """Update the running statistics; False for a record that writes nothing."""
        if record.get("status") not in (OK, FAILED):
            return False
        if record["kind"] != KIND_SEARCH:
            self.finals += 1
            return True
        self.step += 1
        if record["stage"] != self.stage:
            self.stage, self.scores = record["stage"], []
        if record["status"] == OK:
            self.scores.append(float(record["val_accuracy"]))
        self.failures += record["status"] == FAILED
        return True

    def add(self, record: dict[str, Any]) -> None:
        """The scalars of one logged record."""
        if not self._count(record):
            return
        write = self.writer.add_scalar
        if record["status"] == OK:
            self._add_hparams(record)
        if record["kind"] != KIND_SEARCH:
            if record["status"] == OK and record.get("test_accuracy") is not None:
                write("final/test_accuracy", float(record["test_accuracy"]), self.finals)
            return
        step = self.step
        write("evaluation/wall_seconds", float(record.get("wall_seconds") or 0.0), step)
        write("evaluation/failures", self.failures, step)
        write("search/resolution", int(record["resolution"]), step)
        if record["status"] == OK:
            write("search/val_accuracy", float(record["val_accuracy"]), step)
        if self.scores:
            write("search/best_in_stage", max(self.scores), step)
            write("search/median_in_stage", median(self.scores), step)

    def _add_hparams(self, record: dict[str, Any]) -> None:
        """The HParams table's row of a successful evaluation."""
        name = "val_accuracy" if record["kind"] == KIND_SEARCH else "test_accuracy"
        if record.get(name) is None:
            return
        row = {gene: _hparam_value(value) for gene, value in record["hparams"].items()}
        row.update(resolution=int(record["resolution"]), kind=record["kind"])
        key = "-".join(str(part) for part in record["key"])
        self.writer.add_hparams(
            row, {f"hparam/{name}": float(record[name])}, run_name=f"hparams/{key}"
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _hparam_value(value: Any) -> bool | int | float | str:
    """What the HParams table holds: numbers, booleans and text (anything else as text)."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def open_scalars(
    config: dict[str, Any], run_dir: Path, earlier: Iterable[dict[str, Any]] = ()
) -> RunScalars | None:
    """The run's scalar writer when ``report.tensorboard`` is on, else None."""
    if not config.get("report", {}).get("tensorboard"):
        return None
    return RunScalars(Path(run_dir) / FOLDER, earlier)


EpochCurves = Callable[[dict[str, Any]], Any]  # a task -> a context giving its on_epoch hook


def epoch_curves(config: dict[str, Any], run_dir: str | Path | None) -> EpochCurves | None:
    """With ``report.tensorboard`` on: for each task, a context manager that gives the
    ``on_epoch`` hook of a final retraining (None for a search evaluation), writing its curves
    and closing them when the training ends. None when TensorBoard is off."""
    if run_dir is None or not config.get("report", {}).get("tensorboard"):
        return None
    folder = Path(run_dir) / FOLDER

    def for_task(task: dict[str, Any]):
        if task["kind"] != KIND_FINAL:
            return nullcontext(None)
        return _final_curves(folder / f"final-{task['key'][2]}")

    return for_task


@contextmanager
def _final_curves(directory: Path) -> Iterator[Callable[[Any], None]]:
    """The hook of one final retraining; a retraining run again (after a stop) starts its
    curves afresh."""
    shutil.rmtree(directory, ignore_errors=True)
    writer = _summary_writer()(log_dir=str(directory), flush_secs=10)

    def on_epoch(report) -> None:
        writer.add_scalar("final/train_loss", float(report.train_loss), report.epoch)
        writer.add_scalar("final/epoch_seconds", float(report.seconds), report.epoch)

    try:
        yield on_epoch
    finally:
        writer.close()
