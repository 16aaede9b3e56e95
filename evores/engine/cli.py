"""The command line: ``python -m evores.run [--config FILE] [--out DIR] [--resume] [--set k=v]``.

A thin wrapper over :func:`evores.engine.session.search`: it configures the ``evores`` logger, and turns
users' mistakes into one line on stderr and exit code 2, a checkpointed stop into
:data:`evores.hpc.environment.EXIT_CHECKPOINTED` and a run without a winner into
:data:`evores.reporting.outcome.EXIT_NO_RESULT`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from evores.core.errors import EvoresError
from evores.engine.session import (
    EXIT_USAGE,
    Request,
    _drive_for_summary,
    _set_threads,
    open_dataset,
    run_request,
)
from evores.execution.stopping import RunStopped
from evores.hpc.environment import EXIT_CHECKPOINTED
from evores.reporting.outcome import conclude
from evores.store.rundir import out_path

__all__ = ["EXIT_USAGE", "build_parser", "main", "open_dataset", "_set_threads"]

log = logging.getLogger("evores")


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
    request = Request(config=args.config, overrides=args.overrides, out=args.out,
                      resume=args.resume)  # fmt: skip
    try:
        code = run_request(request, drive=_drive_to_exit_code)
    except EvoresError as error:
        return _fail(error)
    return code or 0


def _drive_to_exit_code(setup: dict[str, Any], comm, stop) -> int:
    try:
        summary = _drive_for_summary(setup, comm, stop)
    except RunStopped:
        return EXIT_CHECKPOINTED
    return conclude(summary, setup["run_dir"].path)  # 0, or EXIT_NO_RESULT without a winner


_HANDLER_NAME = "evores.engine.cli"


def _configure_logging(quiet: bool) -> None:
    """Lines to stderr through one handler, replaced (not added again) when called twice."""
    for handler in [h for h in log.handlers if h.get_name() == _HANDLER_NAME]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _fail(error: Exception | str) -> int:
    print(f"evores: error: {error}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
