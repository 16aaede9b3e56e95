"""The README's quick start and .ci/run must not drift apart."""

import re

from conftest import ROOT


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [
        line.strip()
        for block in blocks[:2]
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    run_job, run_tests = quick_start_commands()
    assert "python -m evores.run" in run_job
    assert "pytest" in run_tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert run_tests in ci_lines
