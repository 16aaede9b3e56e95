"""``python -m evores.plan``: the earlier spelling of ``evores plan`` (still works)."""

from evores.core.exits import EXIT_USAGE
from evores.engine.cli import subcommand

__all__ = ["EXIT_USAGE", "main"]

main = subcommand("plan")

if __name__ == "__main__":
    raise SystemExit(main())
