"""The progress a person sees: bars under a pseudo-terminal, plain lines in a file (a real
``python -m evores run`` subprocess each)."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios

import pytest
from conftest import ROOT, cli_command
from test_cache import make_folder

# A run of seconds on a folder of 24 small images: two rungs, one epoch.
SMALL = ["schedule.resolutions=[8, 16]", "schedule.evaluations=[4, 2]", "search.population=2",
         "search.elitism=1", "schedule.elites=1", "train.max_epochs=1", "train.patience=1",
         "space.fc_units=[16, 32]", "space.conv_filters=[8, 16]"]  # fmt: skip


def run_on_a_terminal(command: list[str], environment: dict) -> tuple[int, str]:
    """Run ``command`` with stderr on a pseudo-terminal of 120 columns; its code and output."""
    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=side,
        env=environment, cwd=ROOT,
    )  # fmt: skip
    os.close(side)
    output = bytearray()
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed with the process (EIO)
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    return process.wait(timeout=600), output.decode()


@pytest.mark.slow
def test_a_terminal_gets_bars_for_the_cache_build_and_the_run(tmp_path):
    folder = make_folder(tmp_path / "images", per_class=7)
    overrides = [*SMALL, f"data.path={str(folder)!r}"]
    args = ["--out", str(tmp_path / "run")]
    command, environment = cli_command(tmp_path / "cache", args, overrides)
    code, output = run_on_a_terminal(command, environment)
    assert code == 0, output
    redrawn = [part for part in re.split(r"[\r\n]+", output) if part.strip()]
    # One bar for the cache build, redrawn in place, instead of percentage lines.
    assert any(re.search(r"caching images: 100%\|█+\| 24/24", part) for part in redrawn)
    assert "images (" not in output
    # One bar for the run: its stage, evaluations of the run's budget, and the ETA.
    assert any(re.match(r"stage 1/2 8 px +\d+%\|.*\| \d/7, best .* eta ", p) for p in redrawn)
    assert any(re.match(r"final retraining 100%\|█+\| 7/7, best \d\.\d{3}", p) for p in redrawn)
    # Above it, the line of every evaluation.
    assert len([p for p in redrawn if re.match(r"\d\d:\d\d:\d\d evaluation \[", p)]) == 6


def test_a_file_gets_plain_lines_one_per_evaluation(tiny_run):
    """The shared tiny run's stderr went to a pipe, as a SLURM job's goes to its .out file."""
    run_dir, result = tiny_run
    assert "\r" not in result.stderr and "%|" not in result.stderr
    lines = re.findall(r"^\d\d:\d\d:\d\d (evaluation|final retraining) \[", result.stderr, re.M)
    records = (run_dir / "evaluations.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 12
