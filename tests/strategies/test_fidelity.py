"""The fidelity probe and the adaptive ladder (evores.strategies.fidelity), with planted
fidelities."""

from __future__ import annotations

import json

import fitness_plugins
import numpy as np
import pytest

from evores import config as configuration
from evores.core.results import FAILED, OK
from evores.strategies import fidelity
from evores.strategies.generational import LadderSearch
from evores.strategies.steady import SteadyStateSearch

PLANTED = {
    "agrees": fitness_plugins.fidelity_agrees,
    "unrelated": fitness_plugins.fidelity_unrelated,
    "disagrees": fitness_plugins.fidelity_disagrees,
}


def member(fitness: float, lr: float, status: str = OK) -> dict:
    return {"hparams": {"learning_rate": lr}, "fitness": fitness, "status": status,
            "best_epoch": 1, "key": [0, 0, 0]}  # fmt: skip


def make_config(resolutions="[8, 16]", evaluations="[40, 40]", **sets) -> dict:
    overrides = [f"schedule.resolutions={resolutions}", f"schedule.evaluations={evaluations}",
                 "search.population=8", "schedule.elites=3"]  # fmt: skip
    overrides += [f"{k.replace('__', '.')}={v}" for k, v in sets.items()]
    return configuration.load(overrides=overrides)


def result(function, task: dict) -> dict:
    """``function`` (a user fitness plugin) as the worker would report it; no training."""
    value = function(task["hparams"], task["resolution"], None)
    if task["kind"] == "final":
        return {"status": OK, "val_accuracy": 0.0, "best_epoch": 0, "test_accuracy": value}
    return {"status": OK, "val_accuracy": value, "best_epoch": 3}


def run(function, config, asynchronous: bool = False):
    if asynchronous:
        search = SteadyStateSearch(config)
        while not search.done:
            task = search.ask_one()
            search.tell_one(task, result(function, task), 0.0)
        return search
    search = LadderSearch(config)
    while not search.done:
        tasks = search.ask()
        search.tell(tasks, [result(function, t) for t in tasks], 0.0)
    return search


# -- the probe's members ---------------------------------------------------------------------


def test_the_probe_spreads_over_the_ranks_and_leaves_out_elites_repeats_and_failures():
    pool = [member(f / 10, lr=f / 100) for f in range(1, 10)]  # fitness 0.1 .. 0.9
    pool += [member(0.95, lr=0.09), member(0.0, lr=0.5, status=FAILED)]  # a repeat, a failure
    elites = [member(0.9, lr=0.09), member(0.8, lr=0.08)]
    probe = fidelity.probe_members(pool, elites, 4)
    # Left: 0.7 .. 0.1 (7 members); ranks 0, 2, 4, 6 of them: the best, the worst, between.
    assert [m["fitness"] for m in probe] == [0.7, 0.5, 0.3, 0.1]
    taken = [m["hparams"] for m in elites + probe]
    assert len({json.dumps(h) for h in taken}) == len(taken)


def test_a_stage_with_fewer_members_than_the_probe_gives_all_it_has():
    pool = [member(0.5, lr=0.1), member(0.4, lr=0.2), member(0.3, lr=0.3)]
    assert fidelity.probe_members(pool, pool[:1], 8) == pool[1:]
    assert fidelity.probe_members(pool, pool[:1], 0) == []


def test_failed_pairs_are_counted_and_left_out_of_every_statistic():
    low = [member(0.9, 1), member(0.8, 2), member(0.0, 3, FAILED), member(0.6, 4), member(0.5, 5)]
    high = [member(0.7, 1), member(0.0, 2, FAILED), member(0.5, 3), member(0.4, 4),
            member(0.3, 5)]  # fmt: skip
    measured = fidelity.measure(low, high, 2, np.random.default_rng(0))
    assert measured["n"] == 3 and measured["n_failed"] == 2
    assert measured["low"] == [0.9, 0.6, 0.5] and measured["high"] == [0.7, 0.4, 0.3]
    assert measured["spearman"] == measured["kendall"] == pytest.approx(1.0)
    assert [p["role"] for p in measured["pairs"]] == ["elite", "elite", "probe", "probe", "probe"]
    assert measured["pairs"][1] == {"role": "elite", "low": 0.8, "high": None}
    assert measured["top_k_kept"] == 2
    again = fidelity.measure(low, high, 2, np.random.default_rng(0))
    assert again == measured  # the interval is seeded


def test_the_verdict_needs_enough_pairs_and_a_lower_bound_at_the_threshold():
    strong = {"n": 11, "interval": [0.38, 0.9]}
    assert fidelity.verdict(strong, 0.3) == "strong"
    assert fidelity.verdict(strong, 0.4) == "weak"
    assert fidelity.verdict({"n": 4, "interval": [0.9, 1.0]}, 0.3) == "weak"
    assert fidelity.verdict({"n": 11, "interval": None}, 0.3) == "weak"


# -- planted fidelity ------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_probe_measures_a_planted_fidelity(asynchronous):
    measured = {}
    for name, function in PLANTED.items():
        rows = [
            run(function, make_config(seed=seed), asynchronous).state["transitions"][0]
            for seed in range(5)
        ]
        assert all(t["n"] == 11 and t["n_failed"] == 0 for t in rows)  # 3 elites + 8 probe
        measured[name] = rows
    assert np.mean([t["spearman"] for t in measured["agrees"]]) > 0.8
    assert all(t["spearman"] > 0.6 and t["interval"][1] > 0.9 for t in measured["agrees"])
    unrelated = measured["unrelated"]
    # 11 pairs of unrelated scores: each rho is noise (one seed in five reaches -0.5), their
    # mean is near 0, and no interval clears the threshold of a strong proxy.
    assert all(fidelity.verdict(t, 0.3) == "weak" for t in unrelated)
    assert abs(np.mean([t["spearman"] for t in unrelated])) < 0.3
    assert all(t["spearman"] == pytest.approx(-1.0) for t in measured["disagrees"])
    assert all(t["top_k_kept"] == 0 for t in measured["disagrees"])


@pytest.mark.parametrize("asynchronous", [False, True])
def test_with_a_disagreeing_proxy_the_adaptive_ladder_ends_better_than_the_fixed_one(
    asynchronous,
):
    function = fitness_plugins.fidelity_disagrees
    fixed = run(function, make_config(), asynchronous)
    adaptive = run(function, make_config(schedule__adaptive="true"), asynchronous)
    assert fixed.state["transitions"] == adaptive.state["transitions"]  # same seed, same probe
    # The fixed ladder's winner is a probe member (0.76 / 0.67: the best evaluations of the
    # last stage are retrained, probe members too); the adaptive one widens the space again
    # and finds the plugin's best genome.
    assert adaptive.winner()["test_accuracy"] == pytest.approx(0.8)
    assert adaptive.winner()["test_accuracy"] > fixed.winner()["test_accuracy"] + 0.02
    [decision] = adaptive.state["decisions"]
    assert decision["verdict"] == "weak" and decision["at"] == "transition"
    assert decision["changed"] == "restored the unnarrowed space of this stage"
    assert decision["measured"]["spearman"] == pytest.approx(-1.0)
    assert adaptive.state["space"] == make_config_space()


def make_config_space() -> dict:
    return LadderSearch(make_config()).state["space"]


def test_after_a_weak_transition_more_elites_go_up_unnarrowed_and_a_strong_one_changes_nothing():
    # 8 -> 16 px disagrees (the plugin's low resolution is below 16 px); 16 -> 32 px agrees.
    config = make_config("[8, 16, 32]", "[40, 30, 30]", schedule__adaptive="true")
    search = run(fitness_plugins.fidelity_disagrees, config)
    decisions = search.state["decisions"]
    assert [(d["stage"], d["at"], d["verdict"]) for d in decisions] == [
        (1, "transition", "weak"), (1, "stage_close", "weak"), (2, "transition", "strong"),
    ]  # fmt: skip
    assert decisions[1]["changed"] == "carried 6 elites instead of 3, did not narrow"
    second = search.state["transitions"][1]
    assert [p["role"] for p in second["pairs"]] == ["elite"] * 6 + ["probe"] * 8
    assert second["spearman"] == pytest.approx(1.0)
    json.dumps(search.state)  # plain data: the checkpoint


def test_a_stopped_asynchronous_adaptive_run_resumes_to_the_uninterrupted_one():
    config = make_config("[8, 16, 32]", "[40, 30, 30]", schedule__adaptive="true")
    function = fitness_plugins.fidelity_disagrees
    whole = run(function, config, asynchronous=True)
    for stop in (40, 45, 52, 75):  # at a stage change, inside the probe, just after it, later
        first = SteadyStateSearch(config)
        for _ in range(stop):
            task = first.ask_one()
            first.tell_one(task, result(function, task), 0.0)
        resumed = SteadyStateSearch(config, json.loads(json.dumps(first.state)))
        while not resumed.done:
            task = resumed.ask_one()
            resumed.tell_one(task, result(function, task), 0.0)
        assert resumed.state == whole.state, stop


def test_a_stopped_adaptive_run_resumes_to_the_uninterrupted_one():
    config = make_config("[8, 16, 32]", "[40, 30, 30]", schedule__adaptive="true")
    function = fitness_plugins.fidelity_unrelated
    whole = run(function, config)
    for stop in (5, 6, 9):
        first = LadderSearch(config)
        for _ in range(stop):
            tasks = first.ask()
            first.tell(tasks, [result(function, t) for t in tasks], 0.0)
        resumed = LadderSearch(config, json.loads(json.dumps(first.state)))
        while not resumed.done:
            tasks = resumed.ask()
            resumed.tell(tasks, [result(function, t) for t in tasks], 0.0)
        assert resumed.state == whole.state, stop


def test_the_cli_runs_a_planted_plugin_and_records_the_probe_in_the_summary(cli, tmp_path):
    overrides = ["schedule.resolutions=[8, 16]", "schedule.evaluations=[16, 12]",
                 "search.population=4", "search.elitism=1", "schedule.elites=2",
                 "schedule.adaptive=true", "train.threads=1",
                 "fitness.function=fitness_plugins:fidelity_disagrees"]  # fmt: skip
    done = cli("--out", str(tmp_path / "run"), overrides=overrides)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    [transition] = summary["transitions"]
    assert transition["n"] == 10 and transition["spearman"] == pytest.approx(-1.0)  # 2 + 8
    assert "8→16 px: ρ -1.00 [-1.00, -1.00], n 10" in done.stderr
    assert (
        summary["adaptive"]["enabled"] and summary["adaptive"]["decisions"][0]["verdict"] == "weak"
    )


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_final_candidates_are_the_best_evaluations_of_the_last_stage(asynchronous):
    """Under a proxy that ranks in reverse, the best genomes at the final resolution are probe
    members from outside the narrowed ranges, which never join the population: they are
    retrained all the same."""
    config = make_config()
    function = fitness_plugins.fidelity_disagrees
    search = run(function, config, asynchronous)
    last = [
        function(pair_hparams, 16, None)
        for pair_hparams in _last_stage_genomes(config, function, asynchronous)
    ]
    finals = [f["val_accuracy"] for f in search.state["final"]]
    assert finals == sorted(last, reverse=True)[:3]
    in_population = {json.dumps(m["hparams"], sort_keys=True) for m in search.state["population"]}
    assert any(json.dumps(f["hparams"], sort_keys=True) not in in_population
               for f in search.state["final"])  # fmt: skip


def _last_stage_genomes(config, function, asynchronous) -> list[dict]:
    """Every genome evaluated in the last stage, as the run asked them."""
    genomes = []
    if asynchronous:
        search = SteadyStateSearch(config)
        while not search.done:
            task = search.ask_one()
            if task["kind"] == "search" and task["key"][0] == 1:
                genomes.append(task["hparams"])
            search.tell_one(task, result(function, task), 0.0)
        return genomes
    search = LadderSearch(config)
    while not search.done:
        tasks = search.ask()
        genomes += [t["hparams"] for t in tasks if t["kind"] == "search" and t["key"][0] == 1]
        search.tell(tasks, [result(function, t) for t in tasks], 0.0)
    return genomes
