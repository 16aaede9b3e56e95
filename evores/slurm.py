"""``python -m evores.slurm``: the earlier spelling of ``evores sbatch`` (still works)."""

from evores.core.exits import EXIT_USAGE
from evores.engine.cli import subcommand

__all__ = ["EXIT_USAGE", "main"]

main = subcommand("sbatch")

if __name__ == "__main__":
    raise SystemExit(main())
