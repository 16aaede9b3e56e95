"""Tests for evores.reporting.export: a finished and a stopped run as Optuna studies in sqlite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY_RUN

from evores import config as configuration
from evores.strategies.space import SearchSpace
from evores.strategies.tpe import OutsideSpace, trial_params

optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """A finished run with failures (sometimes_raises) and one killed in its second stage."""
    from conftest import cli_command

    base = tmp_path_factory.mktemp("export")
    out = {}
    for name, plugin, env, code in (
        ("finished", "sometimes_raises", {}, 0),
        ("stopped", "accuracy_from_seed_dies_once", {"EVORES_TEST_DIE_AT": "8"}, 137),
    ):
        run_dir = base / name
        overrides = [*TINY_RUN, f"fitness.function=fitness_plugins:{plugin}"]
        command, environment = cli_command(cache_dir, ["--out", str(run_dir)], overrides, env=env)
        result = subprocess.run(
            command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600
        )
        assert result.returncode == code, result.stderr
        out[name] = run_dir
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


@pytest.mark.parametrize("which", ["finished", "stopped"])
def test_a_run_exports_as_one_study_per_stage(runs, tmp_path, which):
    run_dir = runs[which]
    url = f"sqlite:///{tmp_path / 'run.db'}"
    result = export(str(run_dir), "--optuna-storage", url)
    assert result.returncode == 0, result.stderr
    names = [f"{which}/stage-0-8px", f"{which}/stage-1-16px"]
    assert result.stdout.split() == names
    records = search_records(run_dir)
    config = configuration.load(run_dir / "config.toml")
    wide = SearchSpace.from_dict(config["space"])
    for stage, name in enumerate(names):
        study = optuna.load_study(study_name=name, storage=url)
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        assert study.user_attrs["resolution"] == [8, 16][stage]
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
        # Stage 1's distributions are the space the run narrowed to (its last checkpoint's).
        checkpoint = json.loads((run_dir / "checkpoint.json").read_text())["state"]["search"]
        narrowed = SearchSpace.from_dict(checkpoint["space"])
        assert narrowed != wide
        # A fidelity probe member outside the narrowed space (drawn in stage 0's) keeps
        # stage 0's distributions.
        outside = 0
        for trial in optuna.load_study(study_name=names[1], storage=url).trials:
            hparams = wide.suggest(optuna.trial.FixedTrial(trial.params))
            try:
                expected = trial_params(narrowed, hparams)[1]
            except OutsideSpace:
                assert "probe_of" in trial.user_attrs
                expected, outside = trial_params(wide, hparams)[1], outside + 1
            assert trial.distributions == expected
        assert outside > 0  # the fallback had teeth
    else:
        assert 0 < len(optuna.load_study(study_name=names[1], storage=url).trials) < 4


def test_exporting_twice_into_one_storage_is_refused_then_a_prefix_helps(runs, tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    assert export(str(runs["finished"]), "--optuna-storage", url).returncode == 0
    again = export(str(runs["finished"]), "--optuna-storage", url)
    assert again.returncode == 2 and "already exists" in again.stderr
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
    second = export_run(runs["finished"], url, prefix="first")[1]
    optuna.create_study(study_name=second.replace("first", "clash"), storage=url)
    with pytest.raises(ExportError, match="already exists.*nothing was written"):
        export_run(runs["finished"], url, prefix="clash")  # only its second stage clashes
    names = {s.study_name for s in optuna.get_all_study_summaries(storage=url)}
    assert len(names) == 3  # the two exported, the clashing one; nothing of the refused export
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
