"""Tests for evores.reporting.export: a finished and a stopped run as Optuna studies in sqlite."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_RUN

from evores import config as configuration
from evores.core.errors import ConfigError
from evores.strategies.space import SearchSpace

optuna = pytest.importorskip("optuna")


# The quick start's shape (three rungs, elites carried up, a fidelity probe at each stage change,
# the space narrowed), small, and with a fitness function that trains nothing.
QUICKSTART_SHAPE = [
    "schedule.resolutions=[8, 16, 32]",
    "schedule.evaluations=[12, 8, 6]",
    "search.population=6",
    "fitness.function=fitness_plugins:sometimes_raises",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """A finished run of the quick start's shape with failures (sometimes_raises), one of
    TINY_RUN killed in its second stage, and the time of day around them."""
    from conftest import cli_command

    base = tmp_path_factory.mktemp("export")
    out = {"started": time.time()}
    for name, overrides, env, code in (
        ("finished", QUICKSTART_SHAPE, {}, 0),
        ("stopped", [*TINY_RUN, "fitness.function=fitness_plugins:accuracy_from_seed_dies_once"],
         {"EVORES_TEST_DIE_AT": "8"}, 137),
    ):  # fmt: skip
        run_dir = base / name
        command, environment = cli_command(cache_dir, ["--out", str(run_dir)], overrides, env=env)
        result = subprocess.run(
            command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600
        )
        assert result.returncode == code, result.stderr
        out[name] = run_dir
    out["ended"] = time.time()
    return out


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evores.export", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def search_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "evaluations.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["kind"] == "search" and r["status"] != "interrupted"]


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """The finished run exported once by the command line (the tests only read it): the URL
    and the command's result."""
    url = f"sqlite:///{tmp_path_factory.mktemp('exported') / 'run.db'}"
    return url, export(str(runs["finished"]), "--optuna-storage", url)


STAGES = {"finished": [8, 16, 32], "stopped": [8, 16]}


def stage_names(which: str) -> list[str]:
    return [f"{which}/stage-{s}-{px}px" for s, px in enumerate(STAGES[which])]


@pytest.mark.parametrize("which", ["finished", "stopped"])
def test_a_run_exports_as_one_study_per_stage(runs, exported, tmp_path, which):
    run_dir = runs[which]
    if which == "finished":
        url, result = exported
    else:
        url = f"sqlite:///{tmp_path / 'run.db'}"
        result = export(str(run_dir), "--optuna-storage", url)
    assert result.returncode == 0, result.stderr
    names = stage_names(which)
    final = [f"{which}/final-{STAGES[which][-1]}px"] if which == "finished" else []
    assert result.stdout.split() == names + final
    records = search_records(run_dir)
    config = configuration.load(run_dir / "config.toml")
    wide = SearchSpace.from_dict(config["space"])
    for stage, name in enumerate(names):
        study = optuna.load_study(study_name=name, storage=url)
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        assert study.user_attrs["resolution"] == STAGES[which][stage]
        theirs = [r for r in records if r["key"][0] == stage]
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == len(theirs)
        for trial, record in zip(trials, theirs, strict=True):
            assert trial.user_attrs["key"] == record["key"]
            if record["status"] == "ok":
                assert trial.state == optuna.trial.TrialState.COMPLETE
                assert trial.value == record["val_accuracy"]
            else:
                assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None
            # The parameters give the genome back through the space's own suggest.
            fixed = optuna.trial.FixedTrial(trial.params)
            assert wide.suggest(fixed) == record["hparams"]
            lr = trial.distributions["learning_rate"]
            assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
            assert wide.learning_rate.low <= lr.low <= lr.high <= wide.learning_rate.high
            if stage == 0:
                assert (lr.low, lr.high) == (wide.learning_rate.low, wide.learning_rate.high)
            depth = trial.distributions["conv_layers"]
            assert isinstance(depth, optuna.distributions.IntDistribution)
    if which == "finished":
        states = [
            t.state for n in names for t in optuna.load_study(study_name=n, storage=url).trials
        ]
        assert optuna.trial.TrialState.FAIL in states  # sometimes_raises failed some
    else:
        assert 0 < len(optuna.load_study(study_name=names[1], storage=url).trials) < 4


def test_optuna_reads_the_quick_start_run_whole(runs, exported):
    """The quick start's run failed to export (a probe member of stage 2 drawn two stages
    below), a stage mixed two distributions per parameter so Optuna's intersection search
    space lost genes, every trial started and ended at the export, and the objective had no
    name (issue 24). Read back through Optuna's own API."""
    run_dir, url = runs["finished"], exported[0]
    records = search_records(run_dir)
    narrowed = SearchSpace.from_dict(
        json.loads((run_dir / "checkpoint.json").read_text())["state"]["search"]["space"]
    )
    strays = [r for r in records if r["key"][0] == 2 and not _inside(narrowed, r["hparams"])]
    # What failed the export before: probe members outside the space stage 2 narrowed to (and
    # outside stage 1's: drawn from stage 0's members that stage 1's probe re-evaluated).
    assert strays and all("probe_of" in r for r in strays)
    every_gene = {"learning_rate", "conv_layers", "conv_filters_0", "conv_kernels_0",
                  "fc_layers", "fc_units_0", "batch_size", "l1_zero", "l2_zero"}  # fmt: skip
    for stage, name in enumerate(stage_names("finished")):
        study = optuna.load_study(study_name=name, storage=url)
        assert study.metric_names == ["val_accuracy"]
        trials = study.get_trials(deepcopy=False)
        for param in set().union(*(t.params for t in trials)):
            assert len({repr(t.distributions[param]) for t in trials if param in t.params}) == 1
        # Only a parameter some completed trials lack (a deeper layer, a penalty of exactly 0)
        # is left out of the intersection: none for holding two distributions.
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        space = optuna.search_space.IntersectionSearchSpace().calculate(study)
        assert set(space) == set.intersection(*(set(t.params) for t in done)) >= every_gene
        evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=8, seed=0)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        assert set(importances) >= every_gene
        # The timeline: each trial ran when and as long as its evaluation did.
        theirs = [r for r in records if r["key"][0] == stage]
        for trial, record in zip(trials, theirs, strict=True):
            assert trial.user_attrs["time_from"] == "log"
            ran = (trial.datetime_complete - trial.datetime_start).total_seconds()
            assert ran == pytest.approx(record["wall_seconds"], abs=2e-3)
            assert trial.datetime_complete == datetime.datetime.fromtimestamp(record["logged_at"])
            assert runs["started"] <= trial.datetime_start.timestamp() <= runs["ended"]
    # The final retraining: its own study, scored by test accuracy, the winner marked.
    summary = json.loads((run_dir / "summary.json").read_text())
    final = optuna.load_study(study_name="finished/final-32px", storage=url)
    assert final.metric_names == ["test_accuracy"]
    assert [t.value for t in final.trials] == [
        c["test_accuracy"] for c in summary["final_candidates"]
    ]
    (winner,) = [t for t in final.trials if t.user_attrs["winner"]]
    assert winner.value == summary["test_accuracy"]
    assert winner.user_attrs["val_accuracy"] == summary["val_accuracy"]
    wide = SearchSpace.from_dict(configuration.load(run_dir / "config.toml")["space"])
    assert wide.suggest(optuna.trial.FixedTrial(winner.params)) == summary["best_hparams"]


def _inside(space: SearchSpace, hparams: dict) -> bool:
    try:
        space.validate(hparams)
    except ConfigError:
        return False
    return True


def test_a_log_of_an_earlier_evores_is_placed_on_the_run_clock(runs, tmp_path):
    """Records without logged_at (written before it) get times from the run's clock, ending
    when the log last changed: a timeline still, and said so."""
    copy = tmp_path / "earlier"
    shutil.copytree(runs["finished"], copy)
    log = copy / "evaluations.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "logged_at"}) + "\n"
                           for r in lines))  # fmt: skip
    from evores.reporting.export import export as export_run

    url = f"sqlite:///{tmp_path / 'run.db'}"
    export_run(copy, url)
    trials = optuna.load_study(study_name="earlier/stage-0-8px", storage=url).trials
    assert {t.user_attrs["time_from"] for t in trials} == {"run clock"}
    ends = [t.datetime_complete.timestamp() for t in trials]
    elapsed = [r["elapsed"] for r in lines if r["key"][0] == 0]
    last = log.stat().st_mtime - max(r["elapsed"] for r in lines)
    assert ends == pytest.approx([last + e for e in elapsed], abs=1e-3)


def test_exporting_twice_into_one_storage_is_refused_then_a_prefix_helps(runs, exported):
    url = exported[0]  # the run is in it already (other tests read only its own names)
    again = export(str(runs["finished"]), "--optuna-storage", url)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "--study-prefix" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    other = export(str(runs["finished"]), "--optuna-storage", url, "--study-prefix", "second")
    assert other.returncode == 0 and other.stdout.split()[0] == "second/stage-0-8px"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["{run}", "--optuna-storage", "no-such-scheme://x"], "cannot be opened"),
        (["{run}", "--optuna-storage", "sqlite:////no/such/folder/x.db"], "cannot be opened"),
        (["{tmp}", "--optuna-storage", "sqlite:///{tmp}/x.db"], "not an evores run directory"),
        (["{tmp}/absent", "--optuna-storage", "sqlite:///{tmp}/x.db"], "not an evores run"),
    ],
)
def test_a_bad_url_or_not_a_run_directory_is_one_line_and_exit_2(runs, tmp_path, args, fragment):
    filled = [a.format(run=runs["finished"], tmp=tmp_path) for a in args]
    before = sorted(p.name for p in runs["finished"].iterdir())
    result = export(*filled)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in runs["finished"].iterdir()) == before


def test_an_export_is_all_or_nothing(runs, tmp_path, monkeypatch):
    """A clash on the second stage's name left the first stage's study in the user's
    database; a storage that opens but cannot be written gave a traceback (issue 23, class 13)."""
    import optuna

    from evores.core.errors import ExportError
    from evores.reporting.export import export as export_run

    url = f"sqlite:///{tmp_path / 'run.db'}"
    first = export_run(runs["finished"], url, prefix="first")
    second = first[1]
    optuna.create_study(study_name=second.replace("first", "clash"), storage=url)
    with pytest.raises(ExportError, match="already exists.*nothing was written"):
        export_run(runs["finished"], url, prefix="clash")  # only its second stage clashes
    names = {s.study_name for s in optuna.get_all_study_summaries(storage=url)}
    assert len(names) == len(first) + 1  # those exported, the clashing one; nothing refused
    monkeypatch.setattr(
        optuna.study.Study, "add_trials", lambda *a, **k: (_ for _ in ()).throw(OSError("disk"))
    )
    with pytest.raises(ExportError, match="could not be written.*nothing was kept"):
        export_run(runs["finished"], url, prefix="third")
    assert {s.study_name for s in optuna.get_all_study_summaries(storage=url)} == names


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_storage_is_refused(runs, url):
    result = export(str(runs["finished"]), "--optuna-storage", url)
    assert result.returncode == 2 and "in-memory database" in result.stderr


def test_each_gene_takes_the_narrowest_range_that_holds_every_value_of_the_stage():
    from evores.core.errors import CheckpointError
    from evores.reporting.export import study_space

    genome = {"learning_rate": 0.01, "conv_filters": [16], "conv_kernels": [3], "fc_units": [64],
              "batch_size": 32, "l1": 0.0, "l2": 1e-4}  # fmt: skip
    wide = SearchSpace()
    narrow = wide.narrow([genome], 0.1)
    stray = {**genome, "learning_rate": 0.5}  # a probe member from the wider stage below
    assert not narrow.learning_rate.contains(0.5)
    records = [{"key": [1, 0, i], "hparams": h} for i, h in enumerate([genome, stray])]
    space = study_space([narrow, wide], records)
    assert space.learning_rate == wide.learning_rate
    assert space.conv_filters == narrow.conv_filters != wide.conv_filters
    assert study_space([narrow, wide], records[:1]) == narrow
    edited = [{"key": [1, 0, 2], "hparams": {**genome, "learning_rate": 5.0}}]
    with pytest.raises(CheckpointError, match=r"\[1, 0, 2\].*learning_rate.*edited after"):
        study_space([narrow, wide], edited)


def test_an_evaluation_a_per_epoch_hook_stopped_is_a_pruned_trial(tmp_path):
    from evores.reporting.export import SEARCH_METRIC, _Clock, _trial

    genome = {"learning_rate": 0.01, "conv_filters": [16], "conv_kernels": [3], "fc_units": [64],
              "batch_size": 32, "l1": 0.0, "l2": 1e-4}  # fmt: skip
    record = {"key": [0, 0, 1], "hparams": genome, "status": "pruned", "val_accuracy": 0.31,
              "epochs": 3, "wall_seconds": 2.0, "logged_at": 1.7e9}  # fmt: skip
    trial = _trial(SearchSpace(), record, SEARCH_METRIC, _Clock(tmp_path, [record]))
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.value is None
    assert trial.intermediate_values == {3: 0.31}
    assert trial.datetime_complete == datetime.datetime.fromtimestamp(1.7e9)
    study = optuna.create_study(direction="maximize")
    study.add_trial(trial)  # Optuna takes it as it is
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
