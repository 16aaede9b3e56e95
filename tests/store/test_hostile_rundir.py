"""Run directories a hostile user damages, edits, races for or names badly.

A damaged checkpoint falls back to the previous one or is refused in one line; log records
with wrong types are set aside and re-evaluated, never used; a log that lost evaluations is
refused; a config.toml edited under a stopped run is refused naming the keys; two runs racing
for one directory leave the winner's config; and the small things: an empty --out, --resume
without --out, a BOM, non-finite numbers, hints that cannot help, stale temporary files, a
data report that changed with the shared cache, and --out checked before the cache is built.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_result, cli_command, summary
from PIL import Image

from evores import config as configuration
from evores.core.errors import CheckpointError, ConfigError, DataError
from evores.core.results import INTERRUPTED, record_problems
from evores.data.cache import open_cache, read_cache
from evores.store.checkpoint import CHECKPOINT, CONFIG, EVALUATIONS, LOCK, PREVIOUS, RunDirectory

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "data" / "legacy-runs"

# The run of tests/data/legacy-runs: a search that trains nothing, so every run takes seconds.
PLUGIN_RUN = [
    "schedule.resolutions=[8, 16]",
    "schedule.evaluations=[12, 8]",
    "search.population=4",
    "search.elitism=1",
    "schedule.elites=2",
    "schedule.probe=0",  # the legacy runs predate the fidelity probe
    "train.threads=1",
    "fitness.function=fitness_plugins:accuracy_from_seed_dies_once",
]


def stopped_legacy_run(tmp_path: Path) -> Path:
    """A synchronous run killed mid-stage: two checkpoints, 8 records, 7 of them counted."""
    run_dir = tmp_path / "run"
    shutil.copytree(LEGACY / "sync-stopped", run_dir)
    return run_dir


def stopped_run(cli, run_dir: Path, env=None) -> Path:
    """The legacy run, killed at the same call, written by this version."""
    died = cli(
        "--out", str(run_dir), overrides=PLUGIN_RUN, env={"EVORES_TEST_DIE_AT": "9", **(env or {})}
    )
    assert died.returncode == 137, died.stderr
    return run_dir


def assert_one_line_refusal(result, fragment: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("evores: error:") and fragment in last, result.stderr
    return last


def edit_state(run_dir: Path, name: str, edit) -> None:
    path = run_dir / name
    payload = json.loads(path.read_text())
    edit(payload["state"])
    path.write_text(json.dumps(payload))


def edit_record(run_dir: Path, line: int, **fields) -> None:
    path = run_dir / EVALUATIONS
    lines = path.read_text().splitlines()
    record = json.loads(lines[line])
    record.update(fields)
    lines[line] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


# -- class 6: damaged run directories ---------------------------------------------------------

IMPOSSIBLE_STATES = {
    "stage beyond the ladder": lambda s: s["search"].update(stage=7),
    "stage of the wrong type": lambda s: s["search"].update(stage="0"),
    "population not a list": lambda s: s["search"].update(population="everyone"),
    "negative evaluation count": lambda s: s["search"].update(n_evaluations=-1),
    "a member without fitness": lambda s: s["search"]["population"][0].pop("fitness"),
    "unknown phase": lambda s: s["search"].update(phase="flying"),
    "elapsed not a number": lambda s: s.update(elapsed="soon"),
    "no search state": lambda s: s.pop("search"),
}


@pytest.mark.parametrize("damage", list(IMPOSSIBLE_STATES), ids=list(IMPOSSIBLE_STATES))
def test_a_checkpoint_with_impossible_values_falls_back_to_the_previous_one(cli, tmp_path, damage):
    run_dir = stopped_legacy_run(tmp_path)
    edit_state(run_dir, CHECKPOINT, IMPOSSIBLE_STATES[damage])
    resumed = cli("--out", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "falling back to checkpoint.prev.json" in resumed.stderr, resumed.stderr
    assert_same_result(run_dir, LEGACY / "sync-uninterrupted")


def test_both_checkpoints_impossible_is_refused_in_one_line(cli, tmp_path):
    run_dir = stopped_legacy_run(tmp_path)
    edit_state(run_dir, CHECKPOINT, IMPOSSIBLE_STATES["stage beyond the ladder"])
    edit_state(run_dir, PREVIOUS, IMPOSSIBLE_STATES["population not a list"])
    last = assert_one_line_refusal(cli("--out", str(run_dir), "--resume"), "no usable checkpoint")
    assert "stage" in last and "population" in last


def test_a_log_record_with_wrong_types_is_set_aside_and_evaluated_again(cli, tmp_path):
    run_dir = stopped_legacy_run(tmp_path)
    edit_record(run_dir, 7, val_accuracy="high")  # the 8th: after the checkpoint, not counted
    resumed = cli("--out", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 record" in resumed.stderr and "evaluations.rejected.jsonl" in resumed.stderr
    assert len((run_dir / "evaluations.rejected.jsonl").read_text().splitlines()) == 1
    assert_same_result(run_dir, LEGACY / "sync-uninterrupted")
    assert (run_dir / "progress_time.png").is_file()


def test_a_counted_log_record_with_wrong_types_is_refused(cli, tmp_path):
    run_dir = stopped_run(cli, tmp_path / "run")
    edit_record(run_dir, 0, key="zero")
    last = assert_one_line_refusal(cli("--out", str(run_dir), "--resume"), "holds 6 of the 7")
    assert "wrong types" in last


@pytest.mark.parametrize("kept", [0, 3])
@pytest.mark.parametrize("written_by", ["legacy", "this version"])
def test_a_truncated_or_emptied_log_is_refused(cli, tmp_path, kept, written_by):
    if written_by == "legacy":  # a checkpoint that counts evaluations, not log lines
        run_dir = stopped_legacy_run(tmp_path)
    else:
        run_dir = stopped_run(cli, tmp_path / "run")
    log = run_dir / EVALUATIONS
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:kept]))
    assert_one_line_refusal(cli("--out", str(run_dir), "--resume"), f"holds {kept} of the 7")


# -- class 7: a run directory changed under a stopped run -------------------------------------


def test_an_edited_config_is_refused_naming_the_keys_and_resumable_keys_may_change(cli, tmp_path):
    run_dir = stopped_run(cli, tmp_path / "run")
    state = json.loads((run_dir / CHECKPOINT).read_text())["state"]
    assert len(state["config_fingerprint"]) == 64
    config_file = run_dir / CONFIG
    original = config_file.read_text()
    edited = original.replace("seed = 0", "seed = 1").replace("max_epochs = 10", "max_epochs = 3")
    config_file.write_text(edited)
    last = assert_one_line_refusal(cli("--out", str(run_dir), "--resume"), "changed")
    assert "seed" in last and "train.max_epochs" in last and "mutation" not in last
    config_file.write_text(original.replace("grace_seconds = 60.0", "grace_seconds = 5.0"))
    resumed = cli("--out", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run_dir, LEGACY / "sync-uninterrupted")


def test_an_edited_data_section_is_refused_before_a_cache_is_built_for_it(cli, tmp_path):
    private_cache = {"EVORES_CACHE_DIR": str(tmp_path / "cache")}
    run_dir = stopped_run(cli, tmp_path / "run", env=private_cache)
    built = sorted((tmp_path / "cache").glob("*.h5"))
    config_file = run_dir / CONFIG
    config_file.write_text(config_file.read_text().replace('"box"', '"bilinear"'))
    last = assert_one_line_refusal(cli("--out", str(run_dir), "--resume", env=private_cache), "")
    assert "data.filter ('box' -> 'bilinear')" in last
    assert sorted((tmp_path / "cache").glob("*.h5")) == built


# -- class 8: two runs racing for one directory -----------------------------------------------


def test_two_fresh_runs_racing_for_one_directory_leave_the_winners_config(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    plugin = [item for item in PLUGIN_RUN if not item.startswith("fitness.")]
    plugin.append("fitness.function=fitness_plugins:accuracy_from_seed")
    started = []
    for seed in (1, 2):
        command, environment = cli_command(
            cache_dir, ["--out", str(run_dir)], [*plugin, f"seed={seed}"]
        )
        started.append(
            subprocess.Popen(
                command,
                env=environment,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
        time.sleep(0.3)  # the second passes the emptiness check while the first prepares
    outcomes = [(process.communicate(timeout=300)[1], process.returncode) for process in started]
    codes = [code for _, code in outcomes]
    assert sorted(codes) == [0, 2], outcomes
    winner_seed = 1 + codes.index(0)
    assert configuration.load(run_dir / CONFIG)["seed"] == winner_seed
    assert summary(run_dir)["seed"] == winner_seed


# -- class 9: small things --------------------------------------------------------------------


def test_an_empty_out_is_refused(cli):
    result = cli("--out", "", overrides=PLUGIN_RUN)
    assert result.returncode == 2 and "--out is empty" in result.stderr, result.stderr


def test_resume_without_out_is_refused(cli):
    result = cli("--resume")
    assert_one_line_refusal(result, "resume=True (--resume) needs the run directory")


def test_a_config_with_a_byte_order_mark_is_named_as_such(cli, tmp_path):
    config_file = tmp_path / "bom.toml"
    config_file.write_bytes("\ufeffseed = 1\n".encode())
    result = cli("--config", str(config_file), "--out", str(tmp_path / "run"))
    assert_one_line_refusal(result, "byte-order mark")
    assert not (tmp_path / "run").exists()


def _float_keys() -> list[str]:
    """Every key of the config whose value is a float or holds floats."""
    keys = []
    for section, values in configuration.defaults().items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            floats = isinstance(value, float) or (
                isinstance(value, list) and any(isinstance(v, float) for v in value)
            )
            if floats:
                keys.append(f"{section}.{key}")
    return keys


@pytest.mark.parametrize("key", _float_keys())
@pytest.mark.parametrize("number", ["nan", "inf", "-inf"])
def test_a_non_finite_number_is_refused_naming_its_key(key, number):
    section, name = key.split(".")
    default = configuration.defaults()[section][name]
    if isinstance(default, list):
        text = "[" + ", ".join([number] + [repr(float(v)) for v in default[1:]]) + "]"
    else:
        text = number
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        configuration.load(overrides=[f"{key}={text}"])


def test_float_keys_include_the_grace_period():
    assert "stop.grace_seconds" in _float_keys() and len(_float_keys()) >= 10


def _colour_folder(root: Path, sizes: dict[str, list[int]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, sides in sizes.items():
        (root / name).mkdir(parents=True)
        for i, side in enumerate(sides):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.png")
    return root


def test_a_class_with_one_image_gets_a_hint_that_can_help(tmp_path):
    folder = _colour_folder(tmp_path / "data", {"a": [8], "b": [8, 8, 8, 8]})
    with pytest.raises(DataError) as refused:
        open_cache(folder, [8], cache_dir=tmp_path / "cache")
    message = str(refused.value)
    assert "fraction" not in message, message
    assert "'a'" in message and "1 usable image" in message and "at least 3" in message


def test_a_class_missing_from_a_given_folder_gets_a_hint_that_can_help(tmp_path):
    _colour_folder(tmp_path / "data" / "train", {"a": [8] * 4, "b": [8] * 4})
    _colour_folder(tmp_path / "data" / "val", {"a": [8] * 2}, seed=1)
    with pytest.raises(DataError) as refused:
        open_cache(tmp_path / "data", [8], cache_dir=tmp_path / "cache")
    message = str(refused.value)
    assert "fraction" not in message and "'b'" in message, message
    assert "add images of that class to the dataset's val/ folder" in message


def test_one_pixel_images_get_a_hint_that_can_help(tmp_path):
    folder = _colour_folder(tmp_path / "data", {"a": [1] * 4, "b": [1] * 4})
    with pytest.raises(DataError) as refused:
        open_cache(folder, [8], cache_dir=tmp_path / "cache")
    message = str(refused.value)
    assert "<= 1" not in message and "at least 2 px" in message, message


def test_stale_temporary_files_of_a_killed_run_are_removed_on_resume(cli, tmp_path):
    run_dir = stopped_legacy_run(tmp_path)
    stale = [run_dir / ".progress_time.png.k3j_x9q1.tmp", run_dir / ".checkpoint.json.a1b2c3d4.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    theirs = run_dir / "notes.tmp"  # not a temporary file of evores
    theirs.write_text("keep")
    resumed = cli("--out", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not [path for path in stale if path.exists()]
    assert theirs.read_text() == "keep"
    assert not list(run_dir.glob(".*.tmp"))


def test_the_data_report_is_the_one_the_run_started_with(cli, tmp_path):
    private_cache = tmp_path / "cache"
    run_dir = stopped_run(cli, tmp_path / "run", env={"EVORES_CACHE_DIR": str(private_cache)})
    (cache_file,) = private_cache.glob("*.h5")
    started_with = read_cache(cache_file).report
    rebuilt = open_cache("embedded", [8, 16, 12], cache_dir=private_cache)  # another run's
    assert rebuilt.report != started_with
    resumed = cli("--out", str(run_dir), "--resume", env={"EVORES_CACHE_DIR": str(private_cache)})
    assert resumed.returncode == 0, resumed.stderr
    assert summary(run_dir)["data"]["report"] == started_with


def test_an_unusable_out_is_refused_before_the_cache_is_built(cli, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    private_cache = tmp_path / "cache"
    result = cli(
        "--out", str(a_file / "run"), overrides=PLUGIN_RUN,
        env={"EVORES_CACHE_DIR": str(private_cache)},
    )  # fmt: skip
    assert_one_line_refusal(result, "cannot write the run directory")
    assert not list(private_cache.glob("*.h5")), "the cache was built before --out was checked"


def test_non_finite_numbers_in_a_config_file_name_the_key(cli, tmp_path):
    config_file = tmp_path / "nan.toml"
    config_file.write_text("[stop]\ngrace_seconds = nan\n")
    result = cli("--config", str(config_file), "--out", str(tmp_path / "run"))
    assert_one_line_refusal(result, "stop.grace_seconds must be a finite number")
    assert not (tmp_path / "run").exists()


# -- the schema and the claim, in process -----------------------------------------------------


def test_the_record_schema_names_each_wrong_field():
    record = json.loads((LEGACY / "sync-stopped" / EVALUATIONS).read_text().splitlines()[0])
    assert record_problems(record) == []
    damaged = {**record, "val_accuracy": "high", "key": [0, -1, 2], "status": "maybe"}
    damaged["test_accuracy"] = float("nan")
    problems = " | ".join(record_problems(damaged))
    for field in ("val_accuracy", "key", "status", "test_accuracy"):
        assert field in problems, problems
    assert record_problems({**record, "epochs": True}) != []  # a bool is not an int
    assert record_problems({"key": [0, 0, 0], "status": INTERRUPTED}) != []  # no task fields
    assert record_problems([record]) != []


def test_a_fresh_claim_refuses_a_directory_another_run_wrote_into(tmp_path):
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.path.mkdir()
    (run_dir.path / CONFIG).write_text("seed = 2\n")  # written after the emptiness check
    with pytest.raises(CheckpointError, match="another run wrote config.toml"):
        run_dir.claim(fresh=True)
    assert not (run_dir.path / LOCK).exists()
    assert (run_dir.path / CONFIG).read_text() == "seed = 2\n"


def test_a_refused_run_removes_the_directory_it_claimed_and_only_that(tmp_path):
    created = RunDirectory(tmp_path / "new")
    created.claim(fresh=True)
    created.release()
    assert not created.path.exists()
    existing = RunDirectory(tmp_path / "existing")
    existing.path.mkdir()
    existing.claim(fresh=True)
    existing.release()
    assert existing.path.is_dir() and not any(existing.path.iterdir())
