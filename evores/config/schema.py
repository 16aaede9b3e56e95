"""The run configuration: TOML in, a validated plain dict out, the resolved TOML written back.

Every key is declared here with its type and default; unknown keys are rejected with the valid
ones listed, so a typo never silently falls back to a default. The resolved configuration (with
the schedule chosen for the dataset filled in) is what a run directory records and what a
resumed run reads back.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from evores.data.resample import MAX_DECODE_PIXELS
from evores.hpc.sbatch import SLURM_DEFAULTS
from evores.training.defaults import TRAIN_DEFAULTS

log = logging.getLogger("evores")

EMBEDDED = "embedded"

# The embedded data is 64 px native, so its ladder is Hinz's 32 -> 64 -> 128 halved, and the
# budget is scaled down from 750/500/250 (still 3:2:1) to finish in minutes on two CPU cores.
EMBEDDED_SCHEDULE = {"resolutions": [16, 32, 64], "evaluations": [24, 16, 8]}
DEFAULT_SCHEDULE = {"resolutions": [32, 64, 128], "evaluations": [750, 500, 250]}
# ... and its search ranges are cut to networks that train in seconds on a CPU (measured: the
# default run takes about 6 minutes on 2 cores; with the full ranges below, over 50). Only the
# ranges a user leaves unset are cut.
EMBEDDED_SPACE = {
    "conv_layers": [1, 4],
    "conv_filters": [8, 64],
    "conv_kernels": [3, 5],
    "fc_units": [16, 256],
}

# Built from the SearchSpace defaults on first use (space.py owns the gene declarations).
SPACE_SECTION = "space"

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "path": EMBEDDED,
        "filter": "box",
        "crop": "centre",
        "cache_dir": "",
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "download": False,
        "split_seed": 0,
        # The most pixels one image may decode to while the cache is built (see
        # evores.data.resample.MAX_DECODE_PIXELS for why 250 million).
        "max_decode_pixels": MAX_DECODE_PIXELS,
        # "auto": one channel where every image of the source is gray, else RGB; 1 or 3 forces.
        "channels": "auto",
        # Processes that decode the images of a cache build; 0 = every CPU available.
        "build_workers": 0,
        # Bytes of a rung's train and evaluation images one rank may hold in memory; a larger
        # rung is read through a memory map of the cache (evores.training.prepared);
        # 0 = half the node's available memory, shared among its ranks.
        "memory_budget": 0,
        # "learned": a small CNN shrinks resizer_source px copies to each stage's resolution
        # (evores.training.resizer); 0 = twice the stage's resolution.
        "resizer": "fixed",
        "resizer_source": 0,
        "resizer_width": 16,
        "resizer_blocks": 1,
    },
    "schedule": {
        "resolutions": [],
        "evaluations": [],
        "elites": 3,
        "narrow": True,
        "narrow_margin": 0.25,
        "probe": 8,  # members of a finished stage re-evaluated to measure fidelity (0 = off)
        "adaptive": False,  # let the measured fidelity steer narrowing and carrying
        "fidelity_threshold": 0.3,  # the interval's lower bound a strong proxy reaches
    },
    "search": {
        "strategy": "ga",
        "population": 8,
        "elitism": 2,
        "tournament": 3,
        "crossover": 0.5,
        "mutation": 0.9,
        "mutation_genes": 0.3,
        "mutation_sigma": 0.15,
        "asynchronous": False,
        # Genomes of the first population (evores.strategies.initial): a list of genome tables, or
        # an
        # earlier run directory's path; resolved to the list when the config is loaded.
        "initial": [],
    },
    "train": TRAIN_DEFAULTS,
    "fitness": {"function": ""},
    # How a run stops early (walltime warning, preemption, Ctrl-C): evaluations still running
    # get this long to finish before they are abandoned and re-run on --resume.
    "stop": {"grace_seconds": 60.0},
    # What a run shows while it goes, besides its log lines, plots and provisional summary.
    "report": {"tensorboard": False, "mlflow": ""},
}


STRATEGIES = ("ga", "random", "tpe")


def _space_defaults() -> dict[str, Any]:
    from evores.strategies.space import SearchSpace

    return SearchSpace().to_dict()


def defaults() -> dict[str, Any]:
    """A fresh copy of every key with its default value."""
    config = copy.deepcopy(DEFAULTS)
    config[SPACE_SECTION] = _space_defaults()
    config["slurm"] = copy.deepcopy(SLURM_DEFAULTS)
    return config
