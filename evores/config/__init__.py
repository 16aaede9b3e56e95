"""The run configuration: TOML in, a validated plain dict out, the resolved TOML written back.

Every key is declared here with its type and default; unknown keys are rejected with the valid
ones listed, so a typo never silently falls back to a default. The resolved configuration (with
the schedule chosen for the dataset filled in) is what a run directory records and what a
resumed run reads back.
"""

from __future__ import annotations

import codecs
import copy
import json
import logging
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evores.core.errors import ConfigError
from evores.core.results import PRECISION_CHOICES
from evores.strategies.initial import check_genomes
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
_SPACE_SECTION = "space"

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
        # Genomes of the first population (evores.strategies.initial): a list of genome tables, or an
        # earlier run directory's path; resolved to the list when the config is loaded.
        "initial": [],
    },
    "train": TRAIN_DEFAULTS,
    "fitness": {"function": ""},
    # How a run stops early (walltime warning, preemption, Ctrl-C): evaluations still running
    # get this long to finish before they are abandoned and re-run on --resume.
    "stop": {"grace_seconds": 60.0},
    # What a run shows while it goes, besides its log lines, plots and provisional summary.
    "report": {"tensorboard": False},
}

# The [slurm] section: what `python -m evores.slurm` turns into #SBATCH flags (evores.hpc.sbatch),
# and what the walltime checks below hold the run's budgets against.
SLURM_DEFAULTS: dict[str, Any] = {
    "partition": "",  # "" = the cluster's default partition
    "account": "",  # "" = the user's default account
    "time": "01:00:00",  # walltime per allocation; a requeued job gets it again
    "nodes": 1,
    "gpus_per_node": 0,  # 0 = CPU only
    "cpus_per_task": 1,
    "workers_per_node": 0,  # evaluating ranks per node; 0 = evaluations_per_gpu per GPU, or 2
    "signal_seconds": 120,  # walltime warning (SIGUSR1) this long before the limit; 0 = none
    "extra": [],  # more sbatch flags, "--flag=value" or "--flag"; they replace generated ones
}

STRATEGIES = ("ga", "random", "tpe")


def _space_defaults() -> dict[str, Any]:
    from evores.strategies.space import SearchSpace

    return SearchSpace().to_dict()


def defaults() -> dict[str, Any]:
    """A fresh copy of every key with its default value."""
    config = copy.deepcopy(DEFAULTS)
    config[_SPACE_SECTION] = _space_defaults()
    config["slurm"] = copy.deepcopy(SLURM_DEFAULTS)
    return config


def load(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
    initial: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read ``path`` (TOML), apply ``section.key=value`` overrides, then ``values`` (Python
    values in the TOML's shape, from :func:`evores.search`), validate and resolve.

    ``initial`` is what a ``search.initial`` run directory resolved to when the run started:
    a resume compares its config with the run's without reading that directory again.
    Deprecated names are logged once the config has resolved, so a refused config is still
    one line.
    """
    config = defaults()
    updates = [] if path is None else [(read_toml(path), str(path))]
    updates += [(parse_override(item), f"--set {item}") for item in overrides or []]
    if values:
        updates.append((values, "search() arguments"))
    given: set[str] = set()
    for update, origin in updates:
        given |= _merge(config, update, origin)
    if initial is not None and isinstance(config["search"]["initial"], str):
        config["search"]["initial"] = initial
    if config["data"]["path"] == EMBEDDED:
        for key, value in EMBEDDED_SPACE.items():
            if f"{_SPACE_SECTION}.{key}" not in given:
                config[_SPACE_SECTION][key] = list(value)
    resolved = resolve(config)
    for update, origin in updates:
        _warn_deprecated(update, origin)
    return resolved


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(path)!r} {problem}; give the path of a TOML file")
    try:
        with path.open("rb") as handle:
            if handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
                raise ConfigError(
                    f"config file {str(path)!r} starts with a UTF-8 byte-order mark (BOM), which "
                    "TOML does not allow; save it as UTF-8 without BOM"
                )
            handle.seek(0)
            return tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"config file {str(path)!r} is not valid TOML ({error}); fix the syntax, "
            "e.g. `seed = 1` or `[schedule]` then `resolutions = [32, 64]`"
        ) from None


def parse_override(item: str) -> dict[str, Any]:
    """``schedule.resolutions=[16,32]`` -> ``{"schedule": {"resolutions": [16, 32]}}``.

    The value is read as a TOML value; a bare word that is not TOML (a path, say) is a string.
    """
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"--set {item!r} is not of the form section.key=value, e.g. seed=3")
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    parts = name.split(".")
    if len(parts) > 2:
        raise ConfigError(f"--set {item!r}: keys have at most one dot (section.key)")
    return {parts[0]: value} if len(parts) == 1 else {parts[0]: {parts[1]: value}}


def _merge(config: dict[str, Any], update: dict[str, Any], origin: str) -> set[str]:
    """Apply ``update`` to ``config``; returns the names it set (``section.key`` or ``key``)."""
    given = set()
    for key, value in update.items():
        if key not in config:
            _unknown(key, config, origin)
        if isinstance(config[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{origin}: [{key}] is a section, got the value {value!r}; "
                    f"set its keys, e.g. {key}.{next(iter(config[key]))} = ..."
                )
            if key == _SPACE_SECTION:
                from evores.strategies.space import current_names

                value = current_names(value, where=f"{origin}: [{_SPACE_SECTION}]")
            for sub, subvalue in value.items():
                if sub not in config[key]:
                    _unknown(f"{key}.{sub}", config[key], origin)
                config[key][sub] = _checked_type(f"{key}.{sub}", config[key][sub], subvalue)
                given.add(f"{key}.{sub}")
        else:
            config[key] = _checked_type(key, config[key], value)
            given.add(key)
    return given


def _warn_deprecated(update: dict[str, Any], origin: str) -> None:
    """One line per earlier gene name that ``update`` used in ``[space]`` (read as the new)."""
    from evores.strategies.space import DEPRECATED_NAMES

    section = update.get(_SPACE_SECTION)
    for earlier, name in DEPRECATED_NAMES.items():
        if isinstance(section, dict) and earlier in section:
            log.warning("%s: space.%s is deprecated; use space.%s", origin, earlier, name)


def _unknown(name: str, scope: dict[str, Any], origin: str) -> None:
    valid = ", ".join(sorted(scope))
    raise ConfigError(f"{origin}: unknown key {name!r}; valid keys here: {valid}")


def _checked_type(name: str, default: Any, value: Any) -> Any:
    """``value`` with the type of ``default`` (ints are accepted where floats are expected)."""
    if name == "search.initial":  # genome tables or a path: evores.strategies.initial checks them
        from evores.strategies.initial import checked_value

        return checked_value(value)
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    strings = name == "slurm.extra"  # the one list of strings: sbatch flags
    if isinstance(default, list) and ok:
        element = str if strings else (int, float)
        ok = all(isinstance(v, element) and not isinstance(v, bool) for v in value)
    numbers = value if isinstance(value, list) else [value]
    if ok and any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        raise ConfigError(
            f"{name} must be a finite number, got {value!r}; e.g. {name} = {to_toml_value(default)}"
        )
    if not ok:
        expected = type(default).__name__
        if isinstance(default, list):
            expected = "a list of strings" if strings else "a list of numbers"
        raise ConfigError(
            f"{name} must be {expected}, got {value!r} ({type(value).__name__}); "
            f"e.g. {name} = {to_toml_value(default)}"
        )
    return value


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
    _check_slurm(config["slurm"], config["train"]["evaluations_per_gpu"])
    _check_walltime(config)
    _check_report(config["report"])
    from evores.strategies.space import SearchSpace, check_buildable

    space = SearchSpace.from_dict(config[_SPACE_SECTION])
    check_buildable(space, config["schedule"]["resolutions"])
    config[_SPACE_SECTION] = space.to_dict()
    search = config["search"]
    if not isinstance(search["initial"], str):  # a run's path is read when the run starts
        search["initial"] = check_genomes(search["initial"], space, search["population"])
    return config


def _resolve_data(data: dict[str, Any]) -> None:
    from evores.data.resample import CROPS, FILTERS

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
    _check_resizer(data)


def _check_resizer(data: dict[str, Any]) -> None:
    from evores.training.resizer import RESIZERS

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


def slurm_settings(
    section: Mapping[str, Any] | None, evaluations_per_gpu: int = 1
) -> dict[str, Any]:
    """A ``[slurm]`` section on its own (as the sbatch renderer gets it) with defaults filled
    in and every value checked, as :func:`load` checks it in a whole config (whose
    ``train.evaluations_per_gpu`` is passed in)."""
    config = {"slurm": copy.deepcopy(SLURM_DEFAULTS)}
    _merge(config, {"slurm": dict(section or {})}, origin="[slurm]")
    _check_slurm(config["slurm"], evaluations_per_gpu)
    return config["slurm"]


def _check_slurm(slurm: dict[str, Any], evaluations_per_gpu: int = 1) -> None:
    """The ranges of the ``[slurm]`` values (their types are checked on merging)."""
    for key in ("nodes", "cpus_per_task"):
        if slurm[key] < 1:
            raise ConfigError(f"slurm.{key} must be >= 1, got {slurm[key]}")
    for key in ("gpus_per_node", "workers_per_node", "signal_seconds"):
        if slurm[key] < 0:
            raise ConfigError(f"slurm.{key} must be >= 0, got {slurm[key]}")
    slots = slurm["gpus_per_node"] * evaluations_per_gpu
    if slurm["gpus_per_node"] and slurm["workers_per_node"] > slots:
        raise ConfigError(
            f"slurm.workers_per_node = {slurm['workers_per_node']} exceeds slurm.gpus_per_node "
            f"x train.evaluations_per_gpu = {slurm['gpus_per_node']} x {evaluations_per_gpu}: "
            "each GPU takes that many evaluating ranks; use at most that many, 0 for as many, "
            "or raise train.evaluations_per_gpu"
        )
    limit = walltime_seconds(slurm["time"])
    if slurm["signal_seconds"] >= limit:
        raise ConfigError(
            f"slurm.signal_seconds = {slurm['signal_seconds']} is not below slurm.time = "
            f"{slurm['time']!r} ({limit} s); warn earlier than the walltime or give more time"
        )
    for flag in slurm["extra"]:
        if not re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", flag, flags=re.DOTALL):
            raise ConfigError(
                f"slurm.extra entry {flag!r} is not a long sbatch flag; write '--flag=value' "
                "or '--flag', e.g. '--qos=high'"
            )


def walltime_seconds(text: str) -> int:
    """SLURM's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match:
        days, first, second, third = (int(g) if g else 0 for g in match.groups())
        if match[1]:  # D-H, D-H:M, D-H:M:S
            seconds = ((days * 24 + first) * 60 + second) * 60 + third
        elif match[4]:  # H:M:S
            seconds = (first * 60 + second) * 60 + third
        else:  # M, M:S
            seconds = first * 60 + second
        if seconds > 0:
            return seconds
    raise ConfigError(
        f"slurm.time {text!r} is not a positive SLURM time; use e.g. '01:00:00' (H:M:S), "
        "'90' (minutes) or '2-00:00:00' (days-H:M:S)"
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


def _check_fitness(fitness: dict[str, Any]) -> None:
    function = fitness["function"]
    if function and (function.count(":") != 1 or not all(function.split(":"))):
        raise ConfigError(
            f"fitness.function {function!r} must name a function as 'package.module:function'"
        )


def to_toml(config: dict[str, Any]) -> str:
    """The TOML text of a resolved configuration (scalars first, then one table per section)."""
    lines = [f"{key} = {to_toml_value(v)}" for key, v in config.items() if not isinstance(v, dict)]
    for section, values in config.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"]
            lines += [f"{key} = {to_toml_value(v)}" for key, v in values.items()]
    return "\n".join(lines) + "\n"


def to_toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"cannot write the non-finite number {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "[\n" + "".join(f"    {to_toml_value(v)},\n" for v in value) + "]"  # a table a line
    if isinstance(value, list):
        return "[" + ", ".join(to_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (search.initial's genomes)
        return "{" + ", ".join(f"{k} = {to_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to TOML")
