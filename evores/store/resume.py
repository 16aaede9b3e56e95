"""What a run resumes from is checked before it is used: checkpoint, log and configuration.

A run directory is data that anyone may have edited, truncated or damaged between two starts.
Everything read back passes one schema before the search sees it:

- the checkpoint's state (:func:`state_problems`): the types and ranges of its fields, against
  the run's schedule (a stage within the ladder, counts within the budgets); an unusable
  checkpoint is passed over for the previous one (``RunDirectory.load_checkpoint``);
- each log record (:func:`evores.core.results.record_problems`, the schema of ``LogRecord``);
  unusable records are set aside in ``evaluations.rejected.jsonl`` and evaluated again;
- the log against the checkpoint (:func:`check_log_covers`): a log that lost evaluations the
  checkpoint counts (truncated, emptied, or with counted records set aside) is refused,
  since the finished log would lack them;
- the configuration (:func:`check_config_unchanged`): the checkpoint stores a fingerprint of
  the resolved configuration; a resume whose ``config.toml`` differs in any key outside
  :data:`RESUMABLE` is refused, naming the keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from evores.core.errors import UNPARSABLE, CheckpointError, ConfigError
from evores.core.results import INTERRUPTED, KIND_FINAL, KIND_SEARCH, record_problems
from evores.core.typed import is_int, is_number, short
from evores.store.checkpoint import CHECKPOINT, CONFIG, EVALUATIONS, PREVIOUS, RunDirectory
from evores.store.state import Checkpoint
from evores.strategies.state import OPTIONAL_KEYS

log = logging.getLogger("evores.store.checkpoint")

# Keys that may change between a run's starts: how it stops, where and with what it runs,
# where the cache lives. Every other key changes what the run computes, so changing it
# under a stopped run would mix two runs.
RESUMABLE = ("stop.", "slurm.", "train.threads", "train.device", "data.cache_dir", "data.download")

PHASES = ("search", "final", "done")


def read_back(
    run_dir: RunDirectory, config: dict[str, Any]
) -> tuple[Checkpoint | None, list[dict]]:
    """The checkpoint (None for a fresh run) and the usable log records of ``run_dir``, each
    checked; unusable records are set aside. Raises CheckpointError (one line) when the run
    cannot be resumed as it is."""
    checkpoint = run_dir.load_checkpoint(check=lambda state: state_problems(state, config))
    records = run_dir.read_records(check=record_problems)
    if checkpoint is not None:
        check_config_unchanged(checkpoint, config)
        check_log_covers(run_dir, checkpoint, records)
    run_dir.set_aside_rejected()
    return checkpoint, records


def check_config_early(run_dir: RunDirectory, config: dict[str, Any]) -> None:
    """:func:`check_config_unchanged` against the newest checkpoint that parses, before the
    dataset cache is opened (an edited ``[data]`` would otherwise build a cache first). Damage
    is left to :func:`read_back`, which says what it does about it."""
    for name in (CHECKPOINT, PREVIOUS):
        try:
            state = json.loads(run_dir.file(name).read_text(encoding="utf-8"))["state"]
        except (OSError, *UNPARSABLE, KeyError, TypeError):
            continue
        if isinstance(state, dict) and isinstance(state.get("config"), dict):
            check_config_unchanged(state, config, quiet=True)
        return


def read_log(run_dir: RunDirectory) -> list[dict]:
    """The usable records of the log (what the summary and the plots are made from), read
    without changing the log: only a resume (:func:`read_back`) repairs it."""
    return run_dir.read_records(check=record_problems, repair=False)


# -- the configuration's fingerprint ---------------------------------------------------------


def fingerprinted(config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's record of ``config``: the values of the keys a resume must keep, and
    their SHA-256 (``config_fingerprint``)."""
    values = {key: value for key, value in _flat(config).items() if not _resumable(key)}
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return {"config_fingerprint": hashlib.sha256(text.encode()).hexdigest(), "config": values}


def check_config_unchanged(
    checkpoint: dict[str, Any], config: dict[str, Any], quiet: bool = False
) -> None:
    """Refuse a resume whose configuration differs from the checkpoint's in a kept key.

    Keys only one side has are not compared: an evores that adds a key reads an earlier run's
    config with its default. A checkpoint from before fingerprints is not checked.
    """
    stored = checkpoint.get("config")
    if stored is None:
        if not quiet:
            log.info("the checkpoint predates configuration fingerprints: %s not compared", CONFIG)
        return
    if fingerprinted(config)["config_fingerprint"] == checkpoint.get("config_fingerprint"):
        return
    current = fingerprinted(config)["config"]
    changed = sorted(k for k in stored.keys() & current.keys() if stored[k] != current[k])
    if not changed:
        return
    shown = ", ".join(f"{k} ({stored[k]!r} -> {current[k]!r})" for k in changed[:6])
    more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
    raise CheckpointError(
        f"{CONFIG} changed since the run was checkpointed: {shown}{more}; a resume continues "
        "the run it started, so undo the edit, or start a new run directory with it "
        f"(only {', '.join(RESUMABLE)} may change between starts)"
    )


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def _resumable(key: str) -> bool:
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in RESUMABLE)


# -- the log against the checkpoint ----------------------------------------------------------


def check_log_covers(run_dir: RunDirectory, checkpoint: dict[str, Any], records: list) -> None:
    """Refuse a log that lost records the checkpoint counts: the finished log would lack them.

    The checkpoint names how many lines the log had when it was written (``logged``); those
    must all be there and usable. A checkpoint from before that count is held to the
    evaluations it counts.
    """
    path = run_dir.file(EVALUATIONS)
    logged = checkpoint.get("logged")
    if logged is not None:
        wrong = [number for number, _, _ in run_dir.rejected if number <= logged]
        present = min(run_dir.n_logged, logged)
        if present < logged or wrong:
            why = (
                f"damaged: {len(wrong)} record(s) with wrong types"
                if wrong
                else "truncated or emptied"
            )
            _refuse_short_log(path, present - len(wrong), logged, "records", why)
        return
    search = checkpoint["search"]
    completed = {
        kind: {tuple(r["key"]) for r in records if r["kind"] == kind and r["status"] != INTERRUPTED}
        for kind in (KIND_SEARCH, KIND_FINAL)
    }
    counted = {KIND_SEARCH: search["n_evaluations"], KIND_FINAL: len(search["final"])}
    why = (
        f"damaged: {len(run_dir.rejected)} record(s) with wrong types"
        if run_dir.rejected
        else "truncated or emptied"
    )
    for kind, told in counted.items():
        if len(completed[kind]) < told:
            _refuse_short_log(path, len(completed[kind]), told, f"{kind} evaluations", why)


def _refuse_short_log(path, present: int, counted: int, what: str, why: str) -> None:
    raise CheckpointError(
        f"{path} holds {present} of the {counted} {what} that {CHECKPOINT} counts (the log was "
        f"{why}); restore it from a backup, or start a new run directory"
    )


# -- the checkpoint's state ------------------------------------------------------------------


def state_problems(state: Any, config: dict[str, Any]) -> list[str]:
    """What makes a checkpoint's state unusable for a run of ``config``; empty if usable."""
    if not isinstance(state, dict):
        return [f"the state is {type(state).__name__}, not an object"]
    problems = []
    if not is_number(state.get("elapsed")) or state["elapsed"] < 0:
        problems.append(f"elapsed = {state.get('elapsed')!r} is not a number of seconds >= 0")
    if "config" in state and not (
        isinstance(state["config"], dict) and isinstance(state.get("config_fingerprint"), str)
    ):
        problems.append("config is not the record of a configuration")
    if "logged" in state and not (is_int(state["logged"]) and state["logged"] >= 0):
        problems.append(f"logged = {short(state['logged'])} is not a count of log lines")
    search = state.get("search")
    if not isinstance(search, dict):
        return problems + [f"search = {short(search)} is not an object"]
    return problems + _search_problems(search, config)


def _search_problems(search: dict[str, Any], config: dict[str, Any]) -> list[str]:
    schedule = config["schedule"]
    budgets = schedule["evaluations"]
    problems = []
    fields = {
        "phase": lambda v: v in PHASES,
        "stage": lambda v: is_int(v) and 0 <= v < len(budgets),
        "n_evaluations": lambda v: is_int(v) and 0 <= v <= sum(budgets),
        "population": lambda v: isinstance(v, list) and all(map(_is_member, v)),
        "space": lambda v: isinstance(v, dict),
        "stage_scores": lambda v: isinstance(v, list) and all(map(is_number, v)),
        "stage_started": lambda v: is_number(v) and v >= 0,
        "stages": lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
        "transitions": lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v),
        "final": lambda v: isinstance(v, list) and all(isinstance(f, dict) for f in v),
        "carried": lambda v: isinstance(v, list) and all(map(_is_member, v)),
        # The fidelity probe's (absent from checkpoints written before it, and at times).
        "probe": lambda v: isinstance(v, list) and all(map(_is_member, v)),
        "probe_size": lambda v: is_int(v) and v >= 0,
        "stage_members": lambda v: isinstance(v, list) and all(map(_is_member, v)),
        "stage_best": lambda v: isinstance(v, list) and all(map(_is_member, v)),
        "decisions": lambda v: isinstance(v, list) and all(isinstance(d, dict) for d in v),
        "unnarrowed": lambda v: isinstance(v, dict),
    }
    if config["search"]["strategy"] == "tpe":
        fields["trials"] = lambda v: isinstance(v, list) and all(map(_is_member, v))
    if config["search"]["asynchronous"]:
        fields["births"] = lambda v: is_int(v) and v >= 0
        fields["pending"] = lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v)
    else:
        fields["generation"] = lambda v: is_int(v) and v >= 0
    for name, valid in fields.items():
        if name not in search:
            if name not in OPTIONAL_KEYS:
                problems.append(f"{name} is missing")
        elif not valid(search[name]):
            problems.append(f"{name} = {short(search[name])} is impossible for this run")
    if not problems:
        problems += _consistency_problems(search, budgets)
    return problems


def _consistency_problems(search: dict[str, Any], budgets: list[int]) -> list[str]:
    problems = []
    stage = search["stage"]
    if not is_int(search.get("stage_used")) or not 0 <= search["stage_used"] <= budgets[stage]:
        problems.append(
            f"stage_used = {short(search.get('stage_used'))} is outside stage {stage}'s "
            f"budget of {budgets[stage]}"
        )
    closed = stage + (search["phase"] != "search")
    if len(search["stages"]) != closed:
        problems.append(f"{len(search['stages'])} closed stages recorded, {closed} expected")
    from evores.strategies.space import SearchSpace

    try:
        SearchSpace.from_dict(search["space"])
    except ConfigError as error:
        problems.append(f"space: {error}")
    return problems


def _is_member(member: Any) -> bool:
    return (
        isinstance(member, dict)
        and isinstance(member.get("hparams"), dict)
        and is_number(member.get("fitness"))
        and isinstance(member.get("status"), str)
        and is_int(member.get("best_epoch", 0))
        and isinstance(member.get("key"), list)
    )
