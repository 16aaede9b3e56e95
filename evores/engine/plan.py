"""Before a job: how long a run will take and how much memory an evaluation and its data need.

``python -m evores.plan --config my.toml [--gpus N | --cpus N]`` trains a few genomes sampled
from the run's search space for a few epochs at every resolution of its ladder, on this
machine, and turns what it measured into the expected wall time of the whole run for N
workers, split by stage, the peak memory of an evaluation, and the ``#SBATCH --time`` to ask
for. What is measured (seconds per epoch, memory) and what is extrapolated (how many epochs
early stopping leaves, how the search's genomes compare with uniform samples, that N workers
run N times as fast) is printed apart, so the figure is read for what it is. It also says
how much memory each rank's data takes at every rung (the uint8 images of the splits it trains
and evaluates on), whether that rung is held in memory or read through a shared memory map
(``data.memory_budget``), and whether it fits the node's memory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from evores import config as configuration
from evores.core.errors import ConfigError

# The estimate's upper bound is padded by this factor in the suggested walltime: the
# search's genomes are not the uniform samples timed here.
SAFETY_FACTOR = 1.25


@dataclass(frozen=True)
class ResolutionCost:
    """What the planner measured at one resolution."""

    resolution: int
    seconds_per_epoch: tuple[float, ...]  # one per successful sampled genome
    peak_memory_bytes: int
    failed: int

    @property
    def mean_seconds_per_epoch(self) -> float:
        return float(np.mean(self.seconds_per_epoch)) if self.seconds_per_epoch else math.nan


@dataclass(frozen=True)
class RungMemory:
    """The images one rank holds for one part of the schedule."""

    name: str
    resolution: int  # as stored (a learned resizer's source resolution)
    bytes: int
    mapped: bool  # over the budget: one copy in the node's page cache, shared by its ranks


@dataclass(frozen=True)
class Phase:
    """One part of the run's schedule with its expected wall time, as a (low, high) range."""

    name: str
    resolution: int
    evaluations: int
    seconds: tuple[float, float]


def epochs_range(train: dict[str, Any]) -> tuple[int, int]:
    """The fewest and most epochs one evaluation trains: early stopping ends it ``patience``
    epochs after its best, so never before epoch ``patience + 1``; ``max_epochs`` caps it."""
    most = train["max_epochs"]
    return min(most, train["patience"] + 1), most


def rounds(evaluations: int, workers: int, batch: int | None) -> float:
    """How many evaluation times ``evaluations`` take on ``workers``: all busy in the
    asynchronous mode (``batch`` None); a generation of ``batch`` at a time otherwise, each
    waiting for its last evaluation."""
    if batch is None:
        return evaluations / workers
    full, rest = divmod(evaluations, batch)
    return full * math.ceil(batch / workers) + math.ceil(rest / workers)


def estimate(config: dict[str, Any], costs: dict[int, ResolutionCost], workers: int) -> list[Phase]:
    """The run's stages and its final retraining, each with its expected wall time."""
    schedule, search = config["schedule"], config["search"]
    batch = None if search["asynchronous"] else search["population"]
    low_epochs, high_epochs = epochs_range(config["train"])
    phases = []
    for n, (resolution, budget) in enumerate(
        zip(schedule["resolutions"], schedule["evaluations"], strict=True)
    ):
        times = rounds(budget, workers, batch) * costs[resolution].mean_seconds_per_epoch
        phases.append(
            Phase(f"stage {n + 1}", resolution, budget, (times * low_epochs, times * high_epochs))
        )
    last, elites = schedule["resolutions"][-1], schedule["elites"]
    # The final retraining trains each candidate for its best epoch count: 1 to max_epochs.
    times = rounds(elites, workers, elites) * costs[last].mean_seconds_per_epoch
    phases.append(Phase("final", last, elites, (times * 1, times * high_epochs)))
    return phases


def tasks_per_node(config: dict[str, Any]) -> int:
    """The tasks the config's batch script starts on a node (the driver's slot included)."""
    from evores.hpc.sbatch import sbatch_flags

    flags = sbatch_flags(config["slurm"], config["train"]["evaluations_per_gpu"])
    return int(flags.get("ntasks-per-node") or flags["ntasks"])


def data_budget(config: dict[str, Any], available: int) -> int:
    """The bytes of images a rank of the job may hold in memory: ``data.memory_budget``, or
    the automatic share of ``available`` among the tasks of a node."""
    from evores.training.prepared import AUTO_BUDGET_SHARE

    setting = config["data"]["memory_budget"]
    return setting if setting > 0 else int(AUTO_BUDGET_SHARE * available / tasks_per_node(config))


def rung_memory(config: dict[str, Any], cache: Any, budget: int) -> list[RungMemory]:
    """Per stage (train + val) and for the final retraining (train + val, then test)."""
    from evores.data.resizing import resizer_spec

    spec = resizer_spec(config["data"])
    resolutions = config["schedule"]["resolutions"]
    parts = [(f"stage {n + 1}", r, ("train", "val")) for n, r in enumerate(resolutions)]
    parts.append(("final", resolutions[-1], ("train+val", "test")))
    rungs = []
    for name, resolution, splits in parts:
        stored = resolution if spec is None else spec.source_for(resolution)
        size = sum(cache.split_bytes(stored, split) for split in splits)
        rungs.append(RungMemory(name, stored, size, size > budget))
    return rungs


def _memory_lines(config, rungs: list[RungMemory], budget: int, available: int) -> list[str]:
    from evores.training.prepared import AUTO_BUDGET_SHARE

    tasks = tasks_per_node(config)
    setting = config["data"]["memory_budget"]
    how = (
        "data.memory_budget"
        if setting > 0
        else f"auto: {AUTO_BUDGET_SHARE:.0%} of the {_mib(available)} available here, shared by "
        f"the {tasks} task(s) per node of the [slurm] job"
    )
    lines = ["", f"data per rank (uint8 images; budget {_mib(budget)}, {how}):"]
    for rung in rungs:
        if rung.mapped:
            fits = "fits" if rung.bytes <= available else "does NOT fit: epochs re-read the disk"
            where = f"memory-mapped, one copy per node in the page cache ({fits} in memory here)"
        else:
            where = f"in memory, up to {tasks} x {_mib(rung.bytes)} on a node"
        lines.append(f"  {rung.name:>7} {rung.resolution:>4} px: {_mib(rung.bytes)}, {where}")
    resident = max((r.bytes for r in rungs if not r.mapped), default=0)
    if resident * tasks > available:
        lines.append(
            f"  the in-memory rungs of {tasks} tasks ({_mib(resident * tasks)}) exceed the "
            f"memory available here: lower data.memory_budget to map them"
        )
    return lines


def _mib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def walltime_request(seconds: float, setup_seconds: float, slurm: dict[str, Any]) -> str:
    """``--time`` (H:MM:SS, whole minutes) for a run of about ``seconds``: padded by
    :data:`SAFETY_FACTOR`, plus the setup, plus ``slurm.signal_seconds`` (the walltime warning
    comes that long before the limit; from then on the run only checkpoints)."""
    total = seconds * SAFETY_FACTOR + setup_seconds + slurm["signal_seconds"]
    minutes = max(1, math.ceil(total / 60))
    days, hours, minutes = minutes // 1440, minutes % 1440 // 60, minutes % 60
    return f"{days}-{hours:02d}:{minutes:02d}:00" if days else f"{hours:02d}:{minutes:02d}:00"


def measure(
    config: dict[str, Any], cache: Any, device: Any, genomes: int, epochs: int
) -> dict[int, ResolutionCost]:
    """Train ``genomes`` genomes sampled from the config's space (seeded by its seed) for
    ``epochs`` epochs each at every resolution of the ladder, after one untimed warm-up."""
    from evores.strategies.space import SearchSpace
    from evores.training.fitness import PreparedData, evaluate

    space = SearchSpace.from_dict(config["space"])
    rng = np.random.default_rng(config["seed"])
    sampled = [space.sample(rng) for _ in range(genomes)]
    costs: dict[int, ResolutionCost] = {}
    for resolution in config["schedule"]["resolutions"]:
        data = PreparedData.from_cache(cache, resolution, device=device)
        if not costs:  # the first evaluation of a process pays for torch's warm-up
            evaluate(sampled[0], resolution, data, seed=0, max_epochs=1, space=space)
        results = [
            evaluate(
                genome,
                resolution,
                data,
                seed=n,
                max_epochs=epochs,
                patience=epochs,
                max_seconds=None,
                space=space,
            )  # fmt: skip
            for n, genome in enumerate(sampled)
        ]
        ok = [r for r in results if r.status == "ok"]
        costs[resolution] = ResolutionCost(
            resolution,
            tuple(r.seconds_per_epoch for r in ok),
            max(r.peak_memory_bytes for r in results),
            len(results) - len(ok),
        )
        del data
    return costs


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _range(seconds: tuple[float, float]) -> str:
    return f"{_duration(seconds[0])} - {_duration(seconds[1])}"


def render(
    config: dict[str, Any],
    costs: dict[int, ResolutionCost],
    phases: list[Phase],
    setting: dict[str, Any],
) -> str:
    """The planner's report: what it measured, what it expects, the walltime to ask for."""
    train = config["train"]
    low_epochs, high_epochs = epochs_range(train)
    if setting["device"].startswith("cuda"):
        memory = "GPU memory allocated by one evaluation"
    else:  # ru_maxrss: the whole worker process (torch and the data included), never lower
        memory = "resident memory of a worker process, torch and the data included"
    lines = [
        f"measured on this machine ({setting['device']}, {setting['threads']} thread(s) per "
        f"evaluation): {setting['genomes']} genome(s) sampled from the search space, "
        f"{setting['epochs']} epoch(s) each, at every resolution (one warm-up untimed)",
        f"  dataset cache: {setting['setup_seconds']:.1f} s to open or build (a run pays it once)",
    ]
    for cost in costs.values():
        spread = cost.seconds_per_epoch
        lines.append(
            f"  {cost.resolution:>4} px: {cost.mean_seconds_per_epoch:.3f} s per epoch "
            f"(sampled genomes {min(spread, default=math.nan):.3f} - "
            f"{max(spread, default=math.nan):.3f}), peak memory "
            f"{cost.peak_memory_bytes / 2**20:.0f} MiB ({memory}), "
            f"{cost.failed} of {setting['genomes']} failed"
        )
    mode = "asynchronous" if config["search"]["asynchronous"] else "synchronous"
    total = (sum(p.seconds[0] for p in phases), sum(p.seconds[1] for p in phases))
    lines += [
        "",
        f"expected wall time with {setting['workers']} worker(s), {mode} mode "
        f"(extrapolated): {_range(total)}",
    ]
    for phase in phases:
        what = "retrainings" if phase.name == "final" else "evaluations"
        lines.append(
            f"  {phase.name:>7} {phase.resolution:>4} px: {phase.evaluations:>5} {what}  "
            f"{_range(phase.seconds)}"
        )
    lines += [
        "",
        "extrapolated, not measured: each evaluation trains "
        f"{low_epochs} to {high_epochs} epochs (early stopping; train.patience = "
        f"{train['patience']}, train.max_epochs = {train['max_epochs']}); the search's genomes "
        "cost what the uniform samples cost (narrowing and selection shift them); "
        f"{setting['workers']} worker(s) each as fast as this one process; each rung's "
        "data is read as below (in memory or mapped), as it was here.",
    ]
    if "rungs" in setting:
        lines += _memory_lines(config, setting["rungs"], setting["budget"], setting["available"])
    lines += _walltime_lines(config, total[1], setting["setup_seconds"])
    return "\n".join(lines) + "\n"


def _walltime_lines(config: dict[str, Any], high: float, setup: float) -> list[str]:
    slurm = config["slurm"]
    request = walltime_request(high, setup, slurm)
    working = configuration.walltime_seconds(slurm["time"]) - slurm["signal_seconds"]
    allocations = max(1, math.ceil(high * SAFETY_FACTOR / working))
    return [
        "",
        f"#SBATCH --time={request}",
        f"  (the upper estimate x {SAFETY_FACTOR}, plus the setup, plus slurm.signal_seconds "
        f"= {slurm['signal_seconds']} s: the walltime warning comes that long before the limit, "
        "and the run then only checkpoints for the requeue)",
        f"  with the config's slurm.time = {slurm['time']!r} ({working} s of work per "
        + (
            "allocation) the run fits in one allocation"
            if allocations == 1
            else f"allocation) the run takes about {allocations} allocations, requeued and "
            "resumed by the batch script"
        ),
    ]


def _setting(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """Device, workers and threads the plan is for, checked before anything is measured."""
    import torch

    from evores.training.fitness import resolve_device

    if args.gpus:
        if not torch.cuda.is_available():
            raise ConfigError(
                "--gpus asks for an estimate on GPUs, but this machine has none to measure "
                "on; run the planner on a GPU node (e.g. srun --gpus=1 python -m evores.plan "
                "...), or use --cpus"
            )
        device, workers = resolve_device("cuda:0"), args.gpus
    elif args.cpus:
        device, workers = resolve_device("cpu"), args.cpus
    else:
        device, workers = resolve_device(config["train"]["device"]), 1
    threads = config["train"]["threads"] or torch.get_num_threads()
    return {"device": str(device), "workers": workers, "threads": threads}


def plan(args: argparse.Namespace) -> str:
    """Measure and render (raises EvoresError for a user's mistake)."""
    for name in ("gpus", "cpus", "genomes", "epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    config = configuration.load(args.config, args.overrides)
    if config["fitness"]["function"]:
        print(
            f"evores plan: note: fitness.function = {config['fitness']['function']!r} is set, "
            "but the plan times evores' own CNN training; its figures hold for that, not for "
            "your function",
            file=sys.stderr,
        )
    setting = _setting(args, config)
    import torch

    from evores.data.opener import open_dataset
    from evores.training.prepared import available_memory

    torch.set_num_threads(setting["threads"])
    print(
        f"evores plan: timing {args.genomes} genome(s) x {args.epochs} epoch(s) at "
        f"{config['schedule']['resolutions']} px on {setting['device']} ...",
        file=sys.stderr,
    )
    started = time.perf_counter()
    cache = open_dataset(config)
    setting["setup_seconds"] = time.perf_counter() - started
    setting["available"] = available_memory()
    setting["budget"] = data_budget(config, setting["available"])
    setting["rungs"] = rung_memory(config, cache, setting["budget"])
    cache = cache.with_memory_budget(setting["budget"])  # timed as the job will read them
    setting.update(genomes=args.genomes, epochs=args.epochs)
    costs = measure(config, cache, setting["device"], args.genomes, args.epochs)
    if any(not cost.seconds_per_epoch for cost in costs.values()):
        failed = [c.resolution for c in costs.values() if not c.seconds_per_epoch]
        raise ConfigError(
            f"every sampled genome failed at {failed} px, so there is nothing to extrapolate "
            "from; time more genomes (--genomes) or check the search space"
        )
    return render(config, costs, estimate(config, costs, setting["workers"]), setting)
