"""`python -m evores.export`: the old spelling of `evores export`, kept so that scripts written for it still work."""

from evores.reporting.export import main

if __name__ == "__main__":
    raise SystemExit(main())
