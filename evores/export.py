"""``python -m evores.export``: the earlier spelling of ``evores export`` (still works)."""

from evores.core.exits import EXIT_USAGE
from evores.engine.cli import subcommand

__all__ = ["EXIT_USAGE", "main"]

main = subcommand("export")

if __name__ == "__main__":
    raise SystemExit(main())
