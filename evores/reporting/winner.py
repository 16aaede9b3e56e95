"""The winner kept: its weights (``winner.safetensors``) and how to use them (``winner.json``).

The final retraining of the built-in training writes each candidate's weights, as it trains
them, into the run directory as ``final-<index>.safetensors`` (the rank that trained it writes
the file, so only plain data crosses MPI and rank 0 never holds a network it did not train).
The file carries, as safetensors metadata, what the network needs beyond its tensors: the
repaired genome it was built from, the resolution and the normalisation of its training data.
When every candidate is in and the winner is chosen (by validation accuracy, never by test
score), :func:`keep_winner` renames its file to ``winner.safetensors``, removes the others and
writes ``winner.json``, before ``summary.json`` marks the run finished. A candidate logged
before a kill keeps its file, so a resumed run still finds it.

:func:`load_model` gives the network back, ready in eval mode, with a ``predict`` function that
downsamples images exactly as the dataset cache did (:func:`evores.data.resample.downsample`, with
the
run's filter and crop) and normalises them as the training did.

safetensors, not ``torch.save``: a tensor file that loading cannot execute code from.
A user ``fitness.function`` trains its own networks, which evores never sees: such a run has no
winner files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evores.core.atomic import write_json
from evores.core.errors import CheckpointError
from evores.core.paths import usable_path
from evores.core.results import one_line
from evores.core.typed import is_int, is_number, short
from evores.store.names import DESCRIPTION, WEIGHTS
from evores.store.rundir import candidate_path
from evores.training.weights import read_metadata

log = logging.getLogger("evores")

# What load_model reads from winner.json.
NEEDED = ("hparams", "resolution", "mean", "std", "class_names", "filter", "crop")


def keep_winner(run_dir: str | Path, config: dict[str, Any], cache, final, winner) -> None:
    """``final``'s entry ``winner`` kept as winner.safetensors + winner.json; the other
    candidates' files removed. Without the winner's file (a user fitness function, a run
    begun before evores kept weights) the run has no winner files, and says so."""
    from evores import __version__

    run_dir = Path(run_dir)
    if winner is None:
        return
    index = next(i for i, entry in enumerate(final) if entry is winner)
    source = candidate_path(run_dir, index)
    if source.is_file():
        os.replace(source, run_dir / WEIGHTS)
    elif not (run_dir / WEIGHTS).is_file():  # not already renamed by a run killed after it
        if not config["fitness"]["function"]:  # a user's function keeps its own networks
            log.warning("the winner's weights were not saved (%s is absent): no %s", source,
                        WEIGHTS)  # fmt: skip
        return
    try:
        network = read_metadata(run_dir / WEIGHTS)
    except Exception as error:  # noqa: BLE001 - any damage to the file is the same to the user
        raise CheckpointError(
            f"{run_dir / WEIGHTS} is damaged ({type(error).__name__}: {one_line(error)}); "
            "restore it from a backup (the run's result is in its log), or retrain the winner "
            "in a new run directory with search.initial pointing at this one"
        ) from None
    write_json(run_dir / DESCRIPTION, {
        "hparams": network["hparams"],
        "resolution": network["resolution"],
        "mean": network["mean"],
        "std": network["std"],
        "class_names": list(cache.class_names),
        "test_accuracy": winner["test_accuracy"],
        "val_accuracy": winner["val_accuracy"],
        "filter": config["data"]["filter"],
        "crop": config["data"]["crop"],
        "resizer": network.get("resizer"),  # None: the cache's fixed filter
        "source_resolution": network.get("source_resolution", network["resolution"]),
        "evores_version": __version__,
    })  # fmt: skip
    for other in range(len(final)):
        candidate_path(run_dir, other).unlink(missing_ok=True)


def load_model(run_dir: str | Path) -> tuple[Any, Callable[[Sequence[Any]], Any]]:
    """The winner of the finished run in ``run_dir``: ``(model, predict)``.

    ``model`` is the trained ``torch.nn.Module`` in eval mode, on the CPU. ``predict(images)`` takes
    a list of PIL images or image paths (or one of either, a batch of one; an empty list gives N =
    0) and returns their class probabilities, a numpy float32 array (N, n_classes) whose columns
    follow ``winner.json``'s ``class_names``. Each image is downsampled as the dataset cache
    downsampled the training images (the run's filter and crop) and normalised with the training
    data's channel mean and std; with a learned resizer, to its source resolution, and the resizer
    (part of ``model``) does the rest."""
    import numpy as np
    import torch

    run_dir = usable_path(run_dir, "run directory", CheckpointError)
    winner, model = _read_winner(run_dir)
    resolution = int(winner["resolution"])
    source = int(winner.get("source_resolution") or resolution)  # a learned resizer's input
    mean = torch.tensor(winner["mean"], dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(winner["std"], dtype=torch.float32).reshape(1, -1, 1, 1)

    @torch.no_grad()
    def predict(images: Sequence[Any]) -> np.ndarray:
        if isinstance(images, (str, os.PathLike)) or hasattr(images, "getbands"):
            images = [images]  # one path or PIL image: a batch of one, not its characters
        if len(images) == 0:
            return np.empty((0, len(winner["class_names"])), np.float32)
        batch = np.stack([_downsampled(image, source, winner) for image in images])
        x = torch.from_numpy(batch).float().sub_(mean).div_(std)
        return torch.softmax(model(x), dim=1).numpy()

    return model, predict


def _read_winner(run_dir: Path):
    """winner.json and the network built from it with winner.safetensors' weights, in eval
    mode; CheckpointError (one line) for a run without them or with damaged ones."""
    from safetensors.torch import load_file

    from evores.data.resizing import ResizerSpec
    from evores.training.model import build_cnn
    from evores.training.resizer import with_resizer

    if not (run_dir / DESCRIPTION).is_file() or not (run_dir / WEIGHTS).is_file():
        why = (
            "the run finished without them (no winner, or a user fitness.function)"
            if (run_dir / "summary.json").is_file()
            else "the run has not finished (no summary.json): resume it to the end first"
        )
        raise CheckpointError(
            f"{str(run_dir)!r} has no {WEIGHTS} and {DESCRIPTION}: {why}; give the directory "
            "of a run that finished with evores's own training"
        )
    try:
        winner = json.loads((run_dir / DESCRIPTION).read_text(encoding="utf-8"))
        problems = winner_problems(winner)
        if problems:
            raise ValueError("; ".join(problems))
        resolution = winner["resolution"]
        channels = len(winner["mean"])  # 1 where the run's data was gray, else 3
        model = build_cnn(winner["hparams"], resolution, len(winner["class_names"]), channels)
        if winner.get("resizer"):
            spec = ResizerSpec(**winner["resizer"])
            model = with_resizer(model, spec, resolution, len(winner["mean"]))
        model.load_state_dict(load_file(str(run_dir / WEIGHTS)))
    except Exception as error:  # noqa: BLE001 - any damage is the same to the user
        detail = (str(error).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"the winner's files in {str(run_dir)!r} are damaged or do not match ({WEIGHTS}, "
            f"{DESCRIPTION}: {type(error).__name__}: {detail}); "
            "restore them from a backup, or run the search again"
        ) from None
    return winner, model.eval()


def winner_problems(winner: Any) -> list[str]:
    """What is wrong with ``winner.json``'s fields (empty when nothing): its one schema."""
    from evores.data.resample import CROPS, FILTERS, MIN_RESOLUTION

    if not isinstance(winner, dict):
        return [f"it holds {type(winner).__name__}, not an object"]
    missing = [key for key in NEEDED if key not in winner]
    if missing:
        return [f"missing {', '.join(missing)}"]
    problems = []
    resolution = winner["resolution"]
    if not is_int(resolution) or resolution < MIN_RESOLUTION:
        problems.append(f"resolution = {short(resolution)} is not a whole number of px >= 2")
    source = winner.get("source_resolution")
    fits = is_int(source) and is_int(resolution) and source >= resolution
    if source is not None and not fits:
        problems.append(f"source_resolution = {short(source)} is not a number of px >= resolution")
    mean, std = winner["mean"], winner["std"]
    for name, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, list) and len(values) in (1, 3) and all(map(is_number, values))):
            problems.append(f"{name} = {short(values)} is not 1 or 3 finite numbers")
    if not problems and (len(mean) != len(std) or min(std) <= 0):
        problems.append(f"std = {short(std)} must match mean and be > 0 in every channel")
    names = winner["class_names"]
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        problems.append(f"class_names = {short(names)} is not a list of 2 or more names")
    if winner["filter"] not in FILTERS:
        problems.append(f"filter = {short(winner['filter'])} is not one of {', '.join(FILTERS)}")
    if winner["crop"] not in CROPS:
        problems.append(f"crop = {short(winner['crop'])} is not one of {', '.join(CROPS)}")
    if not isinstance(winner["hparams"], dict):
        problems.append(f"hparams = {short(winner['hparams'])} is not a genome")
    resizer = winner.get("resizer")
    if resizer is not None and not isinstance(resizer, dict):
        problems.append(f"resizer = {short(resizer)} is not a learned resizer's description")
    return problems


def _downsampled(image, resolution: int, winner: dict[str, Any]):
    """One image (PIL or a path) as the cache holds it: uint8 (C, r, r)."""
    from pathlib import Path

    from PIL import Image

    from evores.data.readers import open_file
    from evores.data.resample import downsample

    channels = len(winner["mean"])
    if isinstance(image, Image.Image):
        return downsample(image, resolution, winner["filter"], winner["crop"], channels)
    suffix = Path(image).suffix.lower()
    levelled = suffix in (".dcm", ".tif", ".tiff")  # read as the cache read them
    with open_file(image, suffix) if levelled else Image.open(image) as opened:
        return downsample(opened, resolution, winner["filter"], winner["crop"], channels)
