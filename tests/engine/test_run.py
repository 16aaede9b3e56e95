"""The CLI and the run directory: bad input, fresh/resume rules, end-to-end runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import (
    TINY_RUN,
    assert_same_result,
    evaluations,
    require_mpiexec,
    shared_dataset,
    summary,
)
from PIL import Image


def make_folder(root: Path, classes=("a", "b"), per_class=4, size=(24, 24)) -> Path:
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            colour = (index * 120, i * 30, 200 - index * 90)
            Image.new("RGB", size, colour).save(root / name / f"{i}.png")
    return root


def assert_refused(result, fragment: str, run_dir: Path):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evores: error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in lines[0], lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["bogus.key=1"], "unknown key 'bogus'"),
        (["train.max_epochs=many"], "train.max_epochs must be int"),
        (["space.filters=[64, 8]"], "filters"),
        (["data.filter=sharp"], "use one of nearest, box"),
        (["data.path=/nonexistent/images"], "/nonexistent/images"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(cli, tmp_path, overrides, fragment):
    run_dir = tmp_path / "run"
    assert_refused(cli("--out", str(run_dir), overrides=overrides), fragment, run_dir)


def test_config_file_that_is_not_toml(cli, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("this is not toml\n")
    run_dir = tmp_path / "run"
    assert_refused(cli("--config", str(config), "--out", str(run_dir)), "not valid TOML", run_dir)


def test_bad_datasets_are_refused(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    single = make_folder(tmp_path / "single", classes=("only",))
    small = make_folder(tmp_path / "small", per_class=6, size=(12, 12))
    cases = [
        (empty, [], str(empty)),
        (single, [], "class"),
        (small, ["schedule.resolutions=[16, 32]", "schedule.evaluations=[8, 4]"], "px"),
    ]
    for folder, extra, fragment in cases:
        run_dir = tmp_path / f"run-{folder.name}"
        result = cli("--out", str(run_dir), overrides=[f"data.path={folder}", *extra])
        assert_refused(result, fragment, run_dir)


def test_fresh_run_into_a_non_empty_directory_is_refused(cli, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    result = cli("--out", str(run_dir), overrides=TINY_RUN)
    assert result.returncode == 2 and "not empty" in result.stderr
    assert [p.name for p in run_dir.iterdir()] == ["precious.txt"]
    result = cli("--out", str(tmp_path / "nothing"), "--resume")
    assert result.returncode == 2 and "nothing to resume" in result.stderr


@pytest.mark.slow
def test_end_to_end_on_embedded_data(tiny_run):
    run_dir, result = tiny_run
    names = ("config.toml", "evaluations.jsonl", "checkpoint.json", "summary.json",
             "progress_evaluations.png", "progress_time.png", "elites_low_vs_high.png",
             "importance.json", "importance.png")  # fmt: skip
    for name in names:
        assert (run_dir / name).is_file(), name
    result_summary = summary(run_dir)
    assert result_summary["test_resolution"] == 16
    assert result_summary["n_evaluations"] == 10
    assert 0.0 <= result_summary["test_accuracy"] <= 1.0
    assert [s["resolution"] for s in result_summary["stages"]] == [8, 16]
    assert result_summary["stages"][0]["rank_correlation"] is None
    assert "rank_correlation" in result_summary["stages"][1]
    records = [
        json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()
    ]
    for field in ("hparams", "resolution", "stage", "generation", "status", "val_accuracy",
                  "wall_seconds", "rank", "seed"):  # fmt: skip
        assert all(field in record for record in records), field
    assert sum(r["kind"] == "final" for r in records) == 2
    assert "stage 2/2" in result.stderr and "eta" in result.stderr


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(cli, tmp_path):
    plugin = ["fitness.function=fitness_plugins:dies_hard_once"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli("--out", str(whole), overrides=TINY_RUN + plugin).returncode == 0
    died = cli("--out", str(broken), overrides=TINY_RUN + plugin, env={"EVORES_TEST_DIE_AT": "8"})
    assert died.returncode != 0
    assert not (broken / "summary.json").exists()
    done_before = len((broken / "evaluations.jsonl").read_text().splitlines())
    assert done_before == 7
    resumed = cli("--out", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "reusing 1 evaluations" in resumed.stderr
    assert_same_result(broken, whole)


@pytest.mark.slow
@pytest.mark.mpi
def test_mpi_run_equals_serial_run(cli, tmp_path, tiny_run):
    # With the default train.threads (TINY_RUN does not pin it), as the README promises.
    require_mpiexec()
    assert not any(item.startswith("train.threads") for item in TINY_RUN)
    serial_dir, _ = tiny_run
    mpi_dir = tmp_path / "mpi"
    # The ranks read every rung through a memory map (a budget of 1 byte), the serial run
    # holds them in memory: the same bytes make the same batches, so the same run.
    mapped = [*TINY_RUN, "data.memory_budget=1"]
    result = cli("--out", str(mpi_dir), overrides=mapped, mpi_ranks=3)
    assert result.returncode == 0, result.stderr
    assert evaluations(mpi_dir) == evaluations(serial_dir)
    assert summary(mpi_dir)["best_hparams"] == summary(serial_dir)["best_hparams"]
    assert summary(mpi_dir)["test_accuracy"] == summary(serial_dir)["test_accuracy"]
    ranks = {json.loads(line)["rank"] for line in (mpi_dir / "evaluations.jsonl").open()}
    assert ranks == {1, 2}


@pytest.mark.slow
def test_end_to_end_on_hymenoptera(cli, tmp_path):
    folder = shared_dataset("hymenoptera")
    run_dir = tmp_path / "run"
    overrides = [*TINY_RUN, f"data.path={folder}", "schedule.resolutions=[16, 32]"]
    result = cli("--out", str(run_dir), overrides=overrides)
    assert result.returncode == 0, result.stderr
    result_summary = summary(run_dir)
    assert result_summary["data"]["classes"] == ["ants", "bees"]
    assert result_summary["test_resolution"] == 32
    assert 0.0 <= result_summary["test_accuracy"] <= 1.0


def test_failing_evaluations_never_stop_the_run(cli, tmp_path):
    run_dir = tmp_path / "run"
    plugin = ["fitness.function=fitness_plugins:sometimes_raises"]
    result = cli("--out", str(run_dir), overrides=TINY_RUN + plugin)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    failed = [r for r in records if r["status"] == "failed"]
    assert failed, "the plugin should have failed some evaluations"
    assert all(r["failure"] == "exception" and "user model broke" in r["reason"] for r in failed)
    assert all(r["val_accuracy"] == 0.0 for r in failed)
    assert summary(run_dir)["failures"] == {"exception": len(failed)}
    assert summary(run_dir)["n_evaluations"] == 10


ASYNC = ["search.asynchronous=true"]


@pytest.mark.slow
def test_asynchronous_run_resumed_serially_equals_uninterrupted(cli, tmp_path):
    plugin = ["fitness.function=fitness_plugins:dies_hard_once"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli("--out", str(whole), overrides=TINY_RUN + ASYNC + plugin).returncode == 0
    died = cli("--out", str(broken), overrides=TINY_RUN + ASYNC + plugin,
               env={"EVORES_TEST_DIE_AT": "8"})  # fmt: skip
    assert died.returncode != 0 and not (broken / "summary.json").exists()
    resumed = cli("--out", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(broken, whole)


@pytest.mark.slow
@pytest.mark.mpi
def test_asynchronous_run_under_mpi_keeps_the_budget_and_the_contract(cli, tmp_path):
    require_mpiexec()
    run_dir = tmp_path / "run"
    result = cli("--out", str(run_dir), overrides=TINY_RUN + ASYNC, mpi_ranks=3)
    assert result.returncode == 0, result.stderr
    run_summary = summary(run_dir)
    assert [s["n_evaluations"] for s in run_summary["stages"]] == [6, 4]
    assert run_summary["n_evaluations"] == 10 and 0.0 <= run_summary["test_accuracy"] <= 1.0
    assert len(run_summary["transitions"]) == 1
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    assert {r["rank"] for r in records} == {1, 2}
    assert sum(r["kind"] == "final" for r in records) == 2
    assert len({tuple(r["key"]) for r in records}) == len(records) == 12


@pytest.mark.parametrize(
    "env, overrides, fragment",
    [
        ({"SLURM_JOB_ID": "9", "SLURM_PROCID": "5", "SLURM_NTASKS": "2"}, [], "SLURM_PROCID=5"),
        ({}, ["train.device=cuda:0"], "CUDA is not available"),
        ({}, ['slurm.time="3"', "train.max_seconds=120"], "one evaluation"),
    ],
)
def test_bad_job_environment_is_one_line_and_exit_2(cli, tmp_path, env, overrides, fragment):
    run_dir = tmp_path / "run"
    result = cli("--out", str(run_dir), overrides=TINY_RUN + overrides, env=env)
    assert_refused(result, fragment, run_dir)


@pytest.mark.mpi
def test_a_single_rank_under_mpiexec_runs_serially_with_a_warning(cli, tmp_path):
    require_mpiexec()
    run_dir = tmp_path / "run"
    plugin = ["fitness.function=fitness_plugins:accuracy_from_seed"]
    result = cli("--out", str(run_dir), overrides=TINY_RUN + plugin, mpi_ranks=1)
    assert result.returncode == 0, result.stderr
    assert "running serially" in result.stderr
    assert summary(run_dir)["n_evaluations"] == 10


def test_unusable_places_on_disk_are_one_line_and_exit_2(cli, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    result = cli("--out", str(a_file), overrides=TINY_RUN)
    assert result.returncode == 2 and "is a file, not a directory" in result.stderr
    assert a_file.read_text() == "keep me"
    run_dir = tmp_path / "run"
    result = cli("--out", str(run_dir), overrides=TINY_RUN, env={"EVORES_CACHE_DIR": str(a_file)})
    assert_refused(result, "cannot create the dataset cache folder", run_dir)
    result = cli("--out", str(a_file / "run"), overrides=TINY_RUN)
    assert result.returncode == 2 and "cannot write the run directory" in result.stderr
    result = cli("--config", str(tmp_path), "--out", str(run_dir))
    assert_refused(result, "is a directory", run_dir)


def test_by_default_a_serial_run_and_every_mpi_worker_train_with_the_same_threads():
    # Another thread count changes the weights a training gives (BLAS splits reductions by
    # thread), so the promise "the same run at any number of ranks" rests on this.
    import torch

    from evores import config as configuration
    from evores.engine import session as run

    before = torch.get_num_threads()
    try:
        default = configuration.load()
        threads = []
        for workers in (1, 2, 15):  # serial; the workers of mpiexec -n 3 and -n 16 on a node
            run._set_threads(default, workers=workers)
            threads.append(torch.get_num_threads())
        assert threads == [default["train"]["threads"]] * 3 == [1, 1, 1]
    finally:
        torch.set_num_threads(before)
