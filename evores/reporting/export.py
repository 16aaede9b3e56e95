"""``python -m evores.export RUN_DIR --optuna-storage URL``: a run as Optuna studies.

One study per stage of the ladder (named ``<prefix>/stage-<s>-<resolution>px``), maximising
the validation accuracy: each search evaluation of the run's log is a trial with the stage's
search space as its distributions (the space the genomes were drawn from, narrowed around the
elites carried up as the run narrowed it), a failed evaluation a FAIL trial; an evaluation a
stop interrupted is not an evaluation and is left out. So optuna-dashboard and
``optuna.visualization`` open an evores run, finished or stopped. The final retraining is not a
search and has no validation score; it is not exported. The run directory is only read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from evores import config as configuration
from evores.core.errors import CheckpointError, ExportError
from evores.core.paths import usable_path
from evores.core.results import INTERRUPTED, KIND_SEARCH, one_line
from evores.store.checkpoint import CONFIG, RunDirectory
from evores.strategies.space import SearchSpace
from evores.strategies.tpe import OutsideSpace, frozen_trial, quiet_optuna

# Copied to each trial's user attributes when the record has them.
TRIAL_ATTRS = ("key", "resolution", "seed", "elite_of", "probe_of", "failure", "reason",
               "best_epoch", "epochs", "wall_seconds", "n_parameters", "repairs")  # fmt: skip


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's resolved config and its search evaluations (the last record of each key, in
    log order; interrupted ones left out)."""
    from evores.store.resume import read_log

    run_dir = usable_path(run_dir, "run directory", CheckpointError)
    directory = RunDirectory(run_dir)
    if not run_dir.is_dir() or not directory.file(CONFIG).is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} is not an evores run directory (no {CONFIG}); give the --out "
            "directory of a run"
        )
    config = configuration.load(directory.file(CONFIG))
    last = {tuple(r["key"]): r for r in read_log(directory)}
    records = [r for r in last.values() if r["kind"] == KIND_SEARCH and r["status"] != INTERRUPTED]
    return config, records


def stage_spaces(config: dict[str, Any], records: list[dict[str, Any]]) -> list[SearchSpace]:
    """Each stage's search space: the config's, then narrowed around the elites re-evaluated
    at the start of each later stage (as the run did when ``schedule.narrow``). Where a stopped
    run logged only some of those elites, the wider space of the stage below is kept, so that
    every genome of the stage still lies inside it."""
    schedule = config["schedule"]
    spaces = [SearchSpace.from_dict(config["space"])]
    for stage in range(1, len(schedule["resolutions"])):
        space = spaces[-1]
        elites = [r["hparams"] for r in records if r["key"][0] == stage and "elite_of" in r]
        if schedule["narrow"] and len(elites) == schedule["elites"]:
            space = space.narrow(elites, schedule["narrow_margin"])
        spaces.append(space)
    return spaces


def export(run_dir: str | Path, storage: str, prefix: str | None = None) -> list[str]:
    """Write the run in ``run_dir`` to the Optuna ``storage`` URL; the study names, by stage."""
    import optuna

    path = Path(run_dir)
    config, records = read_run(path)
    prefix = prefix or path.resolve().name
    spaces = stage_spaces(config, records)
    resolutions = config["schedule"]["resolutions"]
    # Every study is made ready first, so that a log that does not match the run, or a name
    # already taken, leaves the storage as it was: an export is all or nothing.
    studies = {
        f"{prefix}/stage-{stage}-{resolution}px": (stage, resolution, [
            _trial(space, spaces[max(stage - 1, 0)], r) for r in records if r["key"][0] == stage
        ])
        for stage, (space, resolution) in enumerate(zip(spaces, resolutions, strict=True))
    }  # fmt: skip
    storage_object = _storage(storage)
    with quiet_optuna():
        taken = sorted(set(studies) & {s.study_name for s in storage_object.get_all_studies()})
        if taken:
            raise ExportError(
                f"study {taken[0]!r} already exists in {storage!r}; delete it, or pass "
                "--study-prefix NAME to export under other names (nothing was written)"
            )
        written: list[str] = []
        try:
            for name, (stage, resolution, trials) in studies.items():
                study = optuna.create_study(
                    storage=storage_object, study_name=name, direction="maximize"
                )
                written.append(name)
                study.set_user_attr("stage", stage)
                study.set_user_attr("resolution", resolution)
                study.set_user_attr("run_dir", str(path.resolve()))
                study.add_trials(trials)
        except Exception as error:  # noqa: BLE001 - undo, then say why in one line
            for name in written:
                with contextlib.suppress(Exception):
                    optuna.delete_study(study_name=name, storage=storage_object)
            raise ExportError(
                f"--optuna-storage {storage!r} could not be written ({type(error).__name__}: "
                f"{one_line(error)}); nothing was kept: give a storage this process may write"
            ) from None
    return list(studies)


def _storage(url: str) -> Any:
    import optuna

    if url.startswith("sqlite:") and (url.rstrip("/") == "sqlite:" or ":memory:" in url):
        raise ExportError(
            f"--optuna-storage {url!r} is an in-memory database, gone when the export ends; "
            "give a file, e.g. sqlite:///run.db"
        )

    try:
        with quiet_optuna():
            return optuna.storages.RDBStorage(url)
    except Exception as error:  # noqa: BLE001 - any failure to open the URL is the user's
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(
            f"--optuna-storage {url!r} cannot be opened ({reason}); give a database URL such "
            "as sqlite:///run.db"
        ) from None


def _trial(space: SearchSpace, below: SearchSpace, record: dict[str, Any]) -> Any:
    """A record as a trial of its stage; a fidelity probe member (drawn in the wider space of
    the stage below, then re-evaluated here) keeps that stage's distributions."""
    attrs = {name: record[name] for name in TRIAL_ATTRS if record.get(name) is not None}
    try:
        try:
            return frozen_trial(space, record, **attrs)
        except OutsideSpace:
            if "probe_of" not in record:
                raise
            return frozen_trial(below, record, **attrs)
    except OutsideSpace as error:  # the run's own genomes: a log that does not match the run
        raise CheckpointError(
            f"evaluation {record['key']} of the log lies outside its stage's search space "
            f"({error}); was {CONFIG} edited after the run?"
        ) from None
