"""The genomes of an earlier run directory, best first, for a warm start (``search.initial`` given
as a path): read once when a run starts, after its configuration is loaded, never by the
configuration itself. See :mod:`evores.strategies.initial` for the order and the checks."""

from __future__ import annotations

import json
from typing import Any

from evores.core.errors import ConfigError
from evores.core.paths import usable_path
from evores.core.results import KIND_FINAL, KIND_SEARCH, OK
from evores.store.checkpoint import EVALUATIONS, RunDirectory
from evores.store.resume import read_log
from evores.strategies.initial import KEY


def genomes_of_run(path: str, population: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Up to ``population`` distinct genomes of the run in ``path``, best first, and where
    each came from (for the messages)."""
    folder = usable_path(path, KEY)
    if not (folder / EVALUATIONS).is_file():
        raise ConfigError(
            f"{KEY} = {path!r} is not a run directory (it has no {EVALUATIONS}); give the "
            "directory of an earlier run (its out=, --out), or a list of genomes"
        )
    latest = {tuple(r["key"]): r for r in read_log(RunDirectory(folder))}
    done = [r for r in latest.values() if r["status"] == OK]
    finals = sorted((r for r in done if r["kind"] == KIND_FINAL), key=lambda r: r["key"][2])
    searched = sorted(
        (r for r in done if r["kind"] == KIND_SEARCH),
        key=lambda r: (-r["key"][0], -r["val_accuracy"]),  # stable: log order breaks ties
    )
    genomes, where, seen = [], [], set()
    for record in finals + searched:
        text = json.dumps(record["hparams"], sort_keys=True)
        if text in seen:
            continue
        seen.add(text)
        genomes.append(record["hparams"])
        what = "final candidate" if record["kind"] == KIND_FINAL else "evaluation"
        where.append(f"{KEY}: {what} {record['key']} of {path!r}")
        if len(genomes) == population:
            break
    if not genomes:
        raise ConfigError(
            f"{KEY} = {path!r} has no successful evaluation to start from; give another run "
            "directory or a list of genomes"
        )
    return genomes, where
