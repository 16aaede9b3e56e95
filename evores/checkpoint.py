"""The run directory on disk: resolved config, evaluation log, checkpoints, summary.

Everything is plain text data. Whole files are replaced atomically (evores.atomic: a temporary
file in the same directory, fsync, rename), so a crash leaves the old or the new file, never half.
The evaluation log is append-only JSON lines: a crash can at worst truncate its last line,
which reading skips. The previous checkpoint is kept beside the current one, so a damaged
checkpoint falls back to the generation before it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from evores.atomic import write_json, write_text
from evores.errors import CheckpointError, ConfigError
from evores.slurm import job_id

log = logging.getLogger("evores.checkpoint")

FORMAT = 1  # bump when the checkpoint layout changes incompatibly

CONFIG = "config.toml"
EVALUATIONS = "evaluations.jsonl"
CHECKPOINT = "checkpoint.json"
PREVIOUS = "checkpoint.prev.json"
SUMMARY = "summary.json"
LOCK = "lock.json"


class RunDirectory:
    """The files of one run, under ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    def has_run(self) -> bool:
        return self.file(CONFIG).is_file()

    def create(self, config_text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.file(CONFIG), config_text)

    def append_record(self, record: dict[str, Any]) -> None:
        """Append one evaluation. Written through to the OS at once, so it survives the process
        (kill -9, a segfault); forced to disk by the next checkpoint, so a checkpoint never
        counts an evaluation that a machine crash could take out of the log. (An fsync per
        record cost 4-9 ms here, more than a short evaluation's whole overhead budget.)"""
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        with self.file(EVALUATIONS).open("a", encoding="utf-8") as stream:
            stream.write(line + "\n")

    def read_records(self) -> list[dict[str, Any]]:
        """Every complete record of the evaluation log; a torn last line is skipped."""
        path = self.file(EVALUATIONS)
        if not path.exists():
            return []
        records = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):
                    log.warning("%s: skipping a truncated last line (a crash mid-write)", path)
                    self._drop_torn_tail(path, lines[:-1])
                else:
                    raise CheckpointError(
                        f"{path} line {number} is not JSON; the log is damaged beyond its last "
                        "line: restore it from a backup or start a new run directory"
                    ) from None
        return records

    @staticmethod
    def _drop_torn_tail(path: Path, good_lines: list[str]) -> None:
        # So the next append starts on a fresh line instead of gluing onto the torn one.
        write_text(path, "".join(line + "\n" for line in good_lines))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._sync_log()
        current = self.file(CHECKPOINT)
        text = json.dumps({"format": FORMAT, "state": state}, allow_nan=False)
        if current.exists():
            os.replace(current, self.file(PREVIOUS))
        write_text(current, text)

    def _sync_log(self) -> None:
        path = self.file(EVALUATIONS)
        if path.exists():
            with path.open("rb") as stream:
                os.fsync(stream.fileno())

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The newest readable checkpoint's state, or None when the run has none yet."""
        problems = []
        for name in (CHECKPOINT, PREVIOUS):
            path = self.file(name)
            if not path.exists():
                continue
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
                state = payload["state"]
                version = payload["format"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
                problems.append(f"{path} is damaged ({type(error).__name__})")
                if name == CHECKPOINT:
                    log.warning("%s is damaged; falling back to %s", path, PREVIOUS)
                continue
            if version != FORMAT:
                raise CheckpointError(
                    f"{path} was written by an incompatible evores (checkpoint format {version}, "
                    f"this version reads {FORMAT}); resume it with that version or start anew"
                )
            return state
        if problems:
            raise CheckpointError("; ".join(problems) + "; no usable checkpoint to resume from")
        return None

    def lock(self) -> None:
        """Claim the directory for this process; refuse when a live run holds it.

        The lock file names the host, pid and SLURM job of its holder. It is stale, and taken
        over, when its holder is a dead process on this host, or when it was left by an earlier
        start of this same SLURM job (a requeued job keeps its id, maybe not its node).
        """
        path = self.file(LOCK)
        mine = _holder()
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder is not None and _alive(holder, mine):
                    raise CheckpointError(
                        f"run directory {str(self.path)!r} is in use by a live run (host "
                        f"{holder.get('host')}, pid {holder.get('pid')}"
                        + (f", SLURM job {holder['job']}" if holder.get("job") else "")
                        + f"); wait for it to end, or if it is dead, delete {path}"
                    ) from None
                log.warning("taking over the stale lock of a run that ended without releasing it")
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                json.dump(mine, stream)
            self._locked = True
            return
        raise CheckpointError(f"could not lock {path}: another run keeps creating it")

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock` (harmless when it was not taken)."""
        if getattr(self, "_locked", False):
            self.file(LOCK).unlink(missing_ok=True)
            self._locked = False

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.file(SUMMARY), summary)


def _holder() -> dict[str, Any]:
    """This process as a lock names it: host, pid and SLURM job id ("" outside a job)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": _job()}


def _job() -> str:
    try:
        job = job_id()
    except ConfigError:
        # A broken SLURM_JOB_ID was refused at start-up; a lock taken anyway (a test, a tool)
        # then names no job, and so is only taken over when its pid is dead.
        return ""
    return "" if job is None else str(job)


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's holder; None for a lock torn by a crash while it was written."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(holder: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Whether the lock's holder may still be running (unknown counts as alive)."""
    if holder.get("job") and holder.get("job") == mine["job"]:
        return False  # an earlier start of this very SLURM job, now requeued
    if holder.get("host") != mine["host"]:
        return True  # a process on another node cannot be checked from here
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    # A live pid may have been reused by an unrelated process since the holder died.
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return not command or b"evores" in command  # empty while a process starts or exits
