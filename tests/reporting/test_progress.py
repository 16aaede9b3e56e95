"""Tests for evores.reporting.progress: the progress lines, the measured-cost ETA, the failure
count."""

from __future__ import annotations

import pytest

from evores.reporting.progress import (
    RunCosts,
    evaluation_line,
    generation_line,
    transition_line,
)
from evores.strategies.ladder import FINAL, SEARCH, Progress


def view(**fields) -> Progress:
    defaults = dict(
        phase=SEARCH, stage=0, resolutions=(16, 32), budgets=(10, 10), n_evaluations=0,
        stage_used=0, stage_started=0.0, stage_scores=(), stages=(), transitions=(), final=(),
    )  # fmt: skip
    return Progress(**{**defaults, **fields})


def record(resolution: int, seconds: float, status: str = "ok", kind: str = "search") -> dict:
    return {"resolution": resolution, "wall_seconds": seconds, "status": status, "kind": kind}


def test_no_estimate_before_anything_is_measured():
    assert RunCosts(2).remaining_seconds(view(), elapsed=30.0) is None
    interrupted = RunCosts(2, [record(16, 5.0, status="interrupted")])
    assert interrupted.remaining_seconds(view(), elapsed=30.0) is None


def test_later_stages_scale_by_pixel_count_until_they_are_measured():
    # 5 evaluations of 2 s in 10 s of run time (one worker, always busy).
    costs = RunCosts(2, [record(16, 2.0)] * 5)
    halfway = view(n_evaluations=5, stage_used=5)
    # 5 more at 2 s, 10 at 32 px (4 x the pixels: 8 s), 2 final retrainings at 32 px.
    assert costs.remaining_seconds(halfway, elapsed=10.0) == pytest.approx(5 * 2 + 10 * 8 + 2 * 8)


def test_measured_costs_replace_the_extrapolation_and_the_parallelism_is_measured():
    costs = RunCosts(1, [record(16, 2.0)] * 10 + [record(32, 3.0)] * 2)
    # 26 s of evaluations in 13 s: two workers busy.
    second = view(stage=1, n_evaluations=12, stage_used=2)
    assert costs.remaining_seconds(second, elapsed=13.0) == pytest.approx((8 * 3 + 1 * 3) / 2)


def test_a_third_resolution_extrapolates_with_the_measured_exponent():
    # 16 -> 32 px doubled the cost (exponent 1, not the pixel count's 2): 64 px costs 4 s.
    costs = RunCosts(0, [record(16, 1.0), record(32, 2.0)])
    assert costs.per_evaluation(64) == pytest.approx(4.0)
    assert RunCosts(0, [record(16, 1.0)]).per_evaluation(64) == pytest.approx(16.0)


def test_the_failure_count_is_the_runs_not_the_generations():
    costs = RunCosts(0)
    for status in ("failed", "ok", "failed", "interrupted"):
        costs.add(record(16, 1.0, status))
    costs.add(record(32, 1.0, "failed", kind="final"))  # a final retraining is not a search one
    assert costs.failed == 2


def test_a_generation_line_counts_the_results_not_yet_told():
    progress = view(n_evaluations=2, stage_used=2, stage_scores=(0.2, 0.8), stage_started=0.0)
    results = [{"status": "ok", "val_accuracy": 0.4}, {"status": "failed", "val_accuracy": 0.0}]
    costs = RunCosts(0, [record(16, 10.0, "failed"), record(16, 10.0)] * 2)
    line = generation_line(progress, [{}, {}], results, elapsed=40.0, costs=costs)
    # 6 left here at 10 s, 10 at 40 s, in 40 s of run time with 40 s of evaluations; the
    # range's low end takes 32 px at twice (not four times) the cost: 10 at 20 s.
    assert line == (
        "stage 1/2  16 px  evals 4/20  best 0.800  median 0.400  elapsed 40s  "
        "eta 7m40s [4m20s-7m40s]  (2 failed)"
    )
    final = generation_line(view(phase=FINAL, stage=1), [], [], elapsed=1.0, costs=costs)
    assert final == "final retraining at 32 px: test accuracies []"


def test_the_transition_line_gives_rho_its_interval_and_the_pairs_used():
    transition = {"from_resolution": 16, "to_resolution": 32, "low": [], "spearman": 0.71,
                  "interval": [0.38, 0.9], "n": 11, "n_failed": 0}  # fmt: skip
    assert transition_line(transition) == "16→32 px: ρ 0.71 [0.38, 0.90], n 11"
    few = {**transition, "spearman": None, "interval": None, "n": 1, "n_failed": 2}
    assert transition_line(few) == "16→32 px: ρ n/a, n 1 (2 failed, left out)"


def test_the_eta_range_is_the_measured_spread_once_every_resolution_is_measured():
    # 16 px: 1 s and 3 s (mean 2, standard error 1); 32 px: 4 s and 4 s (no spread).
    costs = RunCosts(0, [record(16, 1.0), record(16, 3.0), record(32, 4.0), record(32, 4.0)])
    first = view(n_evaluations=2, stage_used=2)
    # 8 left at 16 px (2 +- 2 s each) and 10 at 32 px (4 s), one worker busy (12 s in 12 s).
    assert costs.remaining_seconds(first, elapsed=12.0) == pytest.approx(8 * 2 + 10 * 4)
    assert costs.remaining_seconds(first, 12.0, bound=-1) == pytest.approx(8 * 0 + 10 * 4)
    assert costs.remaining_seconds(first, 12.0, bound=1) == pytest.approx(8 * 4 + 10 * 4)
    assert costs.eta(first, elapsed=12.0) == "56s [40s-1m12s]"
    one_stage = view(resolutions=(16,), budgets=(10,))
    assert RunCosts(0, [record(16, 2.0)] * 2).eta(one_stage, elapsed=4.0) == "20s"
    assert RunCosts(0).eta(first, elapsed=12.0) == "?"


def test_an_evaluation_line_names_its_key_resolution_score_and_time():
    done = {"key": [1, 0, 3], "kind": "search", "resolution": 32, "status": "ok",
            "val_accuracy": 0.8125, "wall_seconds": 72.4, "hparams": {"lr": 0.1}}  # fmt: skip
    assert evaluation_line(done) == "evaluation [1, 0, 3] at 32 px: val 0.812 in 1m12s"
    final = {**done, "key": ["final", 0, 1], "kind": "final", "val_accuracy": None,
             "test_accuracy": 0.75}  # fmt: skip
    assert (
        evaluation_line(final) == "final retraining ['final', 0, 1] at 32 px: test 0.750 in 1m12s"
    )


def test_a_failed_evaluations_line_names_its_key_failure_reason_and_genome():
    failed = {"key": [0, 2, 5], "kind": "search", "resolution": 16, "status": "failed",
              "failure": "nan", "reason": "the loss became NaN at epoch 2",
              "val_accuracy": 0.0, "wall_seconds": 3.0,
              "hparams": {"lr": 0.5, "filters": 8}}  # fmt: skip
    assert evaluation_line(failed) == (
        "evaluation [0, 2, 5] at 16 px: failed (nan) in 3s: the loss became NaN at epoch 2; "
        'genome {"filters": 8, "lr": 0.5}'
    )


def test_a_pruned_evaluations_line_says_when_and_why_and_it_costs_its_time():
    pruned = {"key": [0, 1, 2], "kind": "search", "resolution": 16, "status": "pruned",
              "epochs": 3, "val_accuracy": 0.4123, "wall_seconds": 5.0, "failure": None,
              "reason": "below the median at epoch 3", "hparams": {"lr": 0.1}}  # fmt: skip
    assert evaluation_line(pruned) == (
        "evaluation [0, 1, 2] at 16 px: pruned after 3 epochs (best val 0.412) in 5s: "
        "below the median at epoch 3"
    )
    costs = RunCosts(0, [pruned])
    assert costs.per_evaluation(16) == 5.0 and costs.failed == 0
