"""The README's quick start and .ci/run must not drift apart; the examples of the README and of
docs/ run. An example is found by what it contains, wherever it lives, and identical copies
run once."""

import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def python_blocks(containing: str) -> list:
    """Every distinct ```python block of the README and docs/ that contains ``containing``, as
    pytest params named after the first file holding it."""
    found: dict[str, str] = {}
    for path in DOCUMENTS:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S):
            if containing in block:
                found.setdefault(block, name(path))
    return [pytest.param(block, id=where) for block, where in found.items()]


def sections(heading: str) -> list:
    """The text under every ``## heading`` of the README and docs/, up to the next ``## ``."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        if f"\n## {heading}\n" in text:
            section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
            found.append(pytest.param(section, id=name(path)))
    return found


OPTUNA_EXAMPLES = python_blocks("objective = ")
EXPORT_EXAMPLES = python_blocks("optuna.load_study(")
SEARCH_EXAMPLES = python_blocks("evores.load_run(")
CALLBACK_EXAMPLES = python_blocks("callbacks=[")
WARM_START_SECTIONS = sections("Warm starts")


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
    assert "python -m evores run " in run_job
    assert "pytest" in run_tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert run_tests in ci_lines


def test_every_kind_of_example_is_documented_somewhere():
    assert OPTUNA_EXAMPLES and SEARCH_EXAMPLES and WARM_START_SECTIONS and EXPORT_EXAMPLES
    assert CALLBACK_EXAMPLES


@pytest.mark.parametrize("block", OPTUNA_EXAMPLES)
def test_the_optuna_example_is_five_lines_and_scores_a_real_trial(block, tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna", reason="optuna is in the test extra")
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 5 and lines[-1].startswith("optuna.create_study")
    monkeypatch.setenv("EVORES_CACHE_DIR", str(tmp_path))
    namespace: dict = {}
    exec("\n".join(lines[:-1]), namespace)  # all but the 20-trial study itself
    small = {"learning_rate": 0.05, "conv_layers": 1, "conv_filters_0": 8, "conv_kernels_0": 3,
             "fc_layers": 1, "fc_units_0": 16, "batch_size": 64, "l1_zero": True,
             "l2_zero": True}  # fmt: skip
    value = namespace["objective"](optuna.trial.FixedTrial(small, number=0))
    assert 0.0 < value <= 1.0


@pytest.mark.parametrize("block", EXPORT_EXAMPLES)
def test_the_export_example_reads_a_run_back_through_optuna(
    block, tmp_path, monkeypatch, cache_dir
):
    """The run of the Python example (with a fitness function that trains nothing), exported
    as the command above it does, then read by the example through Optuna's own API."""
    import evores
    from evores.reporting.export import export

    monkeypatch.setenv("EVORES_CACHE_DIR", str(cache_dir))
    monkeypatch.chdir(tmp_path)
    small = {"schedule": {"resolutions": [8, 16], "evaluations": [6, 4], "elites": 2},
             "search": {"population": 4, "elitism": 1},
             "fitness": {"function": "fitness_plugins:accuracy_from_learning_rate"}}  # fmt: skip
    summary = evores.search(out="runs/from-python", **small)
    export("runs/from-python", "sqlite:///from-python.db")
    namespace: dict = {}
    exec(block, namespace)
    assert namespace["winner"].value == summary["test_accuracy"]
    assert {"learning_rate", "conv_layers", "batch_size"} <= set(namespace["genes"])
    assert set(namespace["importances"]) >= set(namespace["genes"])
    assert namespace["began"] < namespace["final"].trials[0].datetime_complete


@pytest.mark.parametrize("block", SEARCH_EXAMPLES)
def test_the_python_example_runs_a_search_and_reads_it_back(block, tmp_path, monkeypatch):
    pytest.importorskip("pandas", reason="pandas is in the test extra")
    monkeypatch.setenv("EVORES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    summary, run = namespace["summary"], namespace["run"]
    assert summary["outcome"]["status"] == "ok" and 0.0 <= summary["test_accuracy"] <= 1.0
    assert len(run.evaluations) == summary["n_evaluations"] + len(run.finals)
    assert (run.finals["test_accuracy"] >= 0).all()
    probabilities = namespace["probabilities"]
    assert probabilities.shape == (1, len(summary["data"]["classes"]))
    assert abs(float(probabilities.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("block", CALLBACK_EXAMPLES)
def test_the_callback_and_mlflow_example_hears_every_evaluation(
    block, tmp_path, monkeypatch, capsys, cache_dir
):
    pytest.importorskip("mlflow", reason="mlflow is in the test extra")
    monkeypatch.setenv("EVORES_CACHE_DIR", str(cache_dir))  # the session's: built once
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # the example sets it
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    summary, runs = namespace["summary"], namespace["runs"]
    records = Path("runs/watched/evaluations.jsonl").read_text().splitlines()
    assert summary["outcome"]["status"] == "ok" and len(runs) == len(records)
    printed = capsys.readouterr().out.splitlines()
    assert len([line for line in printed if line.startswith("[")]) == len(records)
    assert [line.split(" best ")[0] for line in printed if line.startswith("stage ")] == [
        "stage 0",
        "stage 1",
    ]


@pytest.mark.parametrize("section", WARM_START_SECTIONS)
def test_the_warm_start_examples_start_from_the_known_genome_then_from_the_run(
    section, tmp_path, monkeypatch
):
    [table] = re.findall(r"```toml\n(.*?)```", section, re.S)
    [block] = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.setenv("EVORES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    known, first = namespace["known"], namespace["first"]
    assert tomllib.loads(table)["search"]["initial"] == [known]
    logged = [json.loads(line) for line in Path("runs/warm/evaluations.jsonl").open()]
    assert logged[0]["key"] == [0, 0, 0] and logged[0]["hparams"] == known
    again = [json.loads(line) for line in Path("runs/warmer/evaluations.jsonl").open()]
    assert again[0]["hparams"] == first["best_hparams"]  # the winner comes first
    assert namespace["again"]["outcome"]["status"] == "ok"
    stored = tomllib.loads(Path("runs/warmer/config.toml").read_text())["search"]["initial"]
    assert stored[0] == first["best_hparams"] and len(stored) == 4
