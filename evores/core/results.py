"""What an evaluation is asked and what it answers: tasks, fitness results and log records.

One home for the plain data that crosses processes and reaches disk, so that a field is
defined once and ``grep`` finds its definition and every use. This module imports neither
torch nor MPI: the driver, the search and the report read it without paying for either.

- A **task** (:class:`Task`, built by :func:`make_task`) is what the search asks an evaluator
  to run.
- A **result** (:class:`FitnessResult`, or its :meth:`FitnessResult.to_dict` plus the
  ``rank`` that ran it) is what comes back; :meth:`FitnessResult.failed` builds a failed one.
- A **record** (:class:`LogRecord`, built by :func:`make_record`) is one line of the run's
  ``evaluations.jsonl``: the task's fields, the run's clock, then the result's fields.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
import typing
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

# An evaluation's status.
OK = "ok"
FAILED = "failed"
PRUNED = "pruned"  # a per-epoch hook stopped the training (evores.training.pruning)
INTERRUPTED = "interrupted"  # a stop abandoned it; --resume runs it again (logged only)

# What an evaluation trained in (a result's ``precision``); a config may also ask for "auto".
PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)  # train.precision; auto: evores.training.device decides

# What kind of failure a failed evaluation had.
FAILURE_NAN = "nan"  # the loss or the network's outputs became NaN or infinite
FAILURE_OOM = "oom"  # out of memory, also after the retry at half the batch size
FAILURE_BUDGET = "budget"  # train.max_seconds ran out
FAILURE_EXCEPTION = "exception"  # the training or the user's fitness function raised
# Not a genome's failure: the machine's (evores.core.errors.is_machine_fault). Never logged:
# the run stops with a checkpoint, and a resume runs the evaluation again.
FAILURE_MACHINE = "machine"

# What a task asks for: an evaluation of a search stage, or the final retraining.
KIND_SEARCH = "search"
KIND_FINAL = "final"

MAX_REASON_CHARS = 500


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (newlines would break a log line), at most
    :data:`MAX_REASON_CHARS` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


@dataclass(frozen=True)
class FitnessResult:
    """Outcome of one evaluation; plain data that crosses processes and reaches disk.

    ``peak_memory_bytes`` is CUDA's max allocated bytes during the evaluation on a GPU; on the
    CPU it is the peak resident set size of the whole process so far (``ru_maxrss``), an upper
    bound that never decreases, not the evaluation's own footprint.
    ``seconds_per_epoch`` includes the per-epoch validation pass; ``images_per_second``
    counts training images over training-step time only. ``precision`` is what the training
    ran in, ``"fp32"`` or ``"bf16"`` (records written before it existed read as fp32: evores
    trained only in fp32 then).
    """

    val_accuracy: float
    status: str
    reason: str | None
    failure: str | None
    epochs: int
    best_epoch: int
    wall_seconds: float
    seconds_per_epoch: float
    n_parameters: int
    peak_memory_bytes: int
    images_per_second: float
    repairs: tuple[str, ...] = ()
    test_accuracy: float | None = None
    precision: str = "fp32"

    @classmethod
    def succeeded(cls, val_accuracy: float, **measured: Any) -> FitnessResult:
        """A successful evaluation. ``measured`` holds the other fields it measured (epochs,
        wall_seconds, repairs, test_accuracy, ...); what it omits is zero, empty or None."""
        fields = _with_defaults(measured)
        return cls(val_accuracy=val_accuracy, status=OK, reason=None, failure=None, **fields)

    @classmethod
    def failed(cls, reason: str, failure: str, **measured: Any) -> FitnessResult:
        """A failed evaluation: accuracy 0.0 (the penalty), ``failure`` one of the
        ``FAILURE_*`` types, ``reason`` the one-line cause. ``measured`` holds what the attempt
        measured before it failed (epochs, wall_seconds, repairs, ...); what it omits is zero,
        empty or None."""
        fields = _with_defaults(measured)
        return cls(val_accuracy=0.0, status=FAILED, reason=reason, failure=failure, **fields)

    @classmethod
    def pruned(cls, val_accuracy: float, reason: str, **measured: Any) -> FitnessResult:
        """A training that a per-epoch hook stopped: ``val_accuracy`` is the best so far (0.0
        in a final retraining), ``reason`` says when and why. Not a failure, and not a
        completed evaluation either: a search ranks only "ok" results."""
        fields = _with_defaults(measured)
        return cls(val_accuracy=val_accuracy, status=PRUNED, reason=reason, failure=None, **fields)

    def measured(self) -> dict[str, Any]:
        """What the evaluation measured (epochs, times, size, memory, repairs), in the form
        :meth:`failed` and :meth:`succeeded` take it: to fail a result and keep its figures."""
        return {name: getattr(self, name) for name in (*_NOTHING_MEASURED, "repairs")}

    @property
    def objective(self) -> float:
        """What an optimiser maximises: ``val_accuracy``, or NaN for a failed evaluation, which
        Optuna records as a failed trial (not as a score of 0) and then goes on."""
        return self.val_accuracy if self.status == OK else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe builtins only (tuples become lists)."""
        # Field by field rather than dataclasses.asdict, whose deep copy was a tenth of the
        # driver's time per evaluation with a no-op fitness function.
        d = {name: getattr(self, name) for name in RESULT_FIELDS}
        d["repairs"] = list(self.repairs)  # strings
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitnessResult:
        """Inverse of :meth:`to_dict`; extra keys (e.g. a record's ``rank``) are ignored."""
        missing = [name for name in _REQUIRED_FIELDS if name not in d]
        if missing:
            raise ValueError(f"fitness result dict lacks {missing}; pass FitnessResult.to_dict()")
        kwargs = {name: d[name] for name in RESULT_FIELDS if name in d}
        kwargs["repairs"] = tuple(kwargs.get("repairs", ()))
        return cls(**kwargs)


# What an evaluation measures, as it reads when nothing was measured.
_NOTHING_MEASURED: dict[str, Any] = {
    "epochs": 0,
    "best_epoch": 0,
    "wall_seconds": 0.0,
    "seconds_per_epoch": 0.0,
    "n_parameters": 0,
    "peak_memory_bytes": 0,
    "images_per_second": 0.0,
}


def _with_defaults(measured: dict[str, Any]) -> dict[str, Any]:
    """The measured fields of a result, zero where ``measured`` omits one."""
    fields = {**_NOTHING_MEASURED, **measured}
    fields["repairs"] = tuple(fields.get("repairs", ()))
    return fields


RESULT_FIELDS = tuple(field.name for field in dataclasses.fields(FitnessResult))
_REQUIRED_FIELDS = tuple(
    field.name
    for field in dataclasses.fields(FitnessResult)
    if field.default is dataclasses.MISSING
)


def failed_result(reason: str, failure: str, **measured: Any) -> dict[str, Any]:
    """:meth:`FitnessResult.failed` as the plain dict that travels and is logged."""
    return FitnessResult.failed(reason, failure, **measured).to_dict()


class Task(TypedDict):
    """One evaluation the search asks for (plain data: it travels over MPI as it is)."""

    key: list[int]  # [stage, generation, index]; asynchronous: [stage, birth, 0]
    kind: str  # KIND_SEARCH or KIND_FINAL
    hparams: dict[str, Any]  # the canonical genome (evores.strategies.space)
    resolution: int
    seed: int
    epochs: int | None  # the final retraining's epochs; None for a search evaluation
    elite_of: NotRequired[list]  # a carried elite: [its stage, its fitness there]
    probe_of: NotRequired[list]  # a member of the fidelity probe: [its stage, its fitness there]
    val_accuracy: NotRequired[float]  # a final candidate's validation accuracy


def make_task(
    key: list[int],
    kind: str,
    hparams: dict[str, Any],
    resolution: int,
    seed: int,
    epochs: int | None = None,
    **extra: Any,
) -> Task:
    """A task; ``extra`` holds the optional fields (``elite_of``, ``probe_of``,
    ``val_accuracy``)."""
    task: Task = {
        "key": list(key),
        "kind": kind,
        "hparams": hparams,
        "resolution": resolution,
        "seed": seed,
        "epochs": epochs,
    }
    task.update(extra)  # type: ignore[typeddict-item]
    return task


class LogRecord(TypedDict, total=False):
    """One line of ``evaluations.jsonl``: a task's fields, ``elapsed``, a result's fields."""

    key: list[int]
    kind: str
    stage: int | None  # None for the final retraining
    generation: int  # asynchronous mode: the birth number
    index: int
    hparams: dict[str, Any]
    resolution: int
    seed: int
    elapsed: float  # the run's clock when the result was logged
    logged_at: float  # the Unix time (seconds since 1970, UTC) when the result was logged
    elite_of: list
    probe_of: list
    status: str  # OK, FAILED, PRUNED or INTERRUPTED
    reason: str | None
    failure: str | None
    rank: int
    val_accuracy: float | None  # None for the final retraining
    test_accuracy: float | None
    epochs: int
    best_epoch: int
    wall_seconds: float
    seconds_per_epoch: float
    n_parameters: int
    peak_memory_bytes: int
    images_per_second: float
    repairs: list[str]
    precision: str  # "fp32" or "bf16"


def make_record(task: Task, result: dict[str, Any], elapsed: float) -> LogRecord:
    """The log record of ``task`` with ``result`` (a result dict, or just a status and reason
    for an interrupted evaluation); ``elapsed`` is the run's clock, ``logged_at`` the time of
    day (what a timeline of the run, such as its Optuna export, is drawn from)."""
    stage, generation, index = task["key"]
    record: LogRecord = {
        "key": task["key"],
        "kind": task["kind"],
        "stage": stage,
        "generation": generation,
        "index": index,
        "hparams": task["hparams"],
        "resolution": task["resolution"],
        "seed": task["seed"],
        "elapsed": round(elapsed, 3),
        "logged_at": round(time.time(), 3),
    }
    for field in ("elite_of", "probe_of"):
        if field in task:
            record[field] = task[field]  # type: ignore[literal-required]
    record.update(result)  # type: ignore[typeddict-item]
    if task["kind"] == KIND_FINAL:
        # The final retraining belongs to no search stage and has no validation split: its
        # key's first number (one past the last stage) only keeps keys unique. Records written
        # before this carry stage = that number and val_accuracy = 0.0; readers accept both.
        record["stage"] = None
        record["val_accuracy"] = None
    return record


# What a record read back from the log must hold: the task's fields (an interrupted record has
# nothing else), and a score when the evaluation completed.
_RECORD_REQUIRED = ("key", "kind", "hparams", "resolution", "seed", "status")
_RECORD_VALUES = {"kind": (KIND_SEARCH, KIND_FINAL), "status": (OK, FAILED, PRUNED, INTERRUPTED)}


def record_problems(record: Any) -> list[str]:
    """What makes ``record``, read back from ``evaluations.jsonl``, unusable: each present
    field of :class:`LogRecord` must have its declared type (numbers finite), the task's
    fields must be there, ``key`` must be three non-negative ints. Empty when it is usable.
    Unknown fields are allowed: a later evores may log more."""
    if not isinstance(record, dict):
        return [f"a record must be a JSON object, got {type(record).__name__}"]
    required = _RECORD_REQUIRED
    if record.get("status") in (OK, FAILED, PRUNED):
        required += ("val_accuracy",)
    problems = [f"{name} is missing" for name in required if name not in record]
    hints = typing.get_type_hints(LogRecord)
    for name, value in record.items():
        if name in hints and not _has_type(value, hints[name]):
            problems.append(f"{name} = {value!r} is not {_type_name(hints[name])}")
    for name, allowed in _RECORD_VALUES.items():
        if name in record and record[name] not in allowed:
            problems.append(f"{name} = {record[name]!r} is none of {list(allowed)}")
    key = record.get("key")
    positions = isinstance(key, list) and len(key) == 3
    if isinstance(key, list) and not (positions and all(_has_type(k, int) and k >= 0 for k in key)):
        problems.append(f"key = {key!r} is not [stage, generation, index]")
    return problems + _score_problems(record) + _genome_problems(record.get("hparams"))


def _score_problems(record: dict[str, Any]) -> list[str]:
    """A scored record must carry its score: what every reader ranks and plots by."""
    wanted = []
    if record.get("kind") == KIND_SEARCH and record.get("status") in (OK, FAILED, PRUNED):
        wanted.append("val_accuracy")
    if record.get("kind") == KIND_FINAL and record.get("status") == OK:
        wanted.append("test_accuracy")
    return [
        f"{name} = {record.get(name)!r} is not an accuracy in [0, 1]"
        for name in wanted
        if not (_has_type(record.get(name), float) and 0.0 <= record[name] <= 1.0)
    ]


def _genome_problems(hparams: Any) -> list[str]:
    """A genome's values are numbers, or lists of numbers (one per layer)."""
    if not isinstance(hparams, dict):
        return []  # its type is checked with the other fields
    wrong = [
        name
        for name, value in hparams.items()
        if not all(_has_type(v, float) for v in (value if isinstance(value, list) else [value]))
    ]
    return [f"hparams.{name} = {hparams[name]!r} is not a number or numbers" for name in wrong]


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` (parsed JSON) is of the annotated type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin in (list, dict):
        if not isinstance(value, origin):
            return False
        if origin is list and args:
            return all(_has_type(v, args[0]) for v in value)
        return True
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    name = getattr(hint, "__name__", None)
    return f"a {name}" if name and not typing.get_args(hint) else f"of type {hint}"
