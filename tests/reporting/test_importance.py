"""evores.reporting.importance: fANOVA importance of the genes per stage, from a run's log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("optuna", reason="optuna is a dependency")
pytest.importorskip("sklearn", reason="scikit-learn is a dependency (Optuna's fANOVA)")

import evores  # noqa: E402
from evores import config as configuration  # noqa: E402
from evores.reporting import importance  # noqa: E402
from evores.reporting.importance import (  # noqa: E402
    GENES,
    IMPORTANCE,
    IMPORTANCE_PLOT,
    MIN_EVALUATIONS,
    N_TREES,
    features,
    run_importance,
    stage_importance,
    stage_study,
    write_importance,
)
from evores.strategies.space import SearchSpace  # noqa: E402

CONFIG = configuration.load(None, ["schedule.resolutions=[8, 16]", "schedule.evaluations=[40, 12]"])
SPACE = SearchSpace.from_dict(CONFIG["space"])


def planted(hparams) -> float:
    """Only the learning rate matters (tests/fitness_plugins.py's accuracy_from_learning_rate)."""
    return max(0.05, 0.9 - 0.2 * abs(math.log10(hparams["learning_rate"]) + 2.0))


def records(n: int, stage: int = 0, seed: int = 0, fitness=planted) -> list[dict]:
    """Search records of random genomes, shaped like evaluations.jsonl lines."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hparams = SPACE.sample(rng)
        out.append({"key": [stage, i // 8, i % 8], "kind": "search", "stage": stage,
                    "resolution": 8, "hparams": hparams, "status": "ok",
                    "val_accuracy": fitness(hparams)})  # fmt: skip
    return out


def failed(record: dict) -> dict:
    return {**record, "status": "failed", "failure": "exception", "val_accuracy": 0.0}


def test_a_planted_learning_rate_is_the_most_important_gene():
    data = run_importance(CONFIG, records(40))
    (stage,) = data["stages"]
    ranked = sorted(stage["importance"], key=stage["importance"].get, reverse=True)
    assert ranked[0] == "learning_rate"
    assert stage["importance"]["learning_rate"] > 0.5
    assert set(stage["importance"]) == set(GENES)
    assert sum(stage["importance"].values()) == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < stage["explained"] <= 1.0 and stage["reason"] is None


def test_a_gene_that_drives_the_accuracy_instead_is_found_instead():
    def by_depth(hparams):
        return 0.2 + 0.1 * len(hparams["conv_filters"])

    stage = run_importance(CONFIG, records(40, fitness=by_depth))["stages"][0]
    assert max(stage["importance"], key=stage["importance"].get) == "conv_layers"


def test_stages_with_too_few_successes_or_no_spread_are_skipped_with_a_reason():
    few = records(MIN_EVALUATIONS - 1, stage=0) + [failed(r) for r in records(5, 0, seed=9)]
    for i, record in enumerate(few[MIN_EVALUATIONS - 1 :]):
        record["key"] = [0, 99, i]  # the failures are other evaluations of stage 0
    flat = records(MIN_EVALUATIONS + 2, stage=1, fitness=lambda h: 0.5)
    data = run_importance(CONFIG, few + flat)
    first, second = data["stages"]
    assert first["importance"] is None and first["explained"] is None
    assert first["reason"] == (
        f"{MIN_EVALUATIONS - 1} successful evaluation(s); importance needs at least "
        f"{MIN_EVALUATIONS}"
    )
    assert (first["n_evaluations"], first["n_failed"]) == (MIN_EVALUATIONS + 4, 5)
    assert second["importance"] is None
    assert second["reason"] == f"all {MIN_EVALUATIONS + 2} successful evaluations scored 0.5"
    assert (first["resolution"], second["resolution"]) == (8, 16)


def test_failed_evaluations_are_excluded_not_scored_zero():
    ok = records(30)
    # Failures that a 0.0 score would tie to the batch size: all of them at the smallest.
    rng = np.random.default_rng(5)
    failures = []
    for i in range(15):
        hparams = {**SPACE.sample(rng), "batch_size": 16}
        failures.append(failed({**ok[0], "key": [0, 50, i], "hparams": hparams}))
    with_failures = run_importance(CONFIG, ok + failures)["stages"][0]
    without = run_importance(CONFIG, ok)["stages"][0]
    assert with_failures["importance"] == without["importance"]
    assert (with_failures["n_evaluations"], with_failures["n_failed"]) == (45, 15)
    assert with_failures["n_used"] == without["n_used"] == 30
    # Scored as 0.0, the failures would have made the batch size matter.
    scored = [{**f, "status": "ok"} for f in failures]
    penalised = run_importance(CONFIG, ok + scored)["stages"][0]["importance"]
    assert penalised["batch_size"] > 5 * without["importance"]["batch_size"]


def test_genomes_a_hand_edited_log_made_unreadable_are_left_out_not_fatal():
    ok = records(12)
    # A genome missing genes, one without fully connected layers, a penalty that is text, and
    # a stage the schedule does not have.
    broken = [{**ok[0], "key": [0, 60, 0], "hparams": {"learning_rate": 0.01}},
              {**ok[1], "key": [0, 60, 1], "hparams": {**ok[1]["hparams"], "fc_units": []}},
              {**ok[2], "key": [0, 60, 2], "hparams": {**ok[2]["hparams"], "l2": "none"}},
              {**ok[3], "key": [7, 0, 0]}]  # fmt: skip
    data = run_importance(CONFIG, ok + broken)
    (stage,) = data["stages"]
    assert (stage["n_evaluations"], stage["n_used"]) == (15, 12)
    assert stage["importance"] == run_importance(CONFIG, ok)["stages"][0]["importance"]


def test_interrupted_records_and_repeats_count_once_as_their_last_record():
    ok = records(20)
    interrupted = {**ok[3], "status": "interrupted", "val_accuracy": 0.0}
    log = [interrupted, *ok, ok[5]]  # interrupted, re-run; one logged twice around a crash
    assert run_importance(CONFIG, log) == run_importance(CONFIG, ok)


def test_importance_is_reproducible_whatever_the_completion_order():
    log = records(30) + records(20, stage=1, seed=1)
    first = run_importance(CONFIG, log)
    shuffled = [log[i] for i in np.random.default_rng(3).permutation(len(log))]
    assert run_importance(CONFIG, shuffled) == first
    assert json.dumps(run_importance(CONFIG, log)) == json.dumps(first)
    # The forest is seeded from the run seed: another seed, another forest.
    other = run_importance({**CONFIG, "seed": 1}, log)
    assert other["stages"][0]["importance"] != first["stages"][0]["importance"]


def test_features_of_a_variable_length_genome():
    genome = {"learning_rate": 0.01, "conv_filters": [8, 32], "conv_kernels": [3, 7],
              "fc_units": [64], "batch_size": 128, "l1": 0.0, "l2": 1e-4}  # fmt: skip
    values = features(genome, SPACE)
    assert list(values) == list(GENES)
    assert values == pytest.approx({
        "learning_rate": -2.0, "conv_layers": 2.0, "conv_filters": 4.0, "conv_kernels": 5.0,
        "fc_layers": 1.0, "fc_units": 6.0, "batch_size": 7.0,
        "l1": math.log10(SPACE.l1.low) - 1.0, "l2": -4.0,
    })  # fmt: skip


def test_write_importance_writes_the_file_and_the_heat_map(tmp_path):
    data = write_importance(tmp_path, CONFIG, records(30) + records(4, stage=1))
    assert json.loads((tmp_path / IMPORTANCE).read_text()) == data
    assert (tmp_path / IMPORTANCE_PLOT).read_bytes().startswith(b"\x89PNG")
    write_importance(tmp_path, CONFIG, records(3))  # no stage has importance: still a plot
    assert (tmp_path / IMPORTANCE_PLOT).read_bytes().startswith(b"\x89PNG")


def test_a_run_writes_its_importance_and_ranks_the_planted_gene_first(
    tmp_path, cache_dir, monkeypatch
):
    monkeypatch.setenv("EVORES_CACHE_DIR", str(cache_dir))
    run_dir = tmp_path / "run"
    evores.search(
        out=run_dir,
        schedule={"resolutions": [8, 16], "evaluations": [30, 6], "elites": 2},
        search={"population": 10, "elitism": 1, "strategy": "random"},
        train={"threads": 1},
        fitness={"function": "fitness_plugins:accuracy_from_learning_rate"},
    )
    data = json.loads((run_dir / IMPORTANCE).read_text())
    first, second = data["stages"]
    assert max(first["importance"], key=first["importance"].get) == "learning_rate"
    assert second["importance"] is None and "6 successful" in second["reason"]
    assert (run_dir / IMPORTANCE_PLOT).is_file()


def strong_and_weak(hparams) -> float:
    """Strongly the learning rate, weakly the batch size, nothing else."""
    lr = math.log10(hparams["learning_rate"])
    return 0.9 - 0.08 * (lr + 2.5) ** 2 + 0.04 * math.log2(hparams["batch_size"])


def ranking(scores: dict) -> list[str]:
    return sorted(scores, key=lambda gene: (-round(scores[gene], 6), gene))


@pytest.fixture(scope="module")
def strong_and_weak_stage() -> list[dict]:
    return records(40, fitness=strong_and_weak)


def test_optunas_fanova_on_the_stage_study_gives_evores_importance(strong_and_weak_stage):
    """Same data, same evaluator, same seed: the same importances, hence the same ranking."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    ours = stage_importance(strong_and_weak_stage, SPACE, seed=3)["importance"]
    study = stage_study(strong_and_weak_stage, SPACE)
    evaluator = FanovaImportanceEvaluator(n_trees=N_TREES, seed=3)
    theirs = get_param_importances(study, evaluator=evaluator)
    assert set(theirs) == set(GENES)
    assert {gene: round(value, 6) for gene, value in theirs.items()} == pytest.approx(ours)
    assert ranking(theirs) == ranking(ours)
    assert ranking(ours)[:2] == ["learning_rate", "batch_size"]


def test_ped_anova_agrees_where_one_gene_matters_and_differs_by_design_otherwise(
    strong_and_weak_stage,
):
    """Another method on the same data (docs/run-directory.md). Where the learning rate alone
    matters, PED-ANOVA ranks it first too. Where the batch size adds a weak rise, the best
    tenth of the genomes nearly all have the largest batch size: PED-ANOVA, which asks how
    concentrated a gene is among the best, ranks it first; fANOVA, which asks how much of the
    accuracy's variance a gene explains, ranks it second."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    alone = stage_study(records(200, seed=1), SPACE)  # no forest: cheap at 200 trials
    assert ranking(get_param_importances(alone, evaluator=PedAnovaImportanceEvaluator()))[0] == (
        "learning_rate"
    )
    both = stage_study(strong_and_weak_stage, SPACE)
    ped = get_param_importances(both, evaluator=PedAnovaImportanceEvaluator())
    assert ranking(ped)[:2] == ["batch_size", "learning_rate"]


def test_a_stage_above_the_cap_is_scored_on_a_seeded_sample(strong_and_weak_stage):
    capped = stage_importance(strong_and_weak_stage, SPACE, seed=5, max_rows=20)
    assert capped["n_used"] == 40 and capped["n_sampled"] == 20
    assert capped == stage_importance(strong_and_weak_stage, SPACE, seed=5, max_rows=20)
    assert ranking(capped["importance"])[0] == "learning_rate"


def test_the_run_caps_what_a_large_stage_costs(monkeypatch):
    monkeypatch.setattr(importance, "MAX_ROWS", 12)
    small, large = run_importance(CONFIG, records(8) + records(24, stage=1))["stages"]
    assert "n_sampled" not in small and large["n_sampled"] == 12 and large["n_used"] == 24
