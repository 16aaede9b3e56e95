"""A whole search from Python: :func:`search`, which the command line ``python -m evores.run``
wraps.

``search`` reads and checks everything a user can get wrong (config, run directory, dataset)
before a single file of the run is written, drives the search, logs every evaluation as it
completes, checkpoints every generation, writes the summary and plots and returns the summary.
Mistakes raise :class:`evores.core.errors.EvoresError` subclasses (the CLI turns them into one line
and exit code 2); a run stopped by a signal raises :class:`evores.execution.stopping.RunStopped`
once
its checkpoint is written, and ``resume=True`` continues it. The stop-signal handlers are
installed for the run and the previous ones restored when it returns. Logging goes to the
``evores`` logger, which only the CLI configures; ``verbose=True`` (the default) shows its
lines on stderr for the call when the caller configured no logging, with a progress bar when
stderr is a terminal. ``callbacks`` hear of every evaluation and stage on rank 0
(:mod:`evores.reporting.callbacks`).

Overrides are Python values in the TOML's shape: a top-level key as itself (``seed=3``), a
section as a dict of its keys (``train={"max_epochs": 2}``, ``schedule={"resolutions": [8,
16]}``). ``config`` is a TOML path, or a dict of the same shape, or None for the defaults.

Under MPI every rank calls ``search`` alike: rank 0 drives and returns the summary, the other
ranks evaluate and return None.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evores import config as configuration
from evores.core.errors import CheckpointError, EvoresError
from evores.core.exits import EXIT_CHECKPOINTED, EXIT_USAGE
from evores.data.opener import open_dataset
from evores.execution.stopping import STOP_SIGNALS, RunStopped, StopRequest, ignore_stop_signals
from evores.reporting import console, tensorboard
from evores.reporting.callbacks import check_callbacks
from evores.store.checkpoint import CONFIG, RunDirectory
from evores.store.resume import check_config_early
from evores.store.rundir import run_directory
from evores.store.warmstart import genomes_of_run
from evores.strategies.initial import check_genomes
from evores.strategies.space import SearchSpace

log = logging.getLogger("evores")


@dataclass(frozen=True)
class Request:
    """What a search is asked for: the config's sources, the run directory, fresh or resumed.

    ``overrides`` are the CLI's ``section.key=value`` strings, ``values`` the Python API's."""

    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    resume: bool = False
    callbacks: tuple[Any, ...] = ()


def search(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    out: str | Path,
    resume: bool = False,
    verbose: bool = True,
    callbacks: list[Any] | None = None,
    **overrides: Any,
) -> dict[str, Any] | None:
    """Run (or with ``resume`` continue) a search into the run directory ``out``; its summary.

    ``verbose``: show the run's progress on stderr unless logging is configured;
    ``callbacks``: objects with ``on_evaluation(record)`` and/or ``on_stage(stage)``. A run
    that ends without a winner still returns its summary, whose ``outcome`` says why."""
    if not str(out).strip():
        raise CheckpointError("out is empty; give the run directory's path")
    hooks = tuple(check_callbacks(callbacks))
    path, values = None, dict(overrides)
    if isinstance(config, Mapping):
        values = _combined(config, overrides)
    elif config is not None:
        path = Path(config)
    request = Request(config=path, values=values, out=Path(out), resume=resume, callbacks=hooks)
    with console.verbose_logging(verbose):
        return run_request(request, drive=_drive_for_summary)


def _combined(config: Mapping[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``overrides`` on top, section by section."""
    values = {key: dict(value) if isinstance(value, Mapping) else value
              for key, value in config.items()}  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(values.get(key), dict):
            values[key].update(value)
        else:
            values[key] = value
    return values


def run_request(request: Request, drive) -> Any:
    """Claim, check and run ``request`` on this rank; ``drive(setup, comm, stop)`` drives it
    on rank 0. Evaluating ranks serve and return ``None`` (or the refusal's exit code)."""
    from evores.execution.evaluators import mpi_world

    comm = mpi_world()
    rank = comm.Get_rank() if comm is not None else 0
    if rank != 0:
        ignore_stop_signals()
        code = _serve(comm)
        return None if code == 0 else code
    # From here on a signal stops the run cleanly (see evores.execution.stopping); the grace period
    # is
    # set once the config is read.
    stop = StopRequest()
    with _stop_signals(stop):
        try:
            setup = _prepare(request)
        except EvoresError:
            if comm is not None:
                comm.bcast(None, root=0)
            raise
        stop.grace_seconds = setup["config"]["stop"]["grace_seconds"]
        if comm is not None:
            comm.bcast(setup["config"], root=0)
            comm.bcast(str(setup["run_dir"].path), root=0)  # for the final candidates' weights
        try:
            return drive(setup, comm, stop)
        finally:
            setup["run_dir"].unlock()


@contextmanager
def _stop_signals(stop: StopRequest) -> Iterator[None]:
    """``stop`` handles the stop signals while the run goes; the previous handlers after,
    except that a walltime warning (SIGUSR1) that would end the process is ignored from then
    on: the run has nothing left to checkpoint, and a rank it ended during the job's teardown
    would leave the other ranks waiting in MPI_Finalize until the time limit.

    Outside the main thread Python cannot install signal handlers: the run goes without."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    stop.install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if signum == signal.SIGUSR1 and handler == signal.SIG_DFL:
                handler = signal.SIG_IGN
            signal.signal(signum, handler)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
    initial: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A run's configuration (:func:`evores.config.load`) with a ``search.initial`` run
    directory read into its genomes: the configuration layer reads nothing but its file."""
    config = configuration.load(path, overrides, values, initial=initial)
    search = config["search"]
    if isinstance(search["initial"], str):
        genomes, where = genomes_of_run(search["initial"], search["population"])
        space = SearchSpace.from_dict(config["space"])
        search["initial"] = check_genomes(genomes, space, search["population"], where)
    return config


def _prepare(args: Request) -> dict[str, Any]:
    """Everything a user can get wrong is checked here; the run directory is claimed (created
    and locked) before anything is written into it, and released again on a refusal."""
    run_dir = run_directory(args.out, args.resume)
    if args.resume:
        config = _resumed_config(args, run_dir)
    else:
        config = load_config(args.config, args.overrides, args.values)
        if not run_dir.is_empty():
            raise CheckpointError(
                f"run directory {str(run_dir.path)!r} is not empty; pass resume=True "
                "(--resume) to continue that run, or choose a new one (out=, --out)"
            )
    run_dir.claim(fresh=not args.resume)
    try:
        if args.resume:
            check_config_early(run_dir, config)  # before a changed [data] builds a cache
        cache = _check_environment(config)
        if not args.resume:
            _write_config(run_dir, config)
    except BaseException:
        run_dir.release()
        raise
    return {"config": config, "run_dir": run_dir, "cache": cache, "callbacks": args.callbacks}


def _write_config(run_dir: RunDirectory, config: dict[str, Any]) -> None:
    try:
        run_dir.create(configuration.to_toml(config))
    except OSError as error:
        raise CheckpointError(
            f"cannot write the run directory {str(run_dir.path)!r} ({error.strerror}); "
            "choose a writable one (out=, --out)"
        ) from None


def _check_environment(config: dict[str, Any]):
    """The job, the device, the dataset and the fitness function the run needs; the cache."""
    _set_threads(config, workers=1)
    from evores.hpc.environment import SlurmEnvironment

    SlurmEnvironment.from_env()  # inconsistent SLURM_* variables: refuse before writing
    from evores.training.fitness import resolve_device

    resolve_device(config["train"]["device"])  # a GPU asked for but absent: likewise
    cache = open_dataset(config, progress=console.cache_progress(console.bar_stream()))
    from evores.execution.worker import load_function

    if config["fitness"]["function"]:
        load_function(config["fitness"]["function"])
    return cache


def _resumed_config(args: Request, run_dir: RunDirectory) -> dict[str, Any]:
    if not run_dir.has_run():
        raise CheckpointError(
            f"nothing to resume in {str(run_dir.path)!r}: it has no {CONFIG}; "
            "start a fresh run without resume=True (--resume)"
        )
    config = configuration.load(run_dir.file(CONFIG))
    if args.config is not None or args.overrides or args.values:
        # (a search.initial run directory is not read again: the run keeps its genomes)
        initial = config["search"]["initial"]
        wanted = load_config(args.config, args.overrides, args.values, initial=initial)
        if wanted != config:
            raise CheckpointError(
                f"resume=True (--resume) continues {str(run_dir.path)!r} with the config it was "
                "started with; drop the config and overrides (--config, --set), or start a new "
                "run directory for a different config"
            )
    return config


def _set_threads(config: dict[str, Any], workers: int) -> None:
    """Intra-op threads per rank: as configured, else the node's cores shared among its ranks."""
    import torch

    threads = config["train"]["threads"]
    if threads == 0 and workers > 1:
        # The cores this process may run on (SLURM's allocation, taskset), not the machine's.
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
    if threads > 0:
        torch.set_num_threads(threads)


def _local_ranks(comm) -> int:
    return comm.Split_type(split_type=_shared_type()).Get_size()


def _shared_type() -> int:
    from mpi4py import MPI

    return MPI.COMM_TYPE_SHARED


def _serve(comm) -> int:
    from evores.execution.evaluators import serve
    from evores.execution.worker import make_work

    local = _local_ranks(comm)
    config = comm.bcast(None, root=0)
    if config is None:
        return EXIT_USAGE
    run_dir = comm.bcast(None, root=0)
    _set_threads(config, workers=max(1, local - 1))
    _keep_heap()
    try:
        work = make_work(
            config, open_dataset(config), run_dir, tensorboard.epoch_curves(config, run_dir)
        )
    except EvoresError as error:  # e.g. this rank has no GPU of its own
        print(f"evores: error: rank {comm.Get_rank()}: {error}", file=sys.stderr)
        comm.Abort(EXIT_USAGE)
        return EXIT_USAGE
    serve(comm, work)
    return 0


def _keep_heap() -> None:
    """Evaluating processes keep glibc's heap: it halves a 128 px epoch (see fitness.keep_heap)."""
    from evores.training.fitness import keep_heap

    keep_heap()


def _abort_every_rank(comm, run_dir: RunDirectory, code: int) -> None:
    """End the MPI job from rank 0 with ``code``, the run directory released."""
    run_dir.unlock()
    logging.shutdown()
    comm.Abort(code)
    os._exit(code)  # MPI_Abort may return before the launcher ends this process


def _drive_for_summary(setup: dict[str, Any], comm, stop: StopRequest) -> dict[str, Any]:
    """Drive the search on rank 0; the summary. Raises what the driver raises."""
    from evores.engine.driver import Driver
    from evores.execution.evaluators import make_evaluator
    from evores.execution.worker import make_work

    config = setup["config"]
    if comm is not None and comm.Get_size() > 1:
        _local_ranks(comm)  # collective: matches the workers' call
        work = None
    else:
        _keep_heap()
        run_dir = setup["run_dir"].path
        work = make_work(config, setup["cache"], run_dir, tensorboard.epoch_curves(config, run_dir))
    evaluator = make_evaluator(work, comm)
    try:
        summary = Driver(
            config, setup["run_dir"], setup["cache"], evaluator, stop, setup.get("callbacks")
        ).run()
    except RunStopped:
        if evaluator.busy:
            # Workers still training what was abandoned would only finish after the job's
            # end; the checkpoint is written, so end every rank now.
            _abort_every_rank(comm, setup["run_dir"], EXIT_CHECKPOINTED)
        evaluator.close()
        raise
    except EvoresError:
        evaluator.close()
        raise
    except BaseException:
        if comm is not None and comm.Get_size() > 1:
            # The workers would wait for tasks forever: end the job, with the traceback logged.
            log.exception("the driver failed; aborting every rank")
            _abort_every_rank(comm, setup["run_dir"], 1)
        raise
    evaluator.close()
    return summary
