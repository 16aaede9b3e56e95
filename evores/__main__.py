"""``python -m evores``: the same command as the ``evores`` console script."""

from evores.engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
