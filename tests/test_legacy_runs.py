"""Run directories written by an earlier evores resume under this one, to the same result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import assert_same_result

LEGACY = Path(__file__).parent / "data" / "legacy-runs"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_run_stopped_under_the_previous_layout_resumes_to_its_uninterrupted_result(
    cli, tmp_path, mode
):
    run_dir = tmp_path / "run"
    shutil.copytree(LEGACY / f"{mode}-stopped", run_dir)
    resumed = cli("--out", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: stage" in resumed.stderr, resumed.stderr
    assert_same_result(run_dir, LEGACY / f"{mode}-uninterrupted")
