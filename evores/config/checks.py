"""Every value of a loaded configuration checked, and the schedule chosen for the dataset filled
in: the ranges, choices and cross-section rules that a type check alone cannot see."""

from __future__ import annotations

import copy
import math
from typing import Any

from evores.config.schema import (
    DEFAULT_SCHEDULE,
    EMBEDDED,
    EMBEDDED_SCHEDULE,
    SPACE_SECTION,
    STRATEGIES,
)
from evores.core.errors import ConfigError
from evores.core.results import PRECISION_CHOICES
from evores.core.typed import short
from evores.hpc.sbatch import check_slurm, walltime_seconds
from evores.strategies.initial import check_genomes


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Validate every value and fill in the schedule chosen for the dataset."""
    config = copy.deepcopy(config)
    if config["seed"] < 0:
        raise ConfigError(f"seed must be >= 0, got {config['seed']}")
    _resolve_data(config["data"])
    _resolve_schedule(config["schedule"], config["data"]["path"] == EMBEDDED)
    _check_search(config["search"], config["schedule"])
    _check_train(config["train"])
    _check_fitness(config["fitness"])
    _check_resizer_run(config)
    if config["stop"]["grace_seconds"] < 0:
        raise ConfigError(f"stop.grace_seconds must be >= 0, got {config['stop']['grace_seconds']}")
    check_slurm(config["slurm"], config["train"]["evaluations_per_gpu"])
    _check_walltime(config)
    _check_report(config["report"])
    from evores.strategies.space import SearchSpace, check_buildable

    space = SearchSpace.from_dict(config[SPACE_SECTION])
    check_buildable(space, config["schedule"]["resolutions"])
    config[SPACE_SECTION] = space.to_dict()
    search = config["search"]
    if not isinstance(search["initial"], str):  # a run's path is read when the run starts
        search["initial"] = check_genomes(search["initial"], space, search["population"])
    return config


def _resolve_data(data: dict[str, Any]) -> None:
    from evores.data.resample import CHANNELS, CROPS, FILTERS

    if data["filter"] not in FILTERS:
        raise ConfigError(
            f"data.filter {data['filter']!r} is not a Pillow resampling filter; "
            f"use one of {', '.join(FILTERS)}"
        )
    if data["crop"] not in CROPS:
        raise ConfigError(f"data.crop {data['crop']!r} is unknown; use one of {', '.join(CROPS)}")
    for key in ("val_fraction", "test_fraction"):
        if not 0.0 < data[key] < 0.5:
            raise ConfigError(f"data.{key} must lie in (0, 0.5), got {data[key]}")
    if not data["path"]:
        raise ConfigError(f"data.path is empty; give a dataset path or {EMBEDDED!r}")
    if data["max_decode_pixels"] < 1:
        raise ConfigError(
            f"data.max_decode_pixels must be >= 1, got {data['max_decode_pixels']}; e.g. "
            "250000000 (750 MB as 8-bit RGB)"
        )
    channels = data["channels"]
    if type(channels) not in (str, int) or channels not in CHANNELS:  # True == 1: refused
        raise ConfigError(
            f'data.channels must be "auto", 1 or 3, got {short(channels)}; "auto" stores '
            "one channel where every image is gray"
        )
    for key, example in (("build_workers", "4"), ("memory_budget", "8000000000 (8 GB)")):
        if data[key] < 0:
            raise ConfigError(
                f"data.{key} must be >= 0 (0: decided from this machine), got {data[key]}; "
                f"e.g. {example}"
            )
    _check_resizer(data)


def _check_resizer(data: dict[str, Any]) -> None:
    from evores.data.resizing import RESIZERS

    if data["resizer"] not in RESIZERS:
        raise ConfigError(
            f"data.resizer {data['resizer']!r} is unknown; use one of {', '.join(RESIZERS)}"
        )
    for key, low in (("resizer_source", 0), ("resizer_width", 1), ("resizer_blocks", 0)):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"data.{key} must be a whole number >= {low}, got {value!r}")


def _check_resizer_run(config: dict[str, Any]) -> None:
    """A learned resizer's source must not be below a stage; only evores's training has one."""
    data = config["data"]
    if data["resizer"] == "fixed":
        return
    top = max(config["schedule"]["resolutions"])
    if data["resizer_source"] and data["resizer_source"] < top:
        raise ConfigError(
            f"data.resizer_source {data['resizer_source']} is below the largest resolution "
            f"{top}; set it to at least {top}, or 0 (twice each stage's resolution)"
        )
    if config["fitness"]["function"]:
        raise ConfigError(
            "data.resizer = 'learned' trains with evores's own training, but fitness.function "
            "is set; drop one of them"
        )


def _resolve_schedule(schedule: dict[str, Any], embedded: bool) -> None:
    chosen = EMBEDDED_SCHEDULE if embedded else DEFAULT_SCHEDULE
    if not schedule["resolutions"]:
        schedule["resolutions"] = list(chosen["resolutions"])
    resolutions = schedule["resolutions"]
    if any(not isinstance(v, int) for v in resolutions):
        raise ConfigError(f"schedule.resolutions must be whole numbers, got {resolutions}")
    if any(r < 2 for r in resolutions) or resolutions != sorted(set(resolutions)):
        raise ConfigError(
            f"schedule.resolutions must be strictly increasing pixel sizes >= 2, got {resolutions}"
        )
    if not schedule["evaluations"]:
        schedule["evaluations"] = _split_budget(sum(chosen["evaluations"]), len(resolutions))
    evaluations = schedule["evaluations"]
    if any(not isinstance(v, int) for v in evaluations):
        raise ConfigError(f"schedule.evaluations must be whole numbers, got {evaluations}")
    if len(resolutions) != len(evaluations):
        raise ConfigError(
            f"schedule.resolutions has {len(resolutions)} stages but schedule.evaluations has "
            f"{len(evaluations)}; give one evaluation budget per resolution"
        )
    if not 0.0 <= schedule["narrow_margin"] <= 10.0:
        raise ConfigError(
            f"schedule.narrow_margin must lie in [0, 10], got {schedule['narrow_margin']}"
        )
    _check_fidelity(schedule)


def _check_fidelity(schedule: dict[str, Any]) -> None:
    probe = schedule["probe"]
    if not isinstance(probe, int) or isinstance(probe, bool) or probe < 0:
        raise ConfigError(f"schedule.probe must be a whole number >= 0 (0 = off), got {probe!r}")
    if not -1.0 <= schedule["fidelity_threshold"] <= 1.0:
        raise ConfigError(
            "schedule.fidelity_threshold is a rank correlation in [-1, 1], "
            f"got {schedule['fidelity_threshold']}"
        )
    if schedule["adaptive"] and probe == 0:
        raise ConfigError(
            "schedule.adaptive needs the fidelity probe to measure with; set schedule.probe "
            ">= 1 (e.g. 8) or schedule.adaptive = false"
        )


def _check_walltime(config: dict[str, Any]) -> None:
    """A job must fit at least one evaluation, and the stop's grace period must fit the warning."""
    section = config["slurm"]
    limit = walltime_seconds(section["time"])
    working = limit - section["signal_seconds"]
    budget = config["train"]["max_seconds"]
    if budget and working < budget:
        raise ConfigError(
            f"slurm.time = {section['time']!r} leaves {working} s before the walltime warning, "
            f"less than one evaluation's budget (train.max_seconds = {budget:g}); give the job "
            "more time or lower train.max_seconds"
        )
    grace = config["stop"]["grace_seconds"]
    if section["signal_seconds"] and grace >= section["signal_seconds"]:
        raise ConfigError(
            f"stop.grace_seconds = {grace:g} is not below slurm.signal_seconds = "
            f"{section['signal_seconds']}: the job would be killed during the grace period; "
            "lower the grace or ask for the warning earlier"
        )


def _split_budget(total: int, stages: int) -> list[int]:
    """Hinz's decreasing split (3:2:1 for three stages) of ``total`` evaluations."""
    weights = list(range(stages, 0, -1))
    return [max(1, round(total * w / sum(weights))) for w in weights]


def _check_search(search: dict[str, Any], schedule: dict[str, Any]) -> None:
    if search["strategy"] not in STRATEGIES:
        raise ConfigError(
            f"search.strategy {search['strategy']!r} is unknown; use one of {', '.join(STRATEGIES)}"
        )
    population, elites = search["population"], schedule["elites"]
    if population < 2:
        raise ConfigError(f"search.population must be >= 2, got {population}")
    if not 1 <= elites <= population:
        raise ConfigError(
            f"schedule.elites must lie in [1, search.population={population}], got {elites}"
        )
    if not 0 <= search["elitism"] < population:
        raise ConfigError(
            f"search.elitism must lie in [0, search.population), got {search['elitism']}"
        )
    if search["tournament"] < 1:
        raise ConfigError(f"search.tournament must be >= 1, got {search['tournament']}")
    if not 0.0 < search["mutation_sigma"] <= 1.0:
        raise ConfigError(
            "search.mutation_sigma is a fraction of each gene's log range in (0, 1], "
            f"got {search['mutation_sigma']}"
        )
    for key in ("crossover", "mutation", "mutation_genes"):
        if not 0.0 <= search[key] <= 1.0:
            raise ConfigError(f"search.{key} is a probability in [0, 1], got {search[key]}")
    first, *later = schedule["evaluations"]
    if first < population:
        raise ConfigError(
            f"schedule.evaluations[0] = {first} is smaller than search.population = {population}; "
            "the first stage must evaluate at least one whole population"
        )
    if any(n < elites for n in later):
        raise ConfigError(
            f"schedule.evaluations {schedule['evaluations']}: every later stage must allow at "
            f"least schedule.elites = {elites} evaluations, to re-evaluate the elites"
        )


def _check_train(train: dict[str, Any]) -> None:
    for key in ("max_epochs", "patience"):
        if train[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {train[key]}")
    if not train["max_seconds"] >= 0 or math.isinf(train["max_seconds"]):
        raise ConfigError(
            f"train.max_seconds must be a finite number >= 0 (0 = no budget), "
            f"got {train['max_seconds']}"
        )
    if train["threads"] < 0:
        raise ConfigError(f"train.threads must be >= 0 (0 = automatic), got {train['threads']}")
    if train["precision"] not in PRECISION_CHOICES:
        raise ConfigError(
            f"train.precision = {train['precision']!r} is unknown; use one of "
            f"{', '.join(PRECISION_CHOICES)} (auto: bf16 on a CUDA GPU that has it, else fp32)"
        )
    if train["evaluations_per_gpu"] < 1:
        raise ConfigError(
            f"train.evaluations_per_gpu must be >= 1, got {train['evaluations_per_gpu']}"
        )


def _check_report(section: dict[str, Any]) -> None:
    import importlib.util

    if section["tensorboard"] and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "report.tensorboard = true needs the tensorboard package; "
            "pip install 'evores[tensorboard]' or set report.tensorboard = false"
        )
    if section["mlflow"] and importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            f"report.mlflow = {section['mlflow']!r} needs the mlflow package; "
            "pip install 'evores[mlflow]' or set report.mlflow = \"\""
        )


def _check_fitness(fitness: dict[str, Any]) -> None:
    function = fitness["function"]
    if function and (function.count(":") != 1 or not all(function.split(":"))):
        raise ConfigError(
            f"fitness.function {function!r} must name a function as 'package.module:function'"
        )
