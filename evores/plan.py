"""`python -m evores.plan`: the old spelling of `evores plan`, kept so that scripts written for it still work."""

from evores.engine.plan import main

if __name__ == "__main__":
    raise SystemExit(main())
