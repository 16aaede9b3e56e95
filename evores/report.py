"""``python -m evores.report``: the earlier spelling of ``evores report`` (still works)."""

from evores.core.exits import EXIT_USAGE
from evores.engine.cli import subcommand

__all__ = ["EXIT_USAGE", "main"]

main = subcommand("report")

if __name__ == "__main__":
    raise SystemExit(main())
