"""Errors reached through the Python API name its arguments, and the command line's flags
beside them (issue 24): ``resume=True (--resume)``, ``out=`` / ``--out``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import evores
from evores.core.errors import CheckpointError
from evores.engine.cli import main

PACKAGE = Path(evores.__file__).parent
# Modules only a command line reaches: `evores plan`, `evores sbatch`, the parsers.
COMMAND_LINE_ONLY = ("engine/cli.py", "engine/plan.py", "hpc/")
# A flag an error names, and what it must name beside it for a Python caller.
API_WORDS = {"--resume": "resume=True", "--out": "out=", "--config": "config", "--set": "override"}


def raised_messages(path: Path) -> list[tuple[int, str]]:
    """The text of every ``raise X(...)`` in ``path``: its string pieces, joined."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        if getattr(node.exc.func, "attr", getattr(node.exc.func, "id", "")) == "ArgumentTypeError":
            continue  # argparse's: only a command line gets there
        pieces = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant)
                  and isinstance(n.value, str)]  # fmt: skip
        found.append((node.lineno, "".join(pieces)))
    return found


def test_every_error_that_names_a_flag_names_the_python_argument_too():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(COMMAND_LINE_ONLY):
            continue
        for line, message in raised_messages(path):
            for flag in re.findall(r"--(?:resume|out|config|set)\b", message):
                if API_WORDS[flag] not in message:
                    wrong.append(f"{relative}:{line} names {flag} without {API_WORDS[flag]!r}")
    assert not wrong, wrong
    # The check has teeth: the messages it reads hold the flags.
    session = raised_messages(PACKAGE / "engine" / "session.py")
    assert any("--resume" in message for _, message in session)


def test_a_python_caller_is_told_the_argument_and_a_command_line_the_flag(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("someone else's")
    with pytest.raises(CheckpointError, match=r"pass resume=True \(--resume\).*\(out=, --out\)"):
        evores.search(out=taken)
    with pytest.raises(CheckpointError, match=r"without resume=True \(--resume\)"):
        evores.search(out=tmp_path / "empty", resume=True)
    assert main(["run", "--out", str(taken)]) == 2
    error = capsys.readouterr().err
    assert "--resume" in error and "--out" in error and len(error.strip().splitlines()) == 1
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
