"""``python -m evores.run``: the earlier spelling of ``evores run`` (still works)."""

from evores.core.exits import EXIT_USAGE
from evores.engine.cli import subcommand

__all__ = ["EXIT_USAGE", "main"]

main = subcommand("run")

if __name__ == "__main__":
    raise SystemExit(main())
