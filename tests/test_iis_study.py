"""experiments/iis_study.py on the embedded data with tiny budgets: the table, study.json,
and a rerun that skips the finished runs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "iis_study.py"
TINY = ["--data", "embedded", "--strategies", "random,ga", "--seeds", "1", "--evaluations",
        "6", "--resolutions", "8,16", "--epochs", "1", "--patience", "1", "--population", "2",
        "--elites", "2", "--jobs", "2"]  # fmt: skip


def study(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--out", str(out), *TINY, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_study_table_json_and_rerun_skips(tmp_path):
    out = tmp_path / "study"
    first = study(out)
    assert first.returncode == 0, first.stderr + first.stdout
    lines = first.stdout.splitlines()
    for strategy in ("random", "ga"):
        for schedule in ("ladder", "full"):
            assert any(line.split()[:2] == [strategy, schedule] for line in lines), first.stdout
    assert any("8 -> 16" in line for line in lines), first.stdout
    result = json.loads((out / "study.json").read_text())
    rows = {(r["strategy"], r["schedule"]): r for r in result["rows"]}
    assert set(rows) == {(s, sch) for s in ("random", "ga") for sch in ("ladder", "full")}
    for row in rows.values():
        assert row["finished"] == 1 and row["cpu_seconds"] > 0
        assert 0 <= row["test_accuracy"] <= 1
    ladder, full = rows["random", "ladder"], rows["random", "full"]
    assert ladder["cost_ratio"] == ladder["cpu_seconds"] / full["cpu_seconds"]
    assert ladder["accuracy_difference"] == ladder["test_accuracy"] - full["test_accuracy"]
    assert len(result["transitions"]) == 2 and all(t["from"] == 8 for t in result["transitions"])
    summary = json.loads((out / "random-ladder-seed0" / "summary.json").read_text())
    assert [s["n_evaluations"] for s in summary["stages"]] == [4, 2]  # Hinz's split, 2:1
    full_summary = json.loads((out / "random-full-seed0" / "summary.json").read_text())
    assert [s["n_evaluations"] for s in full_summary["stages"]] == [6]
    assert (out / "study.png").stat().st_size > 0

    second = study(out)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("finished before, skipped") == 4, second.stdout
    again = json.loads((out / "study.json").read_text())
    assert again["rows"] == result["rows"]  # nothing re-run, nothing re-measured


def test_unknown_strategy_exits_2(tmp_path):
    run = study(tmp_path / "s", "--strategies", "random,nosuch")
    assert run.returncode == 2
    assert "nosuch" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
