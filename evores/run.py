"""`python -m evores.run`: the old spelling of `evores run`, kept so that scripts written for it still work."""

from evores.engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
