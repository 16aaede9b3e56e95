"""The winner kept: winner.safetensors + winner.json, and load_model's predictions."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from evores import config as configuration
from evores.core.errors import CheckpointError
from evores.data.opener import open_dataset
from evores.data.sources import Item, open_source
from evores.reporting.winner import DESCRIPTION, WEIGHTS, keep_winner, load_model
from evores.store.rundir import candidate_path


def test_only_the_winner_is_kept_with_what_using_it_needs(tiny_run):
    run_dir, _ = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    winner = json.loads((run_dir / DESCRIPTION).read_text())
    assert (run_dir / WEIGHTS).is_file() and not list(run_dir.glob("final-*.safetensors"))
    assert winner["test_accuracy"] == summary["test_accuracy"]
    assert winner["class_names"] == summary["data"]["classes"]
    assert winner["resolution"] == summary["test_resolution"] == 16
    assert (winner["filter"], winner["crop"]) == ("box", "centre")
    assert len(winner["mean"]) == len(winner["std"]) == 3


def test_load_model_scores_the_test_split_as_the_final_retraining_did(tiny_run):
    run_dir, _ = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    model, predict = load_model(run_dir)
    assert not model.training
    cache = open_dataset(configuration.load(run_dir / "config.toml"))
    images, labels = cache.arrays(16, "test")
    with h5py.File(cache.path, "r") as f:
        rows = f["splits/test"][...]
        source_index = f["source_index"][...][rows]
    # The source's own images, downsampled by predict as the cache build did.
    source = open_source("embedded")
    originals = [source.open(Item(int(i), 0, "", (64, 64), "")) for i in source_index]
    probabilities = predict(originals)
    assert probabilities.shape == (len(labels), len(summary["data"]["classes"]))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).mean() == summary["test_accuracy"]
    # ... and equal to the network's output on the cached images, normalised as in training.
    winner = json.loads((run_dir / DESCRIPTION).read_text())
    mean = torch.tensor(winner["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(winner["std"]).reshape(1, 3, 1, 1)
    with torch.no_grad():
        cached = torch.softmax(model((torch.from_numpy(images).float() - mean) / std), dim=1)
    assert np.allclose(probabilities, cached.numpy(), atol=1e-6)


def test_predict_takes_paths_as_it_takes_images(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    _, predict = load_model(run_dir)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    image.save(tmp_path / "photo.png")
    assert np.array_equal(predict([tmp_path / "photo.png"]), predict([image]))


def test_a_run_without_winner_files_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no winner.safetensors .*has not finished"):
        load_model(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(CheckpointError, match="finished without them"):
        load_model(tmp_path)


def damaged_copy(run_dir, tmp_path, weights: bytes | None = None, description=None):
    copy = tmp_path / "damaged"
    copy.mkdir()
    (copy / WEIGHTS).write_bytes((run_dir / WEIGHTS).read_bytes() if weights is None else weights)
    winner = json.loads((run_dir / DESCRIPTION).read_text())
    (copy / DESCRIPTION).write_text(json.dumps(description(winner) if description else winner))
    return copy


@pytest.mark.parametrize(
    "damage",
    [
        {"weights": lambda data: data[: len(data) // 2]},  # truncated
        {"weights": lambda data: b"not a tensor file"},
        {"description": lambda w: {**w, "hparams": {**w["hparams"], "fc_units": [7]}}},
        {"description": lambda w: {k: v for k, v in w.items() if k != "mean"}},
    ],
)
def test_damaged_winner_files_are_refused_in_one_line(tiny_run, tmp_path, damage):
    run_dir, _ = tiny_run
    data = (run_dir / WEIGHTS).read_bytes()
    weights = damage["weights"](data) if "weights" in damage else None
    copy = damaged_copy(run_dir, tmp_path, weights, damage.get("description"))
    with pytest.raises(CheckpointError, match="damaged or do not match") as caught:
        load_model(copy)
    assert "\n" not in str(caught.value)


def test_keeping_the_winner_again_after_a_kill_finds_it_already_renamed(tiny_run, tmp_path):
    """A run killed after the rename but before summary.json keeps the winner's files."""
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / WEIGHTS).write_bytes((run_dir / WEIGHTS).read_bytes())
    candidate_path(copy, 1).write_bytes(b"a loser's weights")
    config = configuration.load(run_dir / "config.toml")
    final = [{"val_accuracy": 0.5, "test_accuracy": 0.25}, {"val_accuracy": 0.4}]
    keep_winner(copy, config, open_dataset(config), final, final[0])
    kept = json.loads((copy / DESCRIPTION).read_text())
    assert kept["test_accuracy"] == 0.25 and not candidate_path(copy, 1).exists()
    assert kept["hparams"] == json.loads((run_dir / DESCRIPTION).read_text())["hparams"]


@pytest.mark.slow
@pytest.mark.mpi
def test_under_mpi_the_worker_that_trained_the_winner_saves_the_same_weights(
    cli, tmp_path, tiny_run
):
    from conftest import TINY_RUN, require_mpiexec
    from safetensors.torch import load_file

    require_mpiexec()
    serial_dir, _ = tiny_run
    mpi_dir = tmp_path / "mpi"
    result = cli("--out", str(mpi_dir), overrides=TINY_RUN, mpi_ranks=3)
    assert result.returncode == 0, result.stderr
    assert not list(mpi_dir.glob("final-*.safetensors"))
    serial, mpi = load_file(serial_dir / WEIGHTS), load_file(mpi_dir / WEIGHTS)
    assert serial.keys() == mpi.keys()
    assert all(torch.equal(serial[name], mpi[name]) for name in serial)
    assert json.loads((mpi_dir / DESCRIPTION).read_text()) == json.loads(
        (serial_dir / DESCRIPTION).read_text()
    )


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("mean", "x", "mean"),
        ("mean", [0.5, float("nan"), 0.5], "mean"),
        ("std", [0.0, 0.2, 0.2], "std"),
        ("filter", "sinc", "filter"),
        ("crop", "diagonal", "crop"),
        ("source_resolution", "big", "source_resolution"),
        ("source_resolution", 4, "source_resolution"),
        ("resolution", 16.5, "resolution"),
        ("class_names", ["only"], "class_names"),
    ],
)
def test_every_field_of_winner_json_is_checked_before_use(tiny_run, tmp_path, field, value, named):
    """A bad mean or filter gave raw errors, an unknown crop was taken as pad and std 0 gave
    NaN probabilities (issue 23, class 6)."""
    run_dir, _ = tiny_run
    copy = damaged_copy(run_dir, tmp_path, description=lambda w: {**w, field: value})
    with pytest.raises(CheckpointError, match=f"damaged or do not match .*{named} = ") as caught:
        load_model(copy)
    assert "\n" not in str(caught.value)


def test_a_finished_run_with_damaged_weights_resumes_into_one_line(tiny_run, tmp_path, cli):
    """It resumed into a traceback (issue 23, class 10)."""
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = (copy / WEIGHTS).read_bytes()
    (copy / WEIGHTS).write_bytes(data[: len(data) // 3])
    result = cli("--out", str(copy), "--resume")
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr
    assert last.startswith("evores: error: ") and "winner.safetensors is damaged" in last
    assert "Traceback" not in result.stderr


def test_predict_takes_one_image_or_path_as_a_batch_of_one_and_an_empty_list(tiny_run, tmp_path):
    """predict("x.jpg") iterated the characters and predict([]) was a numpy error (issue 24)."""
    run_dir, _ = tiny_run
    _, predict = load_model(run_dir)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), np.uint8))
    image.save(tmp_path / "one.png")
    expected = predict([image])
    assert np.array_equal(predict(image), expected)
    assert np.array_equal(predict(str(tmp_path / "one.png")), expected)
    assert predict([]).shape == (0, expected.shape[1])


def test_a_gray_winner_loads_and_predicts_with_one_channel(tmp_path):
    """A run on gray data trains a one-channel network; load_model builds and feeds it so."""
    from safetensors.torch import save_file

    from evores.training.model import build_cnn

    hparams = {"conv_filters": [4], "conv_kernels": [3], "fc_units": [8]}
    torch.manual_seed(0)
    model = build_cnn(hparams, 8, 2, in_channels=1)
    save_file(model.state_dict(), str(tmp_path / WEIGHTS))
    (tmp_path / DESCRIPTION).write_text(json.dumps({
        "hparams": hparams, "resolution": 8, "mean": [100.0], "std": [50.0],
        "class_names": ["a", "b"], "filter": "box", "crop": "centre",
    }))  # fmt: skip
    loaded, predict = load_model(tmp_path)
    gray = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    image = np.asarray(gray.resize((8, 8), Image.Resampling.BOX), np.float32)
    x = (torch.from_numpy(image).reshape(1, 1, 8, 8) - 100.0) / 50.0
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    assert np.allclose(predict([gray]), expected, atol=1e-6)
    gray.save(tmp_path / "gray.png")
    assert np.allclose(predict(tmp_path / "gray.png"), expected, atol=1e-6)
