"""What a finished run amounts to: a winner, or why there is none and what to check.

A run ends without a result when every evaluation of a stage failed (the search stops there:
the next stage would breed from genomes that all scored the penalty) or when every final
retraining failed. It still ends cleanly: the summary's ``outcome`` says which, with the
failures by type and the first reason, the last line says what to check, and the exit code
is :data:`EXIT_NO_RESULT`, apart from a usage error (2) and a checkpointed stop (75).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evores.core.exits import EXIT_NO_RESULT
from evores.core.results import (
    FAILED,
    FAILURE_BUDGET,
    FAILURE_EXCEPTION,
    FAILURE_NAN,
    FAILURE_OOM,
    KIND_FINAL,
    KIND_SEARCH,
    OK,
)

if TYPE_CHECKING:
    from evores.strategies.ladder import Progress

log = logging.getLogger("evores")


# What to check when the failures of a stage are mostly of one type.
_CHECK = {
    FAILURE_EXCEPTION: "the reasons in evaluations.jsonl and the tracebacks logged above; "
    "with fitness.function set, that function",
    FAILURE_NAN: "the learning rate: lower the upper bound of space.learning_rate "
    "(or of space.l1 / space.l2)",
    FAILURE_OOM: "the model size: lower space.batch_size, space.conv_filters or "
    "space.fc_units, or train on a device with more memory",
    FAILURE_BUDGET: "the time budget: raise train.max_seconds (0 = no budget) or lower "
    "train.max_epochs",
}
_CHECK_OTHER = "the reasons in evaluations.jsonl"
# With fitness.function set, a NaN is what the function returned, not a diverged training.
_CHECK_USER_NAN = "fitness.function: it returned NaN or infinity, which is no accuracy"


def of_run(
    progress: Progress,
    winner: dict[str, Any] | None,
    failed: list[dict[str, Any]],
    user_function: bool = False,
) -> dict[str, Any]:
    """The summary's ``outcome``: ``status`` ok or failed; for a failed run the 1-based
    ``stage`` and its ``resolution`` that found nothing (None when the final retraining did),
    the ``reason`` (failures by type, the first one's cause) and what to ``check``.

    ``failed`` are the log's failed records (the last of each key); ``user_function``: the
    run evaluated with ``fitness.function``."""
    if winner is not None or not progress.done:
        return {"status": OK, "stage": None, "resolution": None, "reason": None, "check": None}
    barren = [i for i, stage in enumerate(progress.stages) if stage["best_val_accuracy"] is None]
    if barren:
        stage = barren[0]
        resolution = progress.resolutions[stage]
        failures = [r for r in failed if r["kind"] == KIND_SEARCH and r["key"][0] == stage]
        what = f"every evaluation of stage {stage + 1} ({resolution} px) failed"
        number, at = stage + 1, resolution
    else:
        failures = [r for r in failed if r["kind"] == KIND_FINAL]
        what = "every final retraining failed"
        number = at = None
    types = Counter(r.get("failure") or "unknown" for r in failures)
    counted = ", ".join(f"{kind} {n}" for kind, n in types.most_common())
    first = failures[0].get("reason") if failures else None
    reason = f"{what} ({counted})" + (f"; the first: {first}" if first else "")
    main = types.most_common(1)[0][0] if types else None
    check = _CHECK.get(main, _CHECK_OTHER)
    if user_function and main == FAILURE_NAN:
        check = _CHECK_USER_NAN
    return {"status": FAILED, "stage": number, "resolution": at, "reason": reason, "check": check}


def baseline(report: Any, classes: list[str]) -> dict[str, Any] | None:
    """The majority-class baseline of the validation and test splits: the accuracy of always
    answering the split's most frequent class (no constant answer scores more), from the class
    counts the dataset cache's ``report`` keeps; None where it keeps none (an earlier evores)."""
    counts = report.get("class_counts") if isinstance(report, Mapping) else None
    if not isinstance(counts, Mapping):
        return None
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        split_counts = counts.get(split)
        if not isinstance(split_counts, list) or not split_counts or sum(split_counts) <= 0:
            return None
        most = max(range(len(split_counts)), key=split_counts.__getitem__)
        out[f"{split}_accuracy"] = split_counts[most] / sum(split_counts)
        out[f"{split}_class"] = classes[most] if most < len(classes) else most
    return out


def warnings_of(winner: dict[str, Any] | None, floor: dict[str, Any] | None) -> list[str]:
    """The summary's warnings: a winner that does not beat the majority-class baseline, on
    the validation split it was chosen by or on the test split."""
    if winner is None or floor is None:
        return []
    found = []
    for split, name in (("val", "validation"), ("test", "test")):
        score = winner.get(f"{split}_accuracy")
        if score is not None and score <= floor[f"{split}_accuracy"]:
            found.append(
                f"the winner's {name} accuracy {score:.3f} does not beat the majority-class "
                f"baseline {floor[f'{split}_accuracy']:.3f} (always answering "
                f"{floor[f'{split}_class']!r}): the search found nothing better than a constant "
                "answer; check the labels and the class balance, or search longer (more "
                "evaluations, train.max_epochs)"
            )
    return found


def conclude(summary: dict[str, Any], run_path: Path) -> int:
    """Say how the run ended, on the last line of its output (after any warning of the
    summary's); the process's exit code."""
    outcome = summary.get("outcome") or {"status": OK}
    for warning in summary.get("warnings") or []:
        log.warning("warning: %s", warning)
    if outcome["status"] == OK:
        log.info(
            "winner: test accuracy %s at %d px; summary in %s",
            summary["test_accuracy"], summary["test_resolution"], run_path,
        )  # fmt: skip
        return 0
    print(
        f"evores: no result: {outcome['reason']}. Check {outcome['check']}. Summary in {run_path}",
        file=sys.stderr,
    )
    return EXIT_NO_RESULT
