"""`python -m evores.report`: the old spelling of `evores report`, kept so that scripts written for it still work."""

from evores.reporting.summary import main

if __name__ == "__main__":
    raise SystemExit(main())
