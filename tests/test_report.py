"""Tests for evores.report: the progress line's text, completed records, the plots (written
atomically, readable at a glance) and the provisional summary."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from evores import report
from evores.report import (
    _elites_label,
    completed,
    format_progress,
    plot_elites,
    plot_progress,
    progress_series,
)

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
        report._save(figure, path)
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
        "import evores.report as r\n"
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
    assert report.time_unit(20.0) == ("seconds", 1.0)
    assert report.time_unit(300.0) == ("minutes", 60.0)
    assert report.time_unit(3 * 3600.0) == ("hours", 3600.0)
    fig = report.progress_figure(short_run(), on_time=True)
    assert fig.axes[0].get_xlabel() == "wall time (seconds)"


def test_evaluation_ticks_are_whole_numbers():
    fig = report.progress_figure(short_run(), on_time=False)
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_stage_labels_of_short_stages_do_not_overlap():
    for on_time in (False, True):
        fig = report.progress_figure(short_run(), on_time)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [text.get_window_extent(renderer) for text in fig.axes[0].texts]
        assert len(boxes) == 3
        for i, box in enumerate(boxes):
            assert not any(box.overlaps(other) for other in boxes[i + 1 :])


def test_the_best_line_is_drawn_over_the_median():
    # A constant stage: best and median coincide, and the best must stay visible.
    ax = report.progress_figure(short_run(), on_time=False).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    best, middle = lines["best in stage"], lines["median in stage"]
    assert best.get_zorder() > middle.get_zorder()
    assert best.get_linewidth() > middle.get_linewidth()
