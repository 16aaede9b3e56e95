"""The command line: ``python -m evores.run [--config FILE] [--out DIR] [--resume] [--set k=v]``.

Rank 0 reads and checks everything a user can get wrong (config, run directory, dataset)
before a single file of the run is written, drives the search, logs every evaluation as it
completes, checkpoints every generation and writes the summary and plots. Other MPI ranks
only evaluate. Users' mistakes end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from evores import config as configuration
from evores.checkpoint import CONFIG, RunDirectory
from evores.errors import CheckpointError, EvoresError
from evores.outcome import conclude
from evores.resume import check_config_early
from evores.rundir import out_path, run_directory
from evores.slurm import EXIT_CHECKPOINTED
from evores.stopping import RunStopped, StopRequest, ignore_stop_signals

log = logging.getLogger("evores")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evores.run",
        description="Evolve CNN hyperparameters with fitness scored on downsampled images.",
    )
    parser.add_argument("--config", type=Path, help="TOML file (default: the embedded run)")
    parser.add_argument("--out", type=out_path, help="run directory (default: runs/<date-time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set schedule.resolutions=[16,32]",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    from evores.evaluators import mpi_world

    try:
        comm = mpi_world()
    except EvoresError as error:
        return _fail(error)
    rank = comm.Get_rank() if comm is not None else 0
    if rank != 0:
        ignore_stop_signals()
        return _serve(comm)
    # From here on a signal stops the run cleanly (see evores.stopping); the grace period is
    # set once the config is read.
    stop = StopRequest()
    stop.install()
    try:
        setup = _prepare(args)
    except EvoresError as error:
        if comm is not None:
            comm.bcast(None, root=0)
        return _fail(error)
    stop.grace_seconds = setup["config"]["stop"]["grace_seconds"]
    if comm is not None:
        comm.bcast(setup["config"], root=0)
    try:
        return _drive(setup, comm, stop)
    finally:
        setup["run_dir"].unlock()


def _configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _fail(error: Exception | str) -> int:
    print(f"evores: error: {error}", file=sys.stderr)
    return EXIT_USAGE


def _prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Everything a user can get wrong is checked here; the run directory is claimed (created
    and locked) before anything is written into it, and released again on a refusal."""
    run_dir = run_directory(args.out, args.resume)
    if args.resume:
        config = _resumed_config(args, run_dir)
    else:
        config = configuration.load(args.config, args.overrides)
        if not run_dir.is_empty():
            raise CheckpointError(
                f"run directory {str(run_dir.path)!r} is not empty; pass --resume to continue "
                "that run, or choose a new --out"
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
    return {"config": config, "run_dir": run_dir, "cache": cache}


def _write_config(run_dir: RunDirectory, config: dict[str, Any]) -> None:
    try:
        run_dir.create(configuration.to_toml(config))
    except OSError as error:
        raise CheckpointError(
            f"cannot write the run directory {str(run_dir.path)!r} ({error.strerror}); "
            "choose a writable --out"
        ) from None


def _check_environment(config: dict[str, Any]):
    """The job, the device, the dataset and the fitness function the run needs; the cache."""
    _set_threads(config, workers=1)
    from evores.slurm import SlurmEnvironment

    SlurmEnvironment.from_env()  # inconsistent SLURM_* variables: refuse before writing
    from evores.fitness import resolve_device

    resolve_device(config["train"]["device"])  # a GPU asked for but absent: likewise
    cache = open_dataset(config)
    from evores.worker import load_function

    if config["fitness"]["function"]:
        load_function(config["fitness"]["function"])
    return cache


def _resumed_config(args: argparse.Namespace, run_dir: RunDirectory) -> dict[str, Any]:
    if not run_dir.has_run():
        raise CheckpointError(
            f"nothing to resume in {str(run_dir.path)!r}: it has no {CONFIG}; "
            "start a fresh run without --resume"
        )
    config = configuration.load(run_dir.file(CONFIG))
    if args.config is not None or args.overrides:
        wanted = configuration.load(args.config, args.overrides)
        if wanted != config:
            raise CheckpointError(
                f"--resume continues {str(run_dir.path)!r} with the config it was started with; "
                "drop --config/--set, or start a new run directory for a different config"
            )
    return config


def open_dataset(config: dict[str, Any]):
    """Open (building or reusing) the resolution cache the config asks for."""
    from evores.cache import open_cache

    data = config["data"]
    return open_cache(
        data["path"],
        config["schedule"]["resolutions"],
        filter=data["filter"],
        crop=data["crop"],
        cache_dir=data["cache_dir"] or None,
        seed=data["split_seed"],
        val_fraction=data["val_fraction"],
        test_fraction=data["test_fraction"],
        download=data["download"],
        progress=log.info,
    )


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
    from evores.evaluators import serve
    from evores.worker import make_work

    local = _local_ranks(comm)
    config = comm.bcast(None, root=0)
    if config is None:
        return EXIT_USAGE
    _set_threads(config, workers=max(1, local - 1))
    _keep_heap()
    try:
        work = make_work(config, open_dataset(config))
    except EvoresError as error:  # e.g. this rank has no GPU of its own
        _fail(f"rank {comm.Get_rank()}: {error}")
        comm.Abort(EXIT_USAGE)
        return EXIT_USAGE
    serve(comm, work)
    return 0


def _keep_heap() -> None:
    """Evaluating processes keep glibc's heap: it halves a 128 px epoch (see fitness.keep_heap)."""
    from evores.fitness import keep_heap

    keep_heap()


def _abort_every_rank(comm, run_dir: RunDirectory, code: int) -> None:
    """End the MPI job from rank 0 with ``code``, the run directory released."""
    run_dir.unlock()
    logging.shutdown()
    comm.Abort(code)
    os._exit(code)  # MPI_Abort may return before the launcher ends this process


def _drive(setup: dict[str, Any], comm, stop: StopRequest) -> int:
    from evores.driver import Driver
    from evores.evaluators import make_evaluator
    from evores.worker import make_work

    config = setup["config"]
    if comm is not None and comm.Get_size() > 1:
        _local_ranks(comm)  # collective: matches the workers' call
        work = None
    else:
        _keep_heap()
        work = make_work(config, setup["cache"])
    evaluator = make_evaluator(work, comm)
    try:
        summary = Driver(config, setup["run_dir"], setup["cache"], evaluator, stop).run()
    except RunStopped:
        if evaluator.busy:
            # Workers still training what was abandoned would only finish after the job's
            # end; the checkpoint is written, so end every rank now.
            _abort_every_rank(comm, setup["run_dir"], EXIT_CHECKPOINTED)
        evaluator.close()
        return EXIT_CHECKPOINTED
    except EvoresError as error:
        evaluator.close()
        return _fail(error)
    except BaseException:
        if comm is not None and comm.Get_size() > 1:
            # The workers would wait for tasks forever: end the job, with the traceback logged.
            log.exception("the driver failed; aborting every rank")
            _abort_every_rank(comm, setup["run_dir"], 1)
        raise
    evaluator.close()
    return conclude(summary, setup["run_dir"].path)  # 0, or EXIT_NO_RESULT without a winner


if __name__ == "__main__":
    sys.exit(main())
