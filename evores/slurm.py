"""`python -m evores.slurm`: the old spelling of `evores sbatch`, kept so that scripts written for it still work."""

from evores.hpc.sbatch import main

if __name__ == "__main__":
    raise SystemExit(main())
