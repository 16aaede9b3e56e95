"""The one door: `evores` and `python -m evores` with their subcommands, the old spellings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from evores import __version__
from evores.core.exits import EXIT_USAGE
from evores.engine.cli import SUBCOMMANDS, main

OLD_SPELLINGS = {"run": "run", "report": "report", "export": "export", "plan": "plan",
                 "slurm": "sbatch"}  # fmt: skip


def run(*command: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=environment, cwd=ROOT
    )


def test_the_console_script_and_python_m_list_the_subcommands():
    script = Path(sys.executable).with_name("evores")
    if not script.exists():
        pytest.skip(f"{script} is absent: evores is not pip-installed in this environment")
    for command in ([str(script), "--help"], [sys.executable, "-m", "evores", "--help"]):
        result = run(*command)
        assert result.returncode == 0, result.stderr
        for name in SUBCOMMANDS:
            assert f"    {name} " in result.stdout, result.stdout


@pytest.mark.parametrize("old", sorted(OLD_SPELLINGS))
def test_the_old_commands_still_run_their_subcommand(old):
    result = run(sys.executable, "-m", f"evores.{old}", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: evores {OLD_SPELLINGS[old]} "), result.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommands_help_lists_options_with_defaults_and_an_example(name, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([name, "--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert f"example:\n  evores {name}" in text
    assert "options:" in text and ("default" in text or name in ("report", "export"))


def test_version_and_no_subcommand(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"evores {__version__}"
    assert main([]) == EXIT_USAGE
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "--set", "seed=x", "--out", "{tmp}/run"], "seed must be int"),
        (["report", "{tmp}/absent"], "absent"),
        (["export", "{tmp}/absent", "--optuna-storage", "sqlite:///{tmp}/x.db"], "absent"),
        (["plan", "--cpus", "0"], "--cpus must be >= 1"),
        (["sbatch", "--config", "{tmp}/absent.toml"], "does not exist"),
        (["run", "--config", "{tmp}/" + "n" * 300], "File name too long"),
        (["run", "--out", "{tmp}/a\0b"], "NUL byte"),
        (["report", "{tmp}/a\0b"], "NUL byte"),
        (["export", "{tmp}/" + "n" * 300, "--optuna-storage", "sqlite:///{tmp}/x.db"], "too long"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2_from_every_subcommand(argv, fragment, tmp_path, capsys):
    code = main([arg.format(tmp=tmp_path) for arg in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert len(lines) == 1 and lines[0].startswith("evores: error: ") and fragment in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", ["meta", "xla", "hpu", "mps"])
def test_a_device_type_this_machine_cannot_train_on_is_refused_before_anything_is_written(
    device, tmp_path, capsys
):
    """Every evaluation used to fail on it and the run exit 4 (issue 23, class 12)."""
    torch = pytest.importorskip("torch")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--set", f'train.device="{device}"']) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("evores: error: device") and device in err[-1]
    assert not (out / "config.toml").exists()


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        (NotADirectoryError(20, "Not a directory", "runs/r/tensorboard"), 2, "cannot write"),
        (PermissionError(13, "Permission denied", "runs/r/evaluations.jsonl"), 2, "cannot write"),
        (OSError(28, "No space left on device", "runs/r/checkpoint.json"), 75, "machine failed"),
    ],
)
def test_a_write_error_mid_run_is_one_line_not_a_traceback(monkeypatch, capsys, error, code, says):
    """A read-only log or a tensorboard/ that is a file gave exit 1 and a stack (issue 23,
    class 11); the run's files survive it (atomic writes, an append-only log)."""

    def failing(request, drive):
        raise error

    monkeypatch.setattr("evores.engine.cli.run_request", failing)
    assert main(["run", "--quiet"]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evores: error: ") and says in lines[0]
    assert str(error.filename) in lines[0]
