"""The one command line: ``evores run|report|export|plan|sbatch`` (or ``python -m evores ...``).

Each subcommand is a thin layer over the library: its options, then one call. One wrapper turns
a user's mistake (an :class:`~evores.core.errors.EvoresError`) into one line on stderr and
:data:`~evores.core.exits.EXIT_USAGE`; every exit code lives in :mod:`evores.core.exits`. The
old spellings (``python -m evores.run``, ``.report``, ``.export``, ``.plan``, ``.slurm``) run
the same subcommands through :func:`subcommand`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evores import __version__
from evores.core.errors import EvoresError, is_machine_fault
from evores.core.exits import EXIT_CHECKPOINTED, EXIT_OK, EXIT_REPORT_DIFFERS, EXIT_USAGE
from evores.core.results import one_line
from evores.engine.session import Request, _drive_for_summary, run_request
from evores.execution.stopping import RunStopped
from evores.reporting import console
from evores.reporting.outcome import conclude
from evores.store.rundir import out_path

__all__ = ["build_parser", "main", "subcommand"]

log = logging.getLogger("evores")

_HANDLER_NAME = "evores.cli"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples keep their line breaks."""


# --------------------------------------------------------------------------- run


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file (default: the embedded run)")
    parser.add_argument("--out", type=out_path, help="run directory (default: runs/<date-time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    _set_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")


def _set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set schedule.resolutions=[16,32] (repeatable)",
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    """0 with a winner, EXIT_NO_RESULT without one, EXIT_CHECKPOINTED after a clean stop."""
    _configure_logging(args.quiet)
    request = Request(config=args.config, overrides=args.overrides, out=args.out,
                      resume=args.resume)  # fmt: skip
    try:
        return run_request(request, drive=_drive_to_exit_code) or EXIT_OK
    except OSError as error:  # what the run wrote so far is intact (atomic writes, the log)
        if is_machine_fault(error):
            print(
                f"evores: error: the machine failed ({one_line(error)}); the run directory "
                "keeps its last checkpoint: fix the machine (free space, say), then run again "
                "with --resume",
                file=sys.stderr,
            )
            return EXIT_CHECKPOINTED
        where = f" {error.filename}" if error.filename else ""
        print(
            f"evores: error: cannot write{where} ({error.strerror or one_line(error)}); what "
            "the run wrote so far is kept: fix that path, then run again with --resume",
            file=sys.stderr,
        )
        return EXIT_USAGE


def _drive_to_exit_code(setup: dict[str, Any], comm, stop) -> int:
    try:
        summary = _drive_for_summary(setup, comm, stop)
    except RunStopped:
        return EXIT_CHECKPOINTED
    return conclude(summary, setup["run_dir"].path)  # 0, or EXIT_NO_RESULT without a winner


def _configure_logging(quiet: bool) -> None:
    """Lines to stderr through one handler, replaced (not added again) when called twice; a
    progress bar below them when stderr is a terminal."""
    for handler in [h for h in log.handlers if h.get_name() == _HANDLER_NAME]:
        log.removeHandler(handler)
    log.addHandler(console.console_handler(_HANDLER_NAME, sys.stderr))
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


# --------------------------------------------------------------------------- report


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run's --out directory")


def _report(args: argparse.Namespace) -> int:
    """0 when done (a finished run's summary reproduced), EXIT_REPORT_DIFFERS when its
    summary.json differs from the recomputation (kept as it is)."""
    from evores.reporting.recompute import recompute

    try:
        done = recompute(args.run_dir)
    except OSError as error:
        where = error.filename or args.run_dir
        raise EvoresError(
            f"cannot read or write {where} ({error.strerror}); give a readable, writable run "
            "directory"
        ) from None
    written = ", ".join(done.files)
    if done.differs:
        print(
            f"evores: {args.run_dir}/summary.json differs from its recomputation in "
            f"{', '.join(done.differs)}; it is kept as it is, the recomputation is in "
            f"{done.summary_file}",
            file=sys.stderr,
        )
        return EXIT_REPORT_DIFFERS
    if done.summary_file is None:
        print(f"{args.run_dir}: no summary: the run predates data_report.json and has none to "
              f"describe its data; {written} written")  # fmt: skip
        return EXIT_OK
    state = "reproduced" if done.finished else "written (the run is unfinished)"
    print(f"{args.run_dir}: {done.summary_file} {state}; {written} written")
    return EXIT_OK


# --------------------------------------------------------------------------- export


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run's --out directory")
    parser.add_argument(
        "--optuna-storage", required=True, metavar="URL", help="e.g. sqlite:///run.db"
    )
    parser.add_argument(
        "--study-prefix", metavar="NAME", help="study names' prefix (default: RUN_DIR's name)"
    )


def _export(args: argparse.Namespace) -> int:
    from evores.reporting.export import export

    for name in export(args.run_dir, args.optuna_storage, args.study_prefix):
        print(name)
    return EXIT_OK


# --------------------------------------------------------------------------- plan


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file (default: the embedded run)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--gpus", type=int, metavar="N", help="N evaluating GPUs, one each")
    where.add_argument("--cpus", type=int, metavar="N", help="N evaluating CPU workers")
    parser.add_argument("--genomes", type=int, default=3, help="sampled genomes to time (3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs each is trained (2)")
    _set_argument(parser)


def _plan(args: argparse.Namespace) -> int:
    from evores.engine.plan import plan

    sys.stdout.write(plan(args))
    return EXIT_OK


# --------------------------------------------------------------------------- sbatch


def _sbatch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the run's TOML file")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<job id>)")
    parser.add_argument("--python", default="python", help="the python the job runs (python)")


def _sbatch(args: argparse.Namespace) -> int:
    from evores import config as configuration
    from evores.hpc.sbatch import render_sbatch

    config = configuration.load(args.config)
    # Absolute, so the script works wherever it is submitted from.
    path = args.config.resolve()
    sys.stdout.write(render_sbatch(config, config_path=path, run_dir=args.out, python=args.python))
    return EXIT_OK


# --------------------------------------------------------------------------- the door

Action = Callable[[argparse.Namespace], int]

# name: (what it does, its options, the action, one example)
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Action, str]] = {
    "run": (
        "evolve CNN hyperparameters with fitness scored on downsampled images",
        _run_arguments, _run,
        "evores run --config my.toml --out runs/exp1 --set seed=3",
    ),
    "report": (
        "recompute the summary, the genes' importance and the plots of a run directory",
        _report_arguments, _report, "evores report runs/exp1",
    ),
    "export": (
        "write a run as Optuna studies, one per stage",
        _export_arguments, _export,
        "evores export runs/exp1 --optuna-storage sqlite:///exp1.db",
    ),
    "plan": (
        "time a run's evaluations on this machine and estimate the whole run",
        _plan_arguments, _plan, "evores plan --config my.toml --gpus 4",
    ),
    "sbatch": (
        "print the SLURM batch script of a run, from its config's [slurm] section",
        _sbatch_arguments, _sbatch,
        "evores sbatch --config my.toml --out runs/exp1 > job.sbatch && sbatch job.sbatch",
    ),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evores",
        description="Evolutionary hyperparameter optimisation of CNNs scored on downsampled "
        "images.",
        epilog="example: evores run   (the embedded demo run, a few minutes on 2 cores)\n"
        "         evores run --help",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"evores {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (summary, arguments, action, example) in SUBCOMMANDS.items():
        sub = commands.add_parser(
            name, help=summary, description=summary[0].upper() + summary[1:] + ".",
            epilog=f"example:\n  {example}", formatter_class=_HelpFormatter,
        )  # fmt: skip
        arguments(sub)
        sub.set_defaults(action=action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.action(args)
    except EvoresError as error:
        print(f"evores: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def subcommand(name: str) -> Callable[[Sequence[str] | None], int]:
    """``main`` of an old ``python -m evores.<module>`` spelling: the subcommand ``name``."""

    def old_main(argv: Sequence[str] | None = None) -> int:
        rest = list(sys.argv[1:] if argv is None else argv)
        return main([name, *rest])

    return old_main
