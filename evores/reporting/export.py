"""``evores export RUN_DIR --optuna-storage URL``: a run as Optuna studies.

One study per stage of the ladder (named ``<prefix>/stage-<s>-<resolution>px``), maximising
the validation accuracy (its metric name ``val_accuracy``): each search evaluation of the run's
log is a trial, a failed evaluation a FAIL trial, one a per-epoch hook stopped a PRUNED trial
(its best score so far its one intermediate value); an evaluation a stop interrupted is not
an evaluation and is left out. The final retraining is a study of its own
(``<prefix>/final-<resolution>px``, metric ``test_accuracy``): one trial per final candidate,
its validation accuracy and whether it won (chosen by validation accuracy, never by test score)
as user attributes. So optuna-dashboard and ``optuna.visualization`` open an evores run,
finished or stopped. The run directory is only read.

A study holds one distribution per parameter, as Optuna's intersection search space and
importance evaluators need: each gene's range is the narrowest of the ranges the run used up to
that stage (the stage's own, narrowed around the elites, then each stage's below it, back to
the config's) that holds every value the stage evaluated. A fidelity probe member is drawn
from the stages below, so where it lies outside the narrowed range the stage's distribution is
the wider one it came from. Each trial starts and completes when the evaluation did: logged at
``logged_at`` after ``wall_seconds`` of work; a log of an earlier evores has no time of day,
and its trials are placed on the run's clock (``elapsed``), ending at the log file's last
change (user attribute ``time_from``: ``log`` or ``run clock``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import warnings
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from evores import config as configuration
from evores.core.errors import CheckpointError, ExportError
from evores.core.paths import usable_path
from evores.core.results import INTERRUPTED, KIND_FINAL, KIND_SEARCH, OK, PRUNED, one_line
from evores.store.checkpoint import CONFIG, RunDirectory
from evores.store.names import EVALUATIONS, SUMMARY
from evores.strategies.space import SearchSpace
from evores.strategies.tpe import OutsideSpace, frozen_trial, quiet_optuna

# Copied to each trial's user attributes when the record has them.
TRIAL_ATTRS = ("key", "resolution", "seed", "elite_of", "probe_of", "failure", "reason",
               "best_epoch", "epochs", "wall_seconds", "elapsed", "n_parameters", "repairs",
               "test_accuracy")  # fmt: skip
# The objectives' names, as Optuna's tools show them.
SEARCH_METRIC = "val_accuracy"
FINAL_METRIC = "test_accuracy"


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's resolved config and its evaluations, search and final (the last record of
    each key, in log order; interrupted ones left out)."""
    from evores.store.resume import read_log

    run_dir = usable_path(run_dir, "run directory", CheckpointError)
    directory = RunDirectory(run_dir)
    if not run_dir.is_dir() or not directory.file(CONFIG).is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} is not an evores run directory (no {CONFIG}); give the "
            "directory of a run (its out=, --out)"
        )
    config = configuration.load(directory.file(CONFIG))
    last = {tuple(r["key"]): r for r in read_log(directory)}
    return config, [r for r in last.values() if r["status"] != INTERRUPTED]


def stage_spaces(config: dict[str, Any], records: list[dict[str, Any]]) -> list[SearchSpace]:
    """Each stage's search space: the config's, then narrowed around the elites re-evaluated
    at the start of each later stage (as the run did when ``schedule.narrow``). Where a stopped
    run logged only some of those elites, or ``schedule.adaptive`` carried more, the space of
    the stage below is kept: :func:`study_space` widens a range wherever the stage's genomes
    need it."""
    schedule = config["schedule"]
    spaces = [SearchSpace.from_dict(config["space"])]
    for stage in range(1, len(schedule["resolutions"])):
        space = spaces[-1]
        elites = [r["hparams"] for r in records if r["key"][0] == stage and "elite_of" in r]
        if schedule["narrow"] and len(elites) == schedule["elites"]:
            space = space.narrow(elites, schedule["narrow_margin"])
        spaces.append(space)
    return spaces


def study_space(spaces: list[SearchSpace], records: list[dict[str, Any]]) -> SearchSpace:
    """One range per gene for a study of ``records``: for each gene, the first of ``spaces``
    (a stage's, then those of the stages below it, widest last) that holds every value of
    ``records``. A value outside all of them is not a genome of this run."""
    values = [_gene_values(r["hparams"]) for r in records]
    genes = {}
    for gene in fields(SearchSpace):
        taken = [v for genome in values for v in genome[gene.name]]
        for space in spaces:
            if all(getattr(space, gene.name).contains(v) for v in taken):
                genes[gene.name] = getattr(space, gene.name)
                break
        else:
            outside = next(r for r, g in zip(records, values, strict=True) if not all(
                getattr(spaces[-1], gene.name).contains(v) for v in g[gene.name]))  # fmt: skip
            raise CheckpointError(
                f"evaluation {outside['key']} of the log has {gene.name} outside the run's "
                f"search space {getattr(spaces[-1], gene.name).describe()}; was {CONFIG} "
                "edited after the run?"
            )
    return replace(spaces[0], **genes)


def _gene_values(hparams: dict[str, Any]) -> dict[str, list[Any]]:
    """Every value a genome gives each gene of the search space (a depth is a layer count)."""
    return {
        "learning_rate": [hparams["learning_rate"]],
        "conv_layers": [len(hparams["conv_filters"])],
        "conv_filters": list(hparams["conv_filters"]),
        "conv_kernels": list(hparams["conv_kernels"]),
        "fc_layers": [len(hparams["fc_units"])],
        "fc_units": list(hparams["fc_units"]),
        "batch_size": [hparams["batch_size"]],
        "l1": [hparams["l1"]],
        "l2": [hparams["l2"]],
    }


def export(run_dir: str | Path, storage: str, prefix: str | None = None) -> list[str]:
    """Write the run in ``run_dir`` to the Optuna ``storage`` URL; the study names (the
    stages', then the final retraining's when the run logged any)."""
    import optuna

    path = usable_path(run_dir, "run directory", CheckpointError)  # before resolve() sees it
    studies = _studies(path, prefix or path.resolve().name)
    storage_object = _storage(storage)
    with quiet_optuna():
        taken = sorted(set(studies) & {s.study_name for s in storage_object.get_all_studies()})
        if taken:
            raise ExportError(
                f"study {taken[0]!r} already exists in {storage!r}; delete it, or export under "
                "other names (prefix=, --study-prefix NAME); nothing was written"
            )
        written: list[str] = []
        try:
            for name, (attrs, metric, trials) in studies.items():
                study = optuna.create_study(
                    storage=storage_object, study_name=name, direction="maximize"
                )
                written.append(name)
                with warnings.catch_warnings():  # experimental in Optuna 3.2 and later
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([metric])
                for key, value in attrs.items():
                    study.set_user_attr(key, value)
                study.add_trials(trials)
        except Exception as error:  # noqa: BLE001 - undo, then say why in one line
            for name in written:
                with contextlib.suppress(Exception):
                    optuna.delete_study(study_name=name, storage=storage_object)
            raise ExportError(
                f"Optuna storage {storage!r} could not be written ({type(error).__name__}: "
                f"{one_line(error)}); nothing was kept: give a storage this process may write"
            ) from None
    return list(studies)


def _studies(path: Path, prefix: str) -> dict[str, tuple[dict[str, Any], str, list[Any]]]:
    """Every study of the run, made ready before anything is written (so that a log that does
    not match the run leaves the storage as it was): name -> (user attributes, metric name,
    trials)."""
    config, records = read_run(path)
    search = [r for r in records if r["kind"] == KIND_SEARCH]
    finals = [r for r in records if r["kind"] == KIND_FINAL]
    spaces = stage_spaces(config, search)
    resolutions = config["schedule"]["resolutions"]
    clock = _Clock(path, records)
    about = {"run_dir": str(path.resolve())}
    studies = {}
    for stage, resolution in enumerate(resolutions):
        theirs = [r for r in search if r["key"][0] == stage]
        space = study_space(spaces[stage::-1], theirs)
        trials = [_trial(space, r, SEARCH_METRIC, clock) for r in theirs]
        attrs = {"stage": stage, "resolution": resolution, **about}
        studies[f"{prefix}/stage-{stage}-{resolution}px"] = (attrs, SEARCH_METRIC, trials)
    if finals:
        space = study_space(spaces[::-1], finals)
        trials = [_trial(space, r, FINAL_METRIC, clock, **_final_attrs(path, r)) for r in finals]
        attrs = {"stage": None, "resolution": resolutions[-1], **about}
        studies[f"{prefix}/final-{resolutions[-1]}px"] = (attrs, FINAL_METRIC, trials)
    return studies


def _final_attrs(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A final candidate's validation accuracy (from the last stage) and whether it won, as
    the run's summary states them; nothing when there is no summary (a stopped run)."""
    try:
        summary = json.loads((path / SUMMARY).read_text())
        candidate = summary["final_candidates"][record["key"][2]]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}
    if not isinstance(candidate, dict) or candidate.get("hparams") != record["hparams"]:
        return {}
    won = record["status"] == OK and summary.get("best_hparams") == record["hparams"]
    return {"val_accuracy": candidate.get("val_accuracy"), "winner": won}


class _Clock:
    """When each evaluation started and completed, as datetimes (see the module's note)."""

    def __init__(self, path: Path, records: list[dict[str, Any]]):
        try:
            end = (path / EVALUATIONS).stat().st_mtime
        except OSError:
            end = 0.0
        # A log without logged_at: the run's clock, its latest reading at the log's last change.
        self.origin = end - max((float(r.get("elapsed", 0.0)) for r in records), default=0.0)

    def span(self, record: dict[str, Any]) -> tuple[Any, Any, str]:
        if "logged_at" in record:
            end, source = float(record["logged_at"]), "log"
        else:
            end, source = self.origin + float(record.get("elapsed", 0.0)), "run clock"
        start = end - max(float(record.get("wall_seconds") or 0.0), 0.0)
        return _datetime(start), _datetime(end), source


def _datetime(seconds: float) -> datetime.datetime:
    """Optuna's datetimes are naive local time (it stamps its own trials with ``now()``)."""
    return datetime.datetime.fromtimestamp(seconds)


def _storage(url: str) -> Any:
    import optuna

    if url.startswith("sqlite:") and (url.rstrip("/") == "sqlite:" or ":memory:" in url):
        raise ExportError(
            f"Optuna storage (storage=, --optuna-storage) {url!r} is an in-memory database, "
            "gone when the export ends; "
            "give a file, e.g. sqlite:///run.db"
        )

    try:
        with quiet_optuna():
            return optuna.storages.RDBStorage(url)
    except Exception as error:  # noqa: BLE001 - any failure to open the URL is the user's
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(
            f"Optuna storage (storage=, --optuna-storage) {url!r} cannot be opened ({reason}); "
            "give a database URL such as sqlite:///run.db"
        ) from None


def _trial(
    space: SearchSpace, record: dict[str, Any], metric: str, clock: _Clock, **more: Any
) -> Any:
    """A record as a trial of its study, its ``metric`` field the value, with the times it
    ran."""
    from optuna.trial import TrialState

    attrs = {name: record[name] for name in TRIAL_ATTRS if record.get(name) is not None}
    started, completed, source = clock.span(record)
    scored = {**record, "fitness": record.get(metric)}
    try:
        trial = frozen_trial(space, scored, **attrs, **more, time_from=source)
    except OutsideSpace as error:  # study_space holds every genome: a log that does not match
        raise CheckpointError(
            f"evaluation {record['key']} of the log lies outside its stage's search space "
            f"({error}); was {CONFIG} edited after the run?"
        ) from None
    trial.datetime_start, trial.datetime_complete = started, completed
    if record["status"] == PRUNED:  # stopped by a per-epoch hook: Optuna's own state for it
        trial.state = TrialState.PRUNED
        if record.get(metric) is not None:  # the best score before it was stopped
            trial.intermediate_values = {int(record.get("epochs") or 0): float(record[metric])}
    return trial
