import json
import math

import pytest

from evores import config as configuration
from evores.strategies.generational import LadderSearch
from evores.strategies.space import SearchSpace


def toy_accuracy(hparams: dict, resolution: int) -> float:
    """Peaks at learning rate 1e-2 and three conv layers; higher resolution helps a little."""
    lr_term = (math.log10(hparams["learning_rate"]) + 2) ** 2
    depth_term = (len(hparams["conv_filters"]) - 3) ** 2
    return 1.0 / (1.0 + lr_term + 0.3 * depth_term) * (0.9 + resolution / 1000)


def toy_result(task: dict) -> dict:
    if task["kind"] == "final":
        test_accuracy = toy_accuracy(task["hparams"], task["resolution"]) - 0.01
        return {"status": "ok", "val_accuracy": 0.0, "best_epoch": 0,
                "test_accuracy": test_accuracy}  # fmt: skip
    if task["hparams"]["batch_size"] == 512:  # some failures, as in real runs
        return {"status": "failed", "val_accuracy": 0.0, "best_epoch": 0, "failure": "oom"}
    return {"status": "ok", "val_accuracy": toy_accuracy(task["hparams"], task["resolution"]),
            "best_epoch": 3}  # fmt: skip


def make_config(**sets) -> dict:
    overrides = ["schedule.resolutions=[16, 32, 64]", "schedule.evaluations=[24, 14, 7]",
                 "search.population=8", "schedule.elites=3"]  # fmt: skip
    overrides += [f"{k.replace('__', '.')}={v}" for k, v in sets.items()]
    return configuration.load(overrides=overrides)


def drive(search: LadderSearch, stop_after: int | None = None) -> list[list[dict]]:
    generations = []
    while not search.done and (stop_after is None or len(generations) < stop_after):
        tasks = search.ask()
        search.tell(tasks, [toy_result(t) for t in tasks], elapsed=float(len(generations)))
        generations.append(tasks)
    return generations


@pytest.mark.parametrize("strategy", ["ga", "random"])
def test_budget_per_stage_is_exact(strategy):
    search = LadderSearch(make_config(search__strategy=f'"{strategy}"'))
    generations = drive(search)
    per_resolution = {}
    for tasks in generations:
        for task in tasks:
            if task["kind"] == "search":
                per_resolution[task["resolution"]] = per_resolution.get(task["resolution"], 0) + 1
    assert per_resolution == {16: 24, 32: 14, 64: 7}
    assert search.state["n_evaluations"] == 45
    assert [s["n_evaluations"] for s in search.state["stages"]] == [24, 14, 7]
    assert generations[-1][0]["kind"] == "final" and len(generations[-1]) == 3


def test_every_genome_fits_the_space():
    config = make_config()
    space = SearchSpace.from_dict(config["space"])
    for tasks in drive(LadderSearch(config)):
        for task in tasks:
            assert space.validate(task["hparams"]) == task["hparams"]


def test_elites_are_re_evaluated_first_at_a_stage_change():
    search = LadderSearch(make_config())
    generations = drive(search)
    first_at_32 = next(tasks for tasks in generations if tasks[0]["resolution"] == 32)
    elites = [t for t in first_at_32 if "elite_of" in t]
    assert len(elites) == 3 and first_at_32[:3] == elites
    scores = [t["elite_of"][1] for t in elites]
    assert scores == sorted(scores, reverse=True)
    probe = [t for t in first_at_32 if "probe_of" in t]
    assert len(probe) == 8 and first_at_32[3:11] == probe  # schedule.probe, after the elites
    transition = search.state["transitions"][0]
    assert transition["from_resolution"] == 16 and transition["to_resolution"] == 32
    measured = [t for t in elites + probe if t["hparams"]["batch_size"] != 512]  # not failed
    assert transition["low"] == [(t.get("elite_of") or t["probe_of"])[1] for t in measured]
    assert transition["high"] == [toy_accuracy(t["hparams"], 32) for t in measured]
    assert transition["n"] == len(measured) and transition["n_failed"] == 11 - len(measured)
    assert [p["role"] for p in transition["pairs"]] == ["elite"] * 3 + ["probe"] * 8
    # toy_accuracy ranks genomes alike at every resolution: the members keep their order.
    assert transition["rank_correlation"] == pytest.approx(1.0)
    assert transition["spearman"] == transition["kendall"] == pytest.approx(1.0)
    assert transition["interval"] == pytest.approx([1.0, 1.0]) and transition["top_k_kept"] == 3
    assert search.state["stages"][1]["rank_correlation"] == transition["rank_correlation"]


def planted(elite_at_32):
    """Distinct seeded scores at 16 px; at 32 px a carried elite scores
    ``elite_at_32(index, its score at 16 px)`` (the elites come first, best first)."""

    def result(task: dict) -> dict:
        if "elite_of" in task:
            return elite_at_32(task["key"][2], task["elite_of"][1])
        if task["kind"] == "final":
            return toy_result(task)
        noise = (task["seed"] % 10_007) / 1e6  # no ties among the elites
        score = toy_accuracy(task["hparams"], task["resolution"]) + noise
        return {"status": "ok", "val_accuracy": score, "best_epoch": 3}

    return result


def first_transition(work, probe: int = 0) -> dict:
    search = LadderSearch(make_config(schedule__probe=probe))
    while not search.state["transitions"]:
        tasks = search.ask()
        search.tell(tasks, [work(t) for t in tasks], elapsed=0.0)
    return search.state["transitions"][0]


def test_rank_correlation_of_elites_whose_order_holds_or_reverses_is_plus_or_minus_one():
    def same_order(index: int, low: float) -> dict:
        return {"status": "ok", "val_accuracy": low / 2, "best_epoch": 3}

    def reversed_order(index: int, low: float) -> dict:
        return {"status": "ok", "val_accuracy": 1.0 - low, "best_epoch": 3}

    held = first_transition(planted(same_order))
    assert held["high"] == [low / 2 for low in held["low"]]
    assert held["rank_correlation"] == pytest.approx(1.0)
    reversed_ = first_transition(planted(reversed_order))
    assert reversed_["high"] == [1.0 - low for low in reversed_["low"]]
    assert reversed_["rank_correlation"] == pytest.approx(-1.0)


def test_an_elite_failing_at_the_higher_resolution_is_counted_not_scored():
    def best_one_fails(index: int, low: float) -> dict:
        if index == 0:
            return {"status": "failed", "val_accuracy": 0.0, "best_epoch": 0, "failure": "oom"}
        return {"status": "ok", "val_accuracy": 1.0 - low, "best_epoch": 3}

    transition = first_transition(planted(best_one_fails))
    pairs = transition["pairs"]
    assert pairs[0]["high"] is None and transition["n_failed"] == 1 and transition["n"] == 2
    assert transition["low"] == [p["low"] for p in pairs[1:]]
    # Scored 0.0, the failure would have read as agreement (rho -0.5); left out, the two
    # elites that were told reverse their order.
    assert transition["rank_correlation"] == pytest.approx(-1.0)
    assert transition["interval"] is None  # two pairs give no interval


def test_same_seed_same_run_and_other_seed_differs():
    first = drive(LadderSearch(make_config()))
    assert drive(LadderSearch(make_config())) == first
    assert drive(LadderSearch(make_config(seed=1))) != first


def test_resume_from_any_generation_equals_uninterrupted():
    config = make_config()
    whole = drive(LadderSearch(config))
    for stop in (1, 3, 4, 7):
        first = LadderSearch(config)
        before = drive(first, stop_after=stop)
        state = json.loads(json.dumps(first.state))  # what the checkpoint holds
        after = drive(LadderSearch(config, state))
        assert before + after == whole
        assert first.state is not state


def test_ranges_narrow_around_the_elites():
    search = LadderSearch(make_config())
    drive(search, stop_after=4)
    assert search.stage == 1
    wide = SearchSpace.from_dict(make_config()["space"])
    narrow = SearchSpace.from_dict(search.state["space"])
    assert narrow.learning_rate.high / narrow.learning_rate.low < (
        wide.learning_rate.high / wide.learning_rate.low
    )
    unchanged = LadderSearch(make_config(schedule__narrow="false"))
    drive(unchanged, stop_after=4)
    assert unchanged.state["space"] == make_config()["space"]


def test_winner_is_chosen_by_validation_never_by_test():
    search = LadderSearch(make_config())
    drive(search)
    final = search.state["final"]
    assert len(final) == 3
    winner = search.winner()
    assert winner["val_accuracy"] == max(f["val_accuracy"] for f in final)
    assert all(f["epochs"] == 3 for f in final)


def test_ga_finds_better_genomes_than_random_search_on_a_smooth_problem():
    # Three generations are too few for selection to beat luck; twelve are not.
    def best_found(strategy: str, seed: int) -> float:
        search = LadderSearch(
            make_config(
                seed=seed, search__strategy=f'"{strategy}"', schedule__evaluations="[96, 56, 28]"
            )
        )
        drive(search)
        return search.state["stages"][-1]["best_val_accuracy"]

    seeds = range(6)
    ga = sum(best_found("ga", s) for s in seeds)
    random = sum(best_found("random", s) for s in seeds)
    assert ga > random
