"""search.initial: the first population starts from given genomes or an earlier run's best."""

import json
import re
import shutil
import tomllib

import pytest
import test_driver
from test_generational import drive
from test_generational import toy_result as generational_result
from test_steady import run_serial, simulate

from evores import config as configuration
from evores.core.errors import ConfigError
from evores.core.results import make_record
from evores.engine.session import load_config
from evores.execution.stopping import RunStopped, StopRequest
from evores.store.checkpoint import RunDirectory
from evores.strategies.generational import LadderSearch
from evores.strategies.steady import SteadyStateSearch

SMALL = ["schedule.resolutions=[16, 32, 64]", "schedule.evaluations=[24, 14, 7]",
         "search.population=8", "schedule.elites=3"]  # fmt: skip


def genome(lr: float = 0.01, filters=(16, 32), units=(32,)) -> dict:
    return {"learning_rate": lr, "conv_filters": list(filters), "conv_kernels": [3] * len(filters),
            "fc_units": list(units), "batch_size": 64, "l1": 0.0, "l2": 1e-5}  # fmt: skip


def load(initial, *sets: str) -> dict:
    return load_config(overrides=[*SMALL, *sets], values={"search": {"initial": initial}})


def reloaded(config: dict) -> dict:
    """The config as a resume reads it: from the run directory's config.toml."""
    return configuration.load(values=tomllib.loads(configuration.to_toml(config)))


GIVEN = [genome(0.02), genome(0.5, filters=(8,)), genome(0.001, units=(16, 64))]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_given_genomes_are_the_first_tasks_and_the_rest_is_sampled(asynchronous):
    config = load(GIVEN, f"search.asynchronous={str(asynchronous).lower()}")
    if asynchronous:
        search = SteadyStateSearch(config)
        first = [search.ask_one() for _ in range(8)]
    else:
        first = LadderSearch(config).ask()
    assert [task["hparams"] for task in first[:3]] == GIVEN
    assert len(first) == 8 and all(task["hparams"] not in GIVEN for task in first[3:])


def test_the_given_genomes_are_normalised_and_reproducible():
    as_typed = dict(genome(), l1=0, l2=0)  # TOML ints where the gene is a float
    config = load([as_typed])
    assert config["search"]["initial"] == [dict(genome(), l1=0.0, l2=0.0)]
    assert drive(LadderSearch(config)) == drive(LadderSearch(load([as_typed])))


def test_a_resumed_run_with_initial_genomes_equals_the_uninterrupted_one():
    config = load(GIVEN)
    whole = drive(LadderSearch(config))
    for stop in (1, 2, 5):
        first = LadderSearch(config)
        before = drive(first, stop_after=stop)
        state = json.loads(json.dumps(first.state))
        assert before + drive(LadderSearch(reloaded(config), state)) == whole
    config = load(GIVEN, "search.asynchronous=true")
    whole = run_serial(SteadyStateSearch(config))
    for stop in (2, 5, 30):
        first = SteadyStateSearch(config)
        before = simulate(first, workers=1, order_seed=0, stop_after=stop)
        state = json.loads(json.dumps(first.state))
        assert before + run_serial(SteadyStateSearch(reloaded(config), state)) == whole


def earlier_run(path, seed: int = 0) -> list[list[dict]]:
    """A whole toy run logged into ``path`` as the driver logs it; its generations."""
    run_dir = RunDirectory(path)
    path.mkdir()
    generations = drive(LadderSearch(configuration.load(overrides=[*SMALL, f"seed={seed}"])))
    for tasks in generations:
        for task in tasks:
            run_dir.append_record(make_record(task, generational_result(task), 0.0))
    return generations


def test_a_run_directory_gives_its_final_candidates_then_its_best_evaluations(tmp_path):
    generations = earlier_run(tmp_path / "earlier")
    config = load(str(tmp_path / "earlier"))
    initial = config["search"]["initial"]
    finals = [t["hparams"] for t in generations[-1]]  # in the order the run ranked them
    assert initial[: len(finals)] == finals and len(initial) == 8
    top = [t for tasks in generations for t in tasks if t["kind"] == "search"
           and generational_result(t)["status"] == "ok"]  # fmt: skip
    top.sort(key=lambda t: (-t["key"][0], -generational_result(t)["val_accuracy"]))
    assert len({t["resolution"] for t in top[:8]}) > 1  # the best stage alone is not enough
    expected = []
    for task in top:
        if task["hparams"] not in finals + expected:
            expected.append(task["hparams"])
    assert initial[len(finals) :] == expected[: 8 - len(finals)]
    assert len({json.dumps(g, sort_keys=True) for g in initial}) == 8  # each genome once
    assert LadderSearch(config).ask()[0]["hparams"] == finals[0]


def test_the_run_directory_is_read_once_at_the_start(tmp_path):
    earlier_run(tmp_path / "earlier")
    config = load(str(tmp_path / "earlier"))
    text = configuration.to_toml(config)
    assert str(tmp_path) not in text  # config.toml holds the genomes, not the path
    (tmp_path / "earlier" / "evaluations.jsonl").unlink()  # the earlier run is gone
    assert reloaded(config) == config  # a resume starts from the same genomes


def test_a_run_directory_with_a_smaller_population_gives_that_many(tmp_path):
    earlier_run(tmp_path / "earlier")
    config = load(str(tmp_path / "earlier"), "search.population=4", "schedule.elites=2")
    assert len(config["search"]["initial"]) == 4


@pytest.mark.parametrize(
    ("initial", "message"),
    [
        ([genome(filters=(4,))], "search.initial[0]: conv_filters[0] = 4 is outside [8, 64]"),
        ([genome(), genome(lr=2.0)], "search.initial[1]: learning_rate = 2.0 is outside"),
        ([genome(filters=(8,) * 5)], "search.initial[0]: hparams has 5 conv layers"),
        ([{**genome(), "dropout": 0.5}], "search.initial[0]: hparams has unknown key(s)"),
        ([genome()] * 9, "search.initial gives 9 genomes, more than search.population = 8"),
        ("no/such/run", "search.initial = 'no/such/run' is not a run directory"),
        (3, "search.initial must be a list of genome tables or the path"),
    ],
)
def test_a_bad_initial_genome_is_refused_naming_it(initial, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(initial)


def test_a_run_directory_genome_outside_the_space_is_refused_naming_it(tmp_path):
    earlier_run(tmp_path / "earlier")
    with pytest.raises(ConfigError, match=r"final candidate \[3, 0, 0\] of .*: learning_rate"):
        load(str(tmp_path / "earlier"), "space.learning_rate=[0.9, 1.0]")


def test_the_cli_refuses_a_bad_initial_genome_with_exit_2_and_writes_nothing(cli, tmp_path):
    bad = json.dumps(genome(filters=(4,))).replace('"', "").replace(":", " =")
    out = tmp_path / "run"
    result = cli("--out", str(out), overrides=[f"search.initial=[{bad}]"])
    assert result.returncode == 2, result.stderr
    assert "search.initial[0]: conv_filters[0] = 4 is outside" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stopped_warm_run_resumes_to_the_uninterrupted_result_whatever_the_earlier_run_does(
    tmp_path, mode
):
    run = test_driver.drive
    earlier = tmp_path / "earlier"
    run(test_driver.make_config(mode), earlier)
    config = test_driver.make_config(mode, search__initial=str(earlier))
    initial = config["search"]["initial"]
    assert len(initial) == 4
    run(config, tmp_path / "whole")
    records = RunDirectory(tmp_path / "whole").read_records()
    assert [r["hparams"] for r in records[:4]] == initial
    stop = StopRequest()
    with pytest.raises(RunStopped):
        run(config, tmp_path / "resumed", test_driver.stop_after(3, stop), stop)
    shutil.rmtree(earlier)  # the earlier run is gone before the resume
    resumed = configuration.load(tmp_path / "resumed" / "config.toml")  # as --resume reads it
    run(resumed, tmp_path / "resumed")
    assert test_driver.outcome(tmp_path / "resumed") == test_driver.outcome(tmp_path / "whole")


def test_a_resume_given_its_config_again_keeps_the_genomes_it_started_from(tmp_path):
    """A requeued batch job passes --config with --resume: the run directory named in it is
    not read again (it may have changed since), but other keys are still compared."""
    from evores.core.errors import CheckpointError
    from evores.engine.session import Request, _resumed_config

    earlier_run(tmp_path / "earlier")
    toml = tmp_path / "warm.toml"
    toml.write_text(
        "[schedule]\nresolutions = [16, 32, 64]\nevaluations = [24, 14, 7]\nelites = 3\n"
        f"[search]\npopulation = 8\ninitial = {json.dumps(str(tmp_path / 'earlier'))}\n"
    )
    config = load_config(toml)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create(configuration.to_toml(config))
    shutil.rmtree(tmp_path / "earlier")
    earlier_run(tmp_path / "earlier", seed=1)  # the earlier directory now holds another run
    assert load_config(toml)["search"]["initial"] != config["search"]["initial"]
    again = Request(config=toml, resume=True, out=run_dir.path)
    assert _resumed_config(again, run_dir) == config
    edited = Request(config=toml, values={"seed": 5}, resume=True, out=run_dir.path)
    with pytest.raises(CheckpointError, match="with the config it was started with"):
        _resumed_config(edited, run_dir)
    inline = {"search": {"initial": GIVEN}}
    with pytest.raises(CheckpointError, match="with the config it was started with"):
        _resumed_config(Request(config=toml, values=inline, resume=True, out=run_dir.path), run_dir)
