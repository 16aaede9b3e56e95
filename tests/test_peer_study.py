"""experiments/peer_study.py --quick on a tiny generated image folder: every method and seed in
the JSON, the table and the plot, and a rerun that re-runs only what is missing."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "peer_study.py"
sys.path.insert(0, str(ROOT / "experiments"))

import peer_study  # noqa: E402


def image_folder(root: Path, per_class: int = 14, px: int = 16) -> Path:
    """Three classes of noisy images, each brightening one channel: learnable at 8 px."""
    rng = np.random.default_rng(0)
    for c in range(3):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 150, (px, px, 3))
            pixels[..., c] += 90
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def study(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--quick", "--data", str(data), "--out", str(out)]
    return subprocess.run(
        [*command, *extra], capture_output=True, text=True, timeout=1200, cwd=ROOT
    )


@pytest.mark.slow
def test_quick_study_holds_every_method_and_seed_and_resumes(tmp_path):
    data, out = image_folder(tmp_path / "images"), tmp_path / "study"
    first = study(data, out)
    assert first.returncode == 0, first.stderr + first.stdout
    cells = json.loads((out / "peer_study.json").read_text())
    seeds = list(range(peer_study.QUICK["seeds"]))
    assert sorted((c["method"], c["seed"]) for c in cells) == sorted(
        (m, s) for m in peer_study.METHODS for s in seeds
    )
    for cell in cells:
        if "skipped" in cell:  # only DEHB may be missing: an experiment-only requirement
            assert cell["method"] == "dehb" and "dehb" in cell["skipped"]
            continue
        assert cell["cpu_seconds"] > 0 and cell["evaluations"] > 0, cell
        assert 0 <= cell["best_val_accuracy"] <= 1 and 0 <= cell["test_accuracy"] <= 1, cell
        if cell["method"] not in peer_study.EVORES_METHODS:
            assert cell["settings"]["cpu_budget_seconds"] == peer_study.QUICK["budget"]
        assert cell["search_cpu_seconds"] <= cell["cpu_seconds"]
        assert sum(cell["evaluations_per_resolution"].values()) == cell["evaluations"]
    table = (out / "peer_study.md").read_text()
    assert all(f"| {method} |" in table for method in peer_study.METHODS), table
    assert (out / "peer_study.png").stat().st_size > 0

    (out / "cells" / "random-seed1.json").unlink()
    second = study(data, out)
    assert second.returncode == 0, second.stderr
    ran = re.findall(r"^  (\S+ seed \d+): [\d.]+ CPU s,", second.stdout, flags=re.MULTILINE)
    assert ran == ["random seed 1"], second.stdout


def test_vector_trial_covers_each_gene_range():
    space = peer_study.study_space()
    names = peer_study.vector_names(space)
    low = space.suggest(peer_study.VectorTrial(np.zeros(len(names)), names))
    high = space.suggest(peer_study.VectorTrial(np.ones(len(names)), names))
    assert len(low["conv_filters"]) == space.conv_layers.low
    assert len(high["conv_filters"]) == space.conv_layers.high
    assert low["learning_rate"] == pytest.approx(space.learning_rate.low)
    assert high["fc_units"] == [space.fc_units.high] * space.fc_layers.high
    assert (low["l1"], high["l1"]) == (space.l1.low, 0.0)  # the last choice: no penalty


def test_cpu_ratio_compares_the_cpu_to_the_accuracy_both_reached():
    reference = [{"seed": 0, "best_val_accuracy": 0.5, "curve": [[10, 0.3], [40, 0.5]]}]
    faster = [{"seed": 0, "best_val_accuracy": 0.6, "curve": [[5, 0.5], [50, 0.6]]}]
    weaker = [{"seed": 0, "best_val_accuracy": 0.3, "curve": [[30, 0.3]]}]
    assert peer_study.cpu_ratio(faster, reference) == 5 / 40
    assert peer_study.cpu_ratio(weaker, reference) == 30 / 10


def test_the_peers_default_budget_is_the_evores_cells_mean_search_cpu(tmp_path, capsys):
    cells = tmp_path / "cells"
    with pytest.raises(SystemExit) as stopped:
        peer_study.evores_budget(tmp_path)
    assert stopped.value.code == 2 and "--budget" in capsys.readouterr().err
    cells.mkdir()
    for name, spent in (("evores-ga-seed0", 100.0), ("evores-tpe-seed1", 140.0)):
        (cells / f"{name}.json").write_text(json.dumps({"search_cpu_seconds": spent}))
    (cells / "random-seed0.json").write_text(json.dumps({"search_cpu_seconds": 999.0}))
    assert peer_study.evores_budget(tmp_path) == (120.0, "mean search CPU of 2 evores cells")
