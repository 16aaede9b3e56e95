"""Tests for evores.reporting.summary: the progress line's text, completed records, the plots
(written
atomically, readable at a glance) and the provisional summary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import evores
from evores.report import main as report_command
from evores.reporting import plots
from evores.reporting.plots import _elites_label, plot_elites, plot_progress, progress_series
from evores.reporting.summary import completed, format_progress

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


# --- format_progress --------------------------------------------------------------------------


def test_format_progress_matches_the_documented_line():
    line = format_progress(2, 3, 64, 40, 72, 0.8123, 0.64, 192.0, 100.0)
    assert line == (
        "stage 2/3  64 px  evals 40/72  best 0.812  median 0.640  elapsed 3m12s  eta 1m40s"
    )


def test_format_progress_unknowns_and_long_durations():
    line = format_progress(1, 1, 32, 0, 10, None, None, 7265.0, None)
    assert line == "stage 1/1  32 px  evals 0/10  best -  median -  elapsed 2h01m  eta ?"
    assert format_progress(1, 2, 16, 3, 8, 0.5, 0.5, 5.4, 0.0).endswith("elapsed 5s  eta 0s")


def test_completed_keeps_the_latest_finished_record_of_each_evaluation():
    records = [
        {"key": [0, 0, 0], "status": "ok", "val_accuracy": 0.1},
        {"key": [0, 0, 1], "status": "interrupted"},
        {"key": [0, 0, 0], "status": "ok", "val_accuracy": 0.1},  # logged again around a crash
        {"key": [0, 0, 1], "status": "failed", "failure": "oom"},  # the re-run
        {"key": [0, 0, 2], "status": "interrupted"},  # not re-run yet
    ]
    assert completed(records) == [records[2], records[3]]


class FailingFigure:
    """Stands in for a matplotlib Figure whose rendering fails half way."""

    cleared = False

    def savefig(self, path, format):
        with open(path, "wb") as handle:
            handle.write(b"half a png")
        raise RuntimeError("rendering failed")

    def clear(self):
        self.cleared = True


def test_a_plot_that_fails_to_render_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"the previous plot")
    figure = FailingFigure()
    with pytest.raises(RuntimeError, match="rendering failed"):
        plots._save(figure, path)
    assert path.read_bytes() == b"the previous plot" and figure.cleared
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


# --- plots ------------------------------------------------------------------------------------


def make_records(stages=((16, 6), (32, 5)), fail_every: int = 0) -> list[dict]:
    """Search records shaped like evaluations.jsonl lines, in completion order."""
    rng = np.random.default_rng(0)
    records, elapsed, n = [], 0.0, 0
    for stage, (resolution, count) in enumerate(stages):
        for i in range(count):
            n += 1
            elapsed += float(rng.uniform(5, 30))
            failed = fail_every and n % fail_every == 0
            records.append(
                {
                    "key": [stage, i // 3, i % 3],
                    "kind": "search",
                    "stage": stage,
                    "resolution": resolution,
                    "elapsed": elapsed,
                    "status": "failed" if failed else "ok",
                    "val_accuracy": 0.0 if failed else float(rng.uniform(0.2, 0.9)),
                }
            )
    records.append({**records[-1], "kind": "final", "key": [9, 0, 0]})  # must be ignored
    return records


def test_progress_series_is_per_stage_and_skips_failures():
    records = [
        {"stage": 0, "resolution": 16, "elapsed": 60, "status": "ok", "val_accuracy": 0.4},
        {"stage": 0, "resolution": 16, "elapsed": 120, "status": "failed", "val_accuracy": 0.0},
        {"stage": 0, "resolution": 16, "elapsed": 180, "status": "ok", "val_accuracy": 0.6},
        {"stage": 1, "resolution": 32, "elapsed": 240, "status": "failed", "val_accuracy": 0.0},
        {"stage": 1, "resolution": 32, "elapsed": 300, "status": "ok", "val_accuracy": 0.3},
        {"stage": 1, "kind": "final", "resolution": 32, "elapsed": 360, "status": "ok",
         "val_accuracy": 0.99},
    ]  # fmt: skip
    series = progress_series(records)
    assert series["evaluations"].tolist() == [1, 2, 3, 4, 5]
    assert series["minutes"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(series["best"], [0.4, 0.4, 0.6, np.nan, 0.3])
    np.testing.assert_allclose(series["median"], [0.4, 0.4, 0.5, np.nan, 0.3])


@pytest.mark.parametrize(
    "records",
    [
        make_records(),
        make_records(fail_every=3),
        make_records(stages=((32, 7),)),
        make_records(stages=((16, 1), (32, 1), (64, 1))),
        [],
    ],
    ids=["normal", "with-failures", "single-stage", "one-per-stage", "empty"],
)
def test_plot_progress_writes_two_pngs(tmp_path, records):
    plot_progress(records, tmp_path / "evaluations.png", tmp_path / "time.png")
    assert_png(tmp_path / "evaluations.png")
    assert_png(tmp_path / "time.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluations.png", "time.png"]


def test_plot_progress_all_failed_stage(tmp_path):
    records = make_records(stages=((16, 3),), fail_every=1)
    plot_progress(records, tmp_path / "e.png", tmp_path / "t.png")
    assert_png(tmp_path / "e.png")


def test_plot_elites_writes_png(tmp_path):
    transitions = [
        {"from_resolution": 16, "to_resolution": 32, "low": [0.5, 0.6, 0.7],
         "high": [0.55, 0.7, 0.65], "rank_correlation": 0.5},
        {"from_resolution": 32, "to_resolution": 64, "low": [0.6, 0.62],
         "high": [0.7, 0.0], "rank_correlation": None},
        {"from_resolution": 64, "to_resolution": 128, "low": [0.8], "high": [0.82],
         "rank_correlation": None},
    ]  # fmt: skip
    plot_elites(transitions, tmp_path / "elites.png")
    assert_png(tmp_path / "elites.png")


def test_plot_elites_shows_the_probe_the_interval_and_the_failures_left_out(tmp_path):
    transition = {
        "from_resolution": 16, "to_resolution": 32, "low": [0.7, 0.5, 0.4], "high": [0.6, 0.5, 0.3],
        "rank_correlation": 1.0, "spearman": 1.0, "interval": [0.38, 0.9], "n": 3,
        "n_failed": 2,
        "pairs": [{"role": "elite", "low": 0.7, "high": 0.6},
                  {"role": "elite", "low": 0.65, "high": None},
                  {"role": "probe", "low": 0.5, "high": 0.5},
                  {"role": "probe", "low": None, "high": 0.45},
                  {"role": "probe", "low": 0.4, "high": 0.3}],
    }  # fmt: skip
    assert _elites_label(transition, transition["low"], transition["high"]) == (
        "16 → 32 px  (ρ = 1.00 [0.38, 0.90], n 3, 2 failed)"
    )
    plot_elites([transition], tmp_path / "elites.png")
    assert_png(tmp_path / "elites.png")


def test_plot_elites_without_transitions_writes_a_placeholder(tmp_path):
    plot_elites([], tmp_path / "elites.png")
    assert_png(tmp_path / "elites.png")


def test_plot_elites_rejects_mismatched_lengths(tmp_path):
    bad = [{"from_resolution": 16, "to_resolution": 32, "low": [0.5], "high": [0.5, 0.6]}]
    with pytest.raises(ValueError, match="1 low and 2 high"):
        plot_elites(bad, tmp_path / "elites.png")
    assert not (tmp_path / "elites.png").exists()


def test_plotting_leaves_no_pyplot_state_and_import_is_light(tmp_path):
    code = (
        "import sys\n"
        "import evores.reporting.plots as r\n"
        "assert 'matplotlib' not in sys.modules, 'import loaded matplotlib'\n"
        f"r.plot_elites([], {str(tmp_path / 'x.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was used'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert_png(tmp_path / "x.png")


# --- what the progress plots look like -------------------------------------------------------


def short_run(seconds_per_evaluation: float = 1.0) -> dict:
    """A 20-second run whose first two stages are one evaluation each (the labels crowd)."""
    records = [
        {"stage": stage, "resolution": resolution, "elapsed": (n + 1) * seconds_per_evaluation,
         "status": "ok", "val_accuracy": 0.5, "kind": "search"}
        for n, (stage, resolution) in enumerate([(0, 16), (1, 32)] + [(2, 64)] * 18)
    ]  # fmt: skip
    return progress_series(records)


def test_a_short_run_is_plotted_in_seconds_a_long_one_in_minutes_or_hours():
    assert plots.time_unit(20.0) == ("seconds", 1.0)
    assert plots.time_unit(300.0) == ("minutes", 60.0)
    assert plots.time_unit(3 * 3600.0) == ("hours", 3600.0)
    fig = plots.progress_figure(short_run(), on_time=True)
    assert fig.axes[0].get_xlabel() == "wall time (seconds)"


def test_evaluation_ticks_are_whole_numbers():
    fig = plots.progress_figure(short_run(), on_time=False)
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_stage_labels_of_short_stages_do_not_overlap():
    for on_time in (False, True):
        fig = plots.progress_figure(short_run(), on_time)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [text.get_window_extent(renderer) for text in fig.axes[0].texts]
        assert len(boxes) == 3
        for i, box in enumerate(boxes):
            assert not any(box.overlaps(other) for other in boxes[i + 1 :])


def test_the_best_line_is_drawn_over_the_median():
    # A constant stage: best and median coincide, and the best must stay visible.
    ax = plots.progress_figure(short_run(), on_time=False).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    best, middle = lines["best in stage"], lines["median in stage"]
    assert best.get_zorder() > middle.get_zorder()
    assert best.get_linewidth() > middle.get_linewidth()


# --- python -m evores.report RUN_DIR ---------------------------------------------------------

# A run that trains nothing (only the learning rate scores), big enough for one stage's
# importance: 12 evaluations at 8 px, 6 at 16 px.
PLANTED_RUN = {
    "schedule": {"resolutions": [8, 16], "evaluations": [12, 6], "elites": 2},
    "search": {"population": 4, "elitism": 1},
    "train": {"threads": 1},
}
PLANTED = "fitness_plugins:accuracy_from_learning_rate"
REPORTED = ["progress_evaluations.png", "progress_time.png", "elites_low_vs_high.png",
            "importance.json", "importance.png"]  # fmt: skip


def contents(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVORES_CACHE_DIR", str(cache_dir))
        evores_search(run_dir, PLANTED)
    return run_dir


def evores_search(run_dir, function: str) -> None:
    evores.search(out=run_dir, fitness={"function": function}, **PLANTED_RUN)


def copied(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


def test_recomputing_a_finished_run_reproduces_its_summary_and_importance(
    finished_run, tmp_path, capsys
):
    run_dir = copied(finished_run, tmp_path)
    before = contents(run_dir)
    for name in REPORTED:
        (run_dir / name).unlink()
    assert report_command([str(run_dir)]) == 0
    after = contents(run_dir)
    assert after == before  # summary.json untouched, importance.json rewritten identically
    assert json.loads(after["importance.json"])["stages"][0]["importance"] is not None
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{run_dir}: summary.json reproduced;") and "importance.png" in line


def test_a_finished_summary_that_differs_from_the_log_is_kept_and_the_difference_named(
    finished_run, tmp_path, capsys
):
    run_dir = copied(finished_run, tmp_path)
    stored = json.loads((run_dir / "summary.json").read_text())
    tampered = {**stored, "n_evaluations": 999}
    (run_dir / "summary.json").write_text(json.dumps(tampered))
    assert report_command([str(run_dir)]) == 1
    assert json.loads((run_dir / "summary.json").read_text()) == tampered
    assert json.loads((run_dir / "summary.recomputed.json").read_text()) == stored
    err = capsys.readouterr().err
    assert "differs from its recomputation in n_evaluations;" in err and len(err.splitlines()) == 1


def test_an_asynchronous_run_is_reproduced_too(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("EVORES_CACHE_DIR", str(cache_dir))
    run_dir = tmp_path / "run"
    settings = {**PLANTED_RUN, "search": {**PLANTED_RUN["search"], "asynchronous": True}}
    evores.search(out=run_dir, fitness={"function": PLANTED}, **settings)
    before = contents(run_dir)
    assert report_command([str(run_dir)]) == 0
    assert contents(run_dir) == before


def test_a_directory_a_live_run_holds_is_refused(finished_run, tmp_path, capsys):
    run_dir = copied(finished_run, tmp_path)
    # A holder on another node cannot be checked from here, so it counts as alive.
    (run_dir / "lock.json").write_text('{"host": "another-node", "pid": 1, "job": ""}')
    before = contents(run_dir)
    assert report_command([str(run_dir)]) == 2
    assert "in use by a live run" in capsys.readouterr().err
    assert contents(run_dir) == before


def test_recomputing_a_stopped_run_refreshes_its_provisional_summary(
    tmp_path, cache_dir, monkeypatch
):
    import fitness_plugins

    from evores.execution.stopping import RunStopped

    monkeypatch.setenv("EVORES_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("EVORES_TEST_STOP_AT", "14")  # in stage 2, mid-generation
    monkeypatch.setattr(fitness_plugins, "_stop_calls", 0)
    run_dir = tmp_path / "run"
    with pytest.raises(RunStopped):
        evores_search(run_dir, "fitness_plugins:accuracy_from_learning_rate_stops")
    written = json.loads((run_dir / "summary.provisional.json").read_text())
    importance = (run_dir / "importance.json").read_bytes()
    (run_dir / "summary.provisional.json").unlink()
    (run_dir / "importance.json").unlink()
    assert report_command([str(run_dir)]) == 0
    again = json.loads((run_dir / "summary.provisional.json").read_text())
    assert {**again, "wall_seconds": 0} == {**written, "wall_seconds": 0}
    assert again["provisional"] and 0 < again["wall_seconds"] <= written["wall_seconds"]
    assert not (run_dir / "summary.json").exists() and "lock.json" not in contents(run_dir)
    assert (run_dir / "importance.json").read_bytes() == importance


def test_recomputing_a_killed_run_reports_as_far_as_it_got(cli, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        "schedule.resolutions=[8, 16]", "schedule.evaluations=[12, 6]", "search.population=4",
        "search.elitism=1", "schedule.elites=2", "train.threads=1",
        "fitness.function=fitness_plugins:accuracy_from_seed_dies_once",
    ]  # fmt: skip
    killed = cli("--out", str(run_dir), overrides=overrides, env={"EVORES_TEST_DIE_AT": "7"})
    assert killed.returncode == 137, killed.stderr
    assert (run_dir / "lock.json").exists() and not (run_dir / "summary.provisional.json").exists()
    done = subprocess.run([sys.executable, "-m", "evores.report", str(run_dir)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "summary.provisional.json written (the run is unfinished)" in done.stdout
    summary = json.loads((run_dir / "summary.provisional.json").read_text())
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())["state"]
    assert summary["n_evaluations"] == checkpoint["search"]["n_evaluations"] == 4
    assert summary["provisional"] and summary["best_hparams"] is None
    assert summary["wall_seconds"] >= checkpoint["elapsed"]
    importance = json.loads((run_dir / "importance.json").read_text())
    assert [s["n_evaluations"] for s in importance["stages"]] == [6]  # the log's, not 4
    assert importance["stages"][0]["reason"].startswith("6 successful evaluation(s)")
    for name in REPORTED:
        assert (run_dir / name).is_file()
    assert not (run_dir / "lock.json").exists()  # the dead run's lock, taken over and released


def test_a_run_killed_before_data_reports_were_kept_gets_plots_and_importance(tmp_path, capsys):
    from conftest import ROOT

    run_dir = shutil.copytree(ROOT / "tests" / "data" / "legacy-runs" / "sync-stopped",
                              tmp_path / "run")  # fmt: skip
    assert report_command([str(run_dir)]) == 0
    assert "no summary: the run predates data_report.json" in capsys.readouterr().out
    assert not any(run_dir.glob("summary*.json"))
    for name in REPORTED:
        assert (run_dir / name).is_file()
    stages = json.loads((run_dir / "importance.json").read_text())["stages"]
    assert [s["n_evaluations"] for s in stages] == [8]  # killed at the 9th call


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(finished_run, tmp_path, capsys):
    (tmp_path / "a file").write_text("not a run")
    (tmp_path / "empty").mkdir()
    no_log = tmp_path / "no log"
    no_log.mkdir()
    (no_log / "config.toml").write_text("seed = 1\n")
    bad_config = copied(finished_run, tmp_path)
    (bad_config / "config.toml").write_text("seed = = 1\n")
    bad_summary = shutil.copytree(finished_run, tmp_path / "bad summary")
    (bad_summary / "summary.json").write_text('{"n_evaluations": 1')
    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path / "a file": "is a file",
        tmp_path / "empty": "has no config.toml",
        no_log: "has no evaluations.jsonl",
        bad_config: "is not valid TOML",
        bad_summary: "summary.json is damaged",
    }
    for path, problem in cases.items():
        before = contents(path) if path.is_dir() else None
        assert report_command([str(path)]) == 2, path
        err = capsys.readouterr().err
        assert err.startswith("evores: error: ") and problem in err, err
        assert len(err.splitlines()) == 1, err
        assert (contents(path) if path.is_dir() else None) == before
    missing = subprocess.run([sys.executable, "-m", "evores.report", str(tmp_path / "missing")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr


def test_the_summary_holds_the_baseline_and_a_summary_from_before_it_still_reproduces(
    finished_run, tmp_path, capsys
):
    stored = json.loads((finished_run / "summary.json").read_text())
    counts = json.loads((finished_run / "data_report.json").read_text())["report"]["class_counts"]
    classes = stored["data"]["classes"]
    for split in ("val", "test"):
        most = int(np.argmax(counts[split]))
        assert stored["baseline"][f"{split}_accuracy"] == counts[split][most] / sum(counts[split])
        assert stored["baseline"][f"{split}_class"] == classes[most]
    below = stored["test_accuracy"] <= stored["baseline"]["test_accuracy"]
    assert len(stored["warnings"]) == below + (
        stored["val_accuracy"] <= stored["baseline"]["val_accuracy"]
    )
    # A run finished by an earlier evores wrote neither key: `evores report` reproduces it.
    run_dir = copied(finished_run, tmp_path)
    earlier = {k: v for k, v in stored.items() if k not in ("baseline", "warnings")}
    (run_dir / "summary.json").write_text(json.dumps(earlier))
    assert report_command([str(run_dir)]) == 0
    assert "summary.json reproduced" in capsys.readouterr().out


def test_a_data_report_without_class_counts_reports_no_baseline():
    from evores import config as configuration
    from evores.reporting.summary import summary
    from evores.store.rundir import RunData
    from evores.strategies.ladder import DONE, Progress

    config = configuration.load()
    progress = Progress(DONE, 0, (8,), (1,), 1, 1, 0.0, (0.4,), (), (), ())
    winner = {"hparams": {}, "val_accuracy": 0.4, "test_accuracy": 0.0}
    data = RunData(["a", "b"], {"n_images": 10})  # what an earlier evores kept
    made = summary(config, progress, winner, [], data, 1.0)
    assert made["baseline"] is None and made["warnings"] == []
    data = RunData(["a", "b", "c"], {"class_counts": {"val": [1, 1, 1], "test": [2, 2, 0]}})
    made = summary(config, progress, winner, [], data, 1.0)
    assert made["baseline"]["test_accuracy"] == 0.5 and len(made["warnings"]) == 1
