"""Tests for evores.strategies.steady (the asynchronous steady-state search) and the evaluators'
steady()
loop: serially, with simulated workers finishing out of order, and under ``mpiexec -n 3``
(tests/mpi_steady_script.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evores import config as configuration
from evores.core.results import failed_result
from evores.core.seeding import derive_rng
from evores.core.stats import spearman
from evores.execution.evaluators import SerialEvaluator
from evores.execution.stopping import RunInterrupted, StopRequest
from evores.strategies.generational import LadderSearch
from evores.strategies.space import SearchSpace
from evores.strategies.steady import SteadyStateSearch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "mpi_steady_script.py"
BUDGET = {16: 24, 32: 14, 64: 7}
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL", "HYDI_")


def toy_accuracy(task: dict) -> float:
    """Peaks at learning rate 1e-2, three conv layers and 32 first-layer filters; a little
    seeded noise, so that elites can change rank between resolutions."""
    h = task["hparams"]
    lr_term = (math.log10(h["learning_rate"]) + 2) ** 2
    depth_term = (len(h["conv_filters"]) - 3) ** 2
    width_term = (math.log2(h["conv_filters"][0]) - 5) ** 2 / 25
    noise = 0.02 * (task["seed"] % 1000) / 1000
    score = 1.0 / (1.0 + lr_term + 0.3 * depth_term + 0.1 * width_term)
    return score * (0.9 + task["resolution"] / 1000) + noise


def toy_result(task: dict) -> dict:
    if task["kind"] == "final":
        return {"status": "ok", "val_accuracy": 0.0, "best_epoch": 0,
                "test_accuracy": toy_accuracy(task) - 0.01}  # fmt: skip
    if task["hparams"]["batch_size"] == 512:  # some failures, as in real runs
        return {"status": "failed", "val_accuracy": 0.0, "best_epoch": 0, "failure": "oom"}
    return {"status": "ok", "val_accuracy": toy_accuracy(task), "best_epoch": 3}


def make_config(**sets) -> dict:
    overrides = ["schedule.resolutions=[16, 32, 64]", "schedule.evaluations=[24, 14, 7]",
                 "search.population=8", "schedule.elites=3"]  # fmt: skip
    overrides += [f"{k.replace('__', '.')}={v}" for k, v in sets.items()]
    return configuration.load(overrides=overrides)


def run_serial(search: SteadyStateSearch, work=toy_result, stop=None, on_told=None) -> list:
    """Drive ``search`` through SerialEvaluator.steady; the tasks in the order they were told."""
    told = []

    def on_result(task: dict, result: dict) -> None:
        search.tell_one(task, result, elapsed=float(len(told)))
        told.append(task)
        if on_told is not None:
            on_told(task, result)

    abandoned = SerialEvaluator(work).steady(search.ask_one, on_result, lambda: search.done, stop)
    return told if stop is None else (told, abandoned)


def simulate(search, workers: int, order_seed: int, stop_after=None, running=None) -> list:
    """``workers`` simulated workers; which running task finishes next is drawn from a seeded
    generator, so results arrive out of order but reproducibly. Stops after ``stop_after``
    tells (leaving tasks in flight) or when the search is done."""
    rng = np.random.default_rng(order_seed)
    running = list(running or [])
    told = []
    while stop_after is None or len(told) < stop_after:
        while len(running) < workers and (task := search.ask_one()) is not None:
            running.append(task)
        if not running:
            assert search.done, "nothing to run but the search is not done"
            break
        task = running.pop(int(rng.integers(len(running))))
        search.tell_one(task, toy_result(task), elapsed=float(len(told)))
        told.append(task)
    return told


def search_counts(tasks: list[dict]) -> dict[int, int]:
    return dict(Counter(t["resolution"] for t in tasks if t["kind"] == "search"))


@pytest.mark.parametrize("strategy", ["ga", "random"])
def test_budget_per_stage_is_exact_and_the_run_ends_done(strategy):
    search = SteadyStateSearch(make_config(search__strategy=f'"{strategy}"'))
    told = run_serial(search)
    assert search_counts(told) == BUDGET
    assert search.state["n_evaluations"] == 45
    assert [s["n_evaluations"] for s in search.state["stages"]] == [24, 14, 7]
    assert [t["kind"] for t in told[-3:]] == ["final"] * 3
    assert [t["key"] for t in told[-3:]] == [[3, 0, i] for i in range(3)]
    assert all(t["epochs"] == 3 and t["resolution"] == 64 for t in told[-3:])
    assert search.done and search.pending() == [] and search.ask_one() is None
    assert len(search.state["final"]) == 3
    winner = search.winner()
    assert winner["val_accuracy"] == max(f["val_accuracy"] for f in search.state["final"])


def test_keys_and_seeds_are_positions_in_the_run():
    search = SteadyStateSearch(make_config())
    told = [t for t in run_serial(search) if t["kind"] == "search"]
    assert [t["key"] for t in told[:24]] == [[0, birth, 0] for birth in range(24)]
    assert len({t["seed"] for t in told}) == len(told)
    assert len({tuple(t["key"]) for t in told}) == len(told)


def test_every_genome_fits_the_space():
    config = make_config()
    space = SearchSpace.from_dict(config["space"])
    search = SteadyStateSearch(config)
    for task in run_serial(search):
        assert space.validate(task["hparams"]) == task["hparams"]
    # Each later stage draws from its narrowed space, which holds every genome of that stage.
    narrowed = SearchSpace.from_dict(search.state["space"])
    for member in search.state["population"]:
        assert narrowed.validate(member["hparams"]) == member["hparams"]


def test_state_is_plain_json_after_every_tell():
    search = SteadyStateSearch(make_config())

    def check(task: dict, result: dict) -> None:
        assert json.loads(json.dumps(search.state, allow_nan=False)) == search.state
        assert len(search.state["population"]) <= 8

    run_serial(search, on_told=check)
    assert search.done


def sampled(config: dict, birth: int) -> dict:
    space = SearchSpace.from_dict(config["space"])
    return space.sample(derive_rng(config["seed"], "async-breed", 0, birth))


def test_breeding_never_waits_for_results():
    config = make_config()
    search = SteadyStateSearch(config)
    asked = [search.ask_one() for _ in range(12)]  # nothing told yet: samples, no waiting
    assert [t["hparams"] for t in asked] == [sampled(config, b) for b in range(12)]


def test_population_is_the_best_mu_of_the_stage_so_far():
    config = make_config()
    search = SteadyStateSearch(config)
    seen: dict[int, list[tuple[float, list]]] = {}

    def check(task: dict, result: dict) -> None:
        fitness = result["val_accuracy"] if result["status"] == "ok" else 0.0
        if "probe_of" in task and not search.ladder.fits({"hparams": task["hparams"]}):
            return  # measured, not bred from: outside the narrowed space
        seen.setdefault(task["resolution"], []).append((fitness, task["key"]))
        if task["kind"] == "search" and search.state["stage_used"] > 0:  # stage not just closed
            # Ties (failures score 0.0) keep the member that came first.
            best = sorted(seen[task["resolution"]], key=lambda pair: -pair[0])[:8]
            assert [m["key"] for m in search.state["population"]] == [key for _, key in best]

    def often_failing(task: dict) -> dict:
        return toy_result(task) if task["seed"] % 3 else failed_result("toy", "nan")

    told = run_serial(search, work=often_failing, on_told=check)
    assert [t["hparams"] for t in told[:8]] == [sampled(config, b) for b in range(8)]
    assert told[8]["hparams"] != sampled(config, 8)  # bred once the population is full
    best_at_64 = max(f["val_accuracy"] for f in search.state["final"])
    assert best_at_64 == search.state["stages"][-1]["best_val_accuracy"]


@pytest.mark.parametrize("probe", [0, 8])
def test_elites_are_re_evaluated_first_and_the_transition_is_recorded(probe):
    search = SteadyStateSearch(make_config(schedule__probe=probe))
    lengths = []
    told = run_serial(search, on_told=lambda t, r: lengths.append(len(search.state["transitions"])))
    first_at_32 = [t for t in told if t["resolution"] == 32 and t["kind"] == "search"][:3]
    assert [t["key"] for t in first_at_32] == [[1, i, 0] for i in range(3)]
    assert all("elite_of" in t for t in first_at_32)
    scores = [t["elite_of"][1] for t in first_at_32]
    assert scores == sorted(scores, reverse=True)
    at_32 = [t for t in told if t["resolution"] == 32 and t["kind"] == "search"]
    probed = at_32[3 : 3 + probe]
    assert all("probe_of" in t for t in probed) and not any(
        "probe_of" in t for t in at_32[3 + probe :]
    )
    last = 24 + 2 + probe  # recorded when the last elite (or probe member) is back
    assert lengths[last - 1] == 0 and lengths[last] == 1
    transitions = search.state["transitions"]
    assert [(t["from_resolution"], t["to_resolution"]) for t in transitions] == [(16, 32), (32, 64)]
    for transition, stage, n in zip(
        transitions, search.state["stages"][1:], [3 + probe, 3 + min(probe, 4)], strict=True
    ):
        assert len(transition["pairs"]) == n
        assert transition["n"] + transition["n_failed"] == n
        assert len(transition["low"]) == len(transition["high"]) == transition["n"]
        rho = spearman(transition["low"], transition["high"])
        assert rho is not None and transition["rank_correlation"] == rho
        assert stage["rank_correlation"] == rho
    assert [p["low"] for p in transitions[0]["pairs"][:3]] == scores


def test_out_of_order_results_keep_the_budget_and_the_transitions():
    search = SteadyStateSearch(make_config())
    told = simulate(search, workers=3, order_seed=5)
    assert search.done and search_counts(told) == BUDGET
    assert len(search.state["transitions"]) == 2 and len(search.state["final"]) == 3
    assert len({tuple(t["key"]) for t in told}) == len(told) == 48


@pytest.mark.parametrize("tells", [5, 23, 24, 30, 46])
def test_resume_mid_stage_reissues_pending_tasks_and_completes(tells):
    config = make_config()
    first = SteadyStateSearch(config)
    before = simulate(first, workers=3, order_seed=1, stop_after=tells)
    state = json.loads(json.dumps(first.state))  # what the checkpoint holds
    pending = state["pending"]
    assert pending == first.pending() and len(pending) <= 3
    resumed = SteadyStateSearch(config, state)
    reissued = [resumed.ask_one() for _ in pending]
    assert reissued == pending  # the same tasks, the same seeds
    after = simulate(resumed, workers=3, order_seed=2, running=reissued)
    assert resumed.done and resumed.state["n_evaluations"] == 45
    assert search_counts(before + after) == BUDGET
    keys = [tuple(t["key"]) for t in before + after]
    assert len(keys) == len(set(keys)) == 48  # nothing lost, nothing run twice
    assert len(resumed.state["transitions"]) == 2 and len(resumed.state["final"]) == 3


def test_a_pending_task_told_before_it_is_reissued_is_not_handed_out_again():
    config = make_config()
    first = SteadyStateSearch(config)
    simulate(first, workers=3, order_seed=1, stop_after=10)
    state = json.loads(json.dumps(first.state))
    logged, *others = state["pending"]  # say its result was found in the evaluation log
    resumed = SteadyStateSearch(config, state)
    resumed.tell_one(logged, toy_result(logged), 0.0)
    assert [resumed.ask_one() for _ in others] == others
    assert resumed.ask_one()["key"] not in [t["key"] for t in state["pending"]]


def test_serial_resume_equals_uninterrupted():
    config = make_config()
    whole = run_serial(SteadyStateSearch(config))
    for stop in (3, 24, 40):
        first = SteadyStateSearch(config)
        before = simulate(first, workers=1, order_seed=0, stop_after=stop)
        resumed = SteadyStateSearch(config, json.loads(json.dumps(first.state)))
        assert before + run_serial(resumed) == whole


def test_same_seed_same_run_and_other_seed_differs():
    first = run_serial(SteadyStateSearch(make_config()))
    assert run_serial(SteadyStateSearch(make_config())) == first
    assert run_serial(SteadyStateSearch(make_config(seed=1))) != first
    # Out of order, but in a reproducible order: reproducible too.
    a, b = SteadyStateSearch(make_config()), SteadyStateSearch(make_config())
    assert simulate(a, 3, order_seed=4) == simulate(b, 3, order_seed=4)
    assert a.state == b.state


def test_ga_finds_better_genomes_than_random_search_on_a_smooth_problem():
    def best_found(strategy: str, seed: int) -> float:
        config = make_config(
            seed=seed, search__strategy=f'"{strategy}"', schedule__evaluations="[96, 56, 28]"
        )
        search = SteadyStateSearch(config)
        simulate(search, workers=2, order_seed=seed)
        return search.state["stages"][-1]["best_val_accuracy"]

    seeds = range(6)
    assert sum(best_found("ga", s) for s in seeds) > sum(best_found("random", s) for s in seeds)


def test_a_stop_ends_the_loop_between_tasks_and_the_run_resumes():
    search = SteadyStateSearch(make_config())
    stop = StopRequest()

    def request_after_five(task: dict, result: dict) -> None:
        if search.state["n_evaluations"] == 5:
            stop.request("SIGUSR1", 0.0)

    told, abandoned = run_serial(search, stop=stop, on_told=request_after_five)
    assert abandoned == [] and len(told) == 5 and not search.done
    assert search.pending() == [] and stop.interrupt_running is False
    resumed = SteadyStateSearch(make_config(), json.loads(json.dumps(search.state)))
    assert told + run_serial(resumed) == run_serial(SteadyStateSearch(make_config()))


def test_an_interrupted_task_is_returned_as_abandoned_and_reissued():
    search = SteadyStateSearch(make_config())
    stop = StopRequest()
    calls = []

    def work(task: dict) -> dict:
        calls.append(task["key"])
        assert stop.interrupt_running  # a second signal may interrupt the running task
        if len(calls) == 4:
            stop.request("SIGTERM", 0.0)
            raise RunInterrupted("SIGTERM (second stop signal)")
        return toy_result(task)

    told, abandoned = run_serial(search, work=work, stop=stop)
    assert len(told) == 3 and [t["key"] for t in abandoned] == [[0, 3, 0]]
    assert search.pending() == abandoned
    resumed = SteadyStateSearch(make_config(), json.loads(json.dumps(search.state)))
    assert resumed.ask_one() == abandoned[0]


def test_a_stalled_search_is_an_error():
    with pytest.raises(RuntimeError, match="stalled|lost track"):
        SerialEvaluator(toy_result).steady(lambda: None, lambda t, r: None, lambda: False)
    assert SerialEvaluator(toy_result).steady(lambda: None, lambda t, r: None, lambda: True) == []


def test_telling_an_unknown_task_is_refused_and_there_is_no_batch_interface():
    search = SteadyStateSearch(make_config())
    task = search.ask_one()
    search.tell_one(task, toy_result(task), 0.0)
    with pytest.raises(ValueError, match="not pending"):
        search.tell_one(task, toy_result(task), 0.0)
    # A sibling of LadderSearch, not a child with ask/tell switched off.
    assert not isinstance(search, LadderSearch)
    assert not hasattr(search, "ask") and not hasattr(search, "tell")


@pytest.mark.mpi
def test_mpi_steady_run_and_stop():
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not on PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    proc = subprocess.run(
        [mpiexec, "-n", "3", sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # includes a clean shutdown of every rank
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    whole = report["whole"]
    assert whole["phase"] == "done" and whole["abandoned"] == []
    assert whole["counts"] == {str(k): v for k, v in BUDGET.items()}
    assert whole["n_evaluations"] == 45 and whole["transitions"] == 2 and whole["final"] == 3
    assert whole["ranks"] == [1, 2] and whole["state_is_json"]
    stopped = report["stopped"]
    assert 1 <= len(stopped["abandoned"]) <= 2 and stopped["busy"] == len(stopped["abandoned"])
    assert stopped["abandoned"] == stopped["pending"]
    assert stopped["resumed_phase"] == "done" and stopped["resumed_counts"] == whole["counts"]
