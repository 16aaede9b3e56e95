"""The learned resizer: its shapes, its training with the classifier, a run that uses it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, assert_same_result, cli_command, evaluations, require_mpiexec
from PIL import Image
from safetensors import safe_open

from evores import config as configuration
from evores.core.errors import ConfigError
from evores.data.opener import open_dataset
from evores.data.resizing import ResizerSpec, resizer_spec
from evores.reporting.winner import DESCRIPTION, WEIGHTS, load_model
from evores.training.fitness import PreparedData, evaluate, train_and_test
from evores.training.model import build_cnn, count_parameters
from evores.training.resizer import LearnedResizer, ResizedClassifier

LEARNED = [*TINY_RUN, "data.resizer=learned"]
GENOME = {
    "learning_rate": 0.05,
    "conv_filters": [8],
    "conv_kernels": [3],
    "fc_units": [16],
    "batch_size": 32,
    "l1": 1e-5,
    "l2": 1e-4,
}


@pytest.mark.parametrize(
    "resolutions", [configuration.DEFAULT_SCHEDULE["resolutions"], [16, 32, 64], [8, 16]]
)
@pytest.mark.parametrize("width, blocks, source", [(16, 1, 0), (4, 0, 0), (8, 2, 256)])
def test_every_rung_of_a_ladder_comes_out_at_its_resolution(resolutions, width, blocks, source):
    spec = ResizerSpec(width=width, blocks=blocks, source=source)
    for r in resolutions:
        side = spec.source_for(r)
        assert side == (source or 2 * r)
        resizer = LearnedResizer(r, 3, width, blocks)
        out = resizer(torch.rand(2, 3, side, side))
        assert out.shape == (2, 3, r, r)
        network = ResizedClassifier(resizer, build_cnn(GENOME, r, 5))
        assert network(torch.rand(2, 3, side, side)).shape == (2, 5)


def test_the_skip_path_is_a_bilinear_resize():
    resizer = LearnedResizer(8, 3, 4, 1)
    for module in resizer.tail:  # zero the CNN path: what is left is the skip path
        torch.nn.init.zeros_(module.weight)
    resizer.eval()
    x = torch.rand(3, 3, 16, 16)
    expected = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear")
    assert torch.allclose(resizer(x), expected)


def test_bad_shapes_and_sources_are_config_errors():
    with pytest.raises(ConfigError, match="width=0"):
        ResizerSpec(width=0)
    with pytest.raises(ConfigError, match="below the stage resolution 64"):
        ResizerSpec(source=32).source_for(64)
    assert resizer_spec({"resizer": "fixed"}) is None


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"resizer": "cnn"}, "data.resizer 'cnn' is unknown"),
        ({"resizer": "learned", "resizer_source": 16}, "below the largest resolution 64"),
        ({"resizer_width": 0}, "data.resizer_width must be a whole number >= 1"),
        ({"resizer_blocks": -1}, "data.resizer_blocks must be a whole number >= 0"),
    ],
)
def test_bad_resizer_settings_are_refused(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        configuration.load(None, values={"data": values})


def test_a_user_fitness_function_cannot_have_a_learned_resizer():
    values = {"data": {"resizer": "learned"}, "fitness": {"function": "fitness_plugins:builtin"}}
    with pytest.raises(ConfigError, match="fitness.function"):
        configuration.load(None, values=values)


@pytest.fixture(scope="module")
def learned_cache(cache_dir, monkeypatch_module):
    monkeypatch_module.setenv("EVORES_CACHE_DIR", str(cache_dir))
    values = {"data": {"resizer": "learned"}, "schedule": {"resolutions": [8, 16]}}
    return open_dataset(configuration.load(None, values=values))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_cache_holds_the_sources_and_evaluation_trains_the_resizer(learned_cache):
    assert {8, 16, 32} <= set(learned_cache.resolutions)  # the ladder and its sources
    spec = ResizerSpec(width=4)
    data = PreparedData.from_cache(learned_cache, 16, resizer=spec)
    assert data.train_x.shape[-1] == 32 and data.resolution == 16
    first = evaluate(GENOME, 16, data, seed=3, max_epochs=2, patience=2, threads=1)
    again = evaluate(GENOME, 16, data, seed=3, max_epochs=2, patience=2, threads=1)
    assert first.status == "ok" and first.epochs == 2
    assert (first.val_accuracy, first.best_epoch) == (again.val_accuracy, again.best_epoch)
    classifier = count_parameters(build_cnn(GENOME, 16, learned_cache.n_classes))
    resizer = count_parameters(LearnedResizer(16, 3, 4, 1))
    assert first.n_parameters == classifier + resizer
    fixed = evaluate(GENOME, 16, PreparedData.from_cache(learned_cache, 16), seed=3,
                     max_epochs=2, patience=2, threads=1)  # fmt: skip
    assert fixed.n_parameters == classifier


def test_the_final_retraining_saves_the_resizer_with_the_classifier(learned_cache, tmp_path):
    data = PreparedData.from_cache(learned_cache, 16, final=True, resizer=ResizerSpec(width=4))
    result = train_and_test(GENOME, 16, data, seed=1, epochs=1, threads=1,
                            weights_to=tmp_path / "w.safetensors")  # fmt: skip
    from safetensors.torch import load_file

    from evores.training.weights import read_metadata

    metadata = read_metadata(tmp_path / "w.safetensors")
    assert metadata["resizer"] == {"width": 4, "blocks": 1, "source": 0}
    assert metadata["source_resolution"] == 32
    names = load_file(str(tmp_path / "w.safetensors")).keys()
    assert any(n.startswith("resizer.") for n in names)
    assert any(n.startswith("classifier.") for n in names)
    assert result.status == "ok"


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory, cache_dir):
    import subprocess

    from conftest import ROOT

    run_dir = tmp_path_factory.mktemp("learned") / "run"
    command, environment = cli_command(cache_dir, ["--out", str(run_dir)], LEARNED)
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=900
    )
    assert result.returncode == 0, result.stderr
    return run_dir


def test_load_model_feeds_the_resizer_its_source_resolution(learned_run):
    from evores.data.sources import Item, open_source

    model, predict = load_model(learned_run)
    winner = json.loads((learned_run / DESCRIPTION).read_text())
    assert isinstance(model, ResizedClassifier)
    assert winner["resolution"] == 16 and winner["source_resolution"] == 32
    summary = json.loads((learned_run / "summary.json").read_text())
    assert summary["data"]["resizer"] == "learned"
    cache = open_dataset(configuration.load(learned_run / "config.toml"))
    import h5py

    with h5py.File(cache.path, "r") as f:
        rows = f["splits/test"][...]
        source_index = f["source_index"][...][rows]
    source = open_source("embedded")
    originals = [source.open(Item(int(i), 0, "", (64, 64), "")) for i in source_index]
    _, labels = cache.arrays(32, "test")
    probabilities = predict(originals)
    assert (probabilities.argmax(axis=1) == labels).mean() == summary["test_accuracy"]
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_a_killed_learned_run_resumes_to_the_uninterrupted_result(
    learned_run, cli, cli_started, tmp_path
):
    broken = tmp_path / "broken"
    process = cli_started("--out", str(broken), overrides=LEARNED, log=tmp_path / "log")
    log = broken / "evaluations.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.kill()  # kill -9 in the middle of the run
    process.wait()
    assert not (broken / "summary.json").exists()
    assert 5 <= len(log.read_text().splitlines()) < len(evaluations(learned_run))
    resumed = cli("--out", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(broken, learned_run)


@pytest.mark.slow
@pytest.mark.mpi
def test_a_learned_run_under_mpi_equals_the_serial_run(learned_run, cli, tmp_path):
    require_mpiexec()
    mpi_dir = tmp_path / "mpi"
    result = cli("--out", str(mpi_dir), overrides=LEARNED, mpi_ranks=3)
    assert result.returncode == 0, result.stderr
    assert_same_result(mpi_dir, learned_run)
    with safe_open(str(mpi_dir / WEIGHTS), "pt") as mine, \
            safe_open(str(learned_run / WEIGHTS), "pt") as serial:  # fmt: skip
        for name in serial.keys():
            assert torch.equal(mine.get_tensor(name), serial.get_tensor(name)), name


def test_a_source_above_every_image_is_refused_with_one_line(cli, tmp_path):
    folder = tmp_path / "images"
    for label, name in enumerate(("a", "b")):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            colour = (label * 200, i * 40, 90)
            Image.new("RGB", (24, 24), colour).save(folder / name / f"{i}.png")
    run_dir = tmp_path / "run"
    overrides = [*LEARNED, f"data.path={folder}"]  # sources 16 and 32 px from 24 px images
    result = cli("--out", str(run_dir), overrides=overrides)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evores: error:"), result.stderr
    assert "upscaled to 32 px" in lines[0] and "data.resizer_source" in lines[0]
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()
