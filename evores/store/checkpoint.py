"""The run directory on disk: resolved config, evaluation log, checkpoints, summary.

Everything is plain text data. Whole files are replaced atomically (evores.core.atomic: a temporary
file in the same directory, fsync, rename), so a crash leaves the old or the new file, never half.
The evaluation log is append-only JSON lines: a crash can at worst truncate its last line,
which reading skips. The previous checkpoint is kept beside the current one, so a damaged
checkpoint falls back to the generation before it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evores.core.atomic import write_json, write_text
from evores.core.errors import UNPARSABLE, CheckpointError, ConfigError
from evores.hpc.environment import job_id
from evores.store.names import CHECKPOINT, CONFIG, EVALUATIONS, LOCK, PREVIOUS, REJECTED, SUMMARY

log = logging.getLogger("evores.store.checkpoint")

FORMAT = 1  # bump when the checkpoint layout changes incompatibly


# What evores.core.atomic names a temporary file: "." + the target's name + 8 random characters.
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")

# A check of what is read back: the problems that make it unusable (none: it is usable).
Check = Callable[[Any], list[str]]


class RunDirectory:
    """The files of one run, under ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rejected: list[tuple[int, str, list[str]]] = []  # (line, text, problems)
        self.n_logged = 0  # complete lines in the log, as last read plus appended since

    def file(self, name: str) -> Path:
        return self.path / name

    def is_empty(self) -> bool:
        """Whether no run has written anything here (a lock alone: its run has not yet, and
        :meth:`claim` tells whether it is alive)."""
        return not self.path.exists() or all(p.name == LOCK for p in self.path.iterdir())

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
        self._append(EVALUATIONS, line + "\n")
        self.n_logged += 1

    def _append(self, name: str, text: str) -> None:
        """Append ``text`` to the run directory's file ``name``, never through a symbolic link
        planted in its place (which would make the run write into a file of someone else's)."""
        path = self.file(name)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            descriptor = os.open(path, flags, 0o666)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise CheckpointError(
                f"{path} is a symbolic link, and evores writes only the run directory's own "
                "files: remove the link (or put back the file it replaced), then run again"
            ) from None
        with os.fdopen(descriptor, "a", encoding="utf-8") as stream:
            stream.write(text)

    def read_records(self, check: Check | None = None, repair: bool = True) -> list[dict[str, Any]]:
        """Every complete record of the evaluation log; a torn last line is skipped, and with
        ``repair`` (a run about to append) cut off the file. With ``check``, records it finds
        problems with are skipped too, and listed in :attr:`rejected` (see
        :meth:`set_aside_rejected`)."""
        path = self.file(EVALUATIONS)
        self.rejected, self.n_logged = [], 0
        if not path.exists():
            return []
        records = []
        lines = path.read_bytes().splitlines()
        self.n_logged = len(lines)
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
                lines[number - 1] = line
                record = json.loads(line)
                problems = check(record) if check is not None else []
                if problems:
                    self.rejected.append((number, line, problems))
                else:
                    records.append(record)
            except UNPARSABLE:
                if number == len(lines):
                    log.warning("%s: skipping a truncated last line (a crash mid-write)", path)
                    self.n_logged -= 1
                    if repair:
                        self._drop_torn_tail(path, lines[:-1])
                else:
                    raise CheckpointError(
                        f"{path} line {number} is not JSON; the log is damaged beyond its last "
                        "line: restore it from a backup or start a new run directory"
                    ) from None
        if self.rejected:
            number, _, problems = self.rejected[0]
            log.warning(
                "%s: skipping %d record(s) with wrong types or values (line %d: %s)",
                path, len(self.rejected), number, "; ".join(problems),
            )  # fmt: skip
        return records

    def set_aside_rejected(self) -> None:
        """Move the records :meth:`read_records` rejected from the log to ``REJECTED``, so the
        log holds only usable records (their evaluations are run again)."""
        if not self.rejected:
            return
        numbers = {number for number, _, _ in self.rejected}
        self._append(REJECTED, "".join(line + "\n" for _, line, _ in self.rejected))
        lines = self.file(EVALUATIONS).read_text(encoding="utf-8").splitlines()
        kept = [line for number, line in enumerate(lines, 1) if number not in numbers]
        write_text(self.file(EVALUATIONS), "".join(line + "\n" for line in kept))
        self.n_logged = len(kept)
        log.warning(
            "set aside %d unusable record(s) in %s; their evaluations run again",
            len(self.rejected), self.file(REJECTED),
        )  # fmt: skip
        self.rejected = []

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

    def load_checkpoint(self, check: Check | None = None) -> dict[str, Any] | None:
        """The newest readable checkpoint's state, or None when the run has none yet. A
        checkpoint that is not JSON, or whose state ``check`` finds problems with, is passed
        over for the previous one."""
        problems = []
        for name in (CHECKPOINT, PREVIOUS):
            path = self.file(name)
            if not path.exists():
                continue
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
                state = payload["state"]
                version = payload["format"]
            except (*UNPARSABLE, KeyError, TypeError) as error:
                problems.append(f"{path} is damaged ({type(error).__name__})")
                if name == CHECKPOINT:
                    log.warning("%s is damaged; falling back to %s", path, PREVIOUS)
                continue
            if version != FORMAT:
                raise CheckpointError(
                    f"{path} was written by an incompatible evores (checkpoint format {version}, "
                    f"this version reads {FORMAT}); resume it with that version or start anew"
                )
            wrong = check(state) if check is not None else []
            if wrong:
                problems.append(f"{path} is unusable ({'; '.join(wrong)})")
                if name == CHECKPOINT:
                    log.warning("%s is unusable (%s); falling back to %s", path, wrong[0], PREVIOUS)
                continue
            return state
        if problems:
            raise CheckpointError("; ".join(problems) + "; no usable checkpoint to resume from")
        return None

    def lock(self) -> None:
        """Claim the directory for this process; refuse when a live run holds it.

        The holder keeps an OS lock (``flock``) on the lock file for its whole life, so that
        two processes that can see each other's locks never both hold it, whatever their
        command lines, and a takeover has no race. The file also names the host, pid, process
        start and SLURM job of its holder, for what an OS lock cannot see: a lock the holder
        no longer keeps is stale, and taken over, when its holder is a dead process on this
        host (its pid gone, or reused by a process that started later), or when it was left
        by an earlier start of this same SLURM job (a requeued job keeps its id, maybe not its
        node). A holder on another node is taken to be alive.
        """
        path = self.file(LOCK)
        mine = _holder()
        for _ in range(10):
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            locked = _os_lock(descriptor)
            if locked and not _same_file(descriptor, path):
                os.close(descriptor)  # its holder released and removed it meanwhile
                continue
            if not locked:
                holder = _read_lock(path)
                os.close(descriptor)
                self._refuse(holder or {}, path)
            holder = _read_lock(path)
            if holder and holder != mine and _alive(holder, mine):
                os.close(descriptor)  # held by a run that keeps no OS lock (an earlier evores)
                self._refuse(holder, path)
            if holder:
                log.warning("taking over the stale lock of a run that ended without releasing it")
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(mine).encode(), 0)
            self._lock_descriptor = descriptor
            self._locked = True
            return
        raise CheckpointError(f"could not lock {path}: other runs keep taking and releasing it")

    def _refuse(self, holder: dict[str, Any], path: Path) -> None:
        raise CheckpointError(
            f"run directory {str(self.path)!r} is in use by a live run (host "
            f"{holder.get('host')}, pid {holder.get('pid')}"
            + (f", SLURM job {holder['job']}" if holder.get("job") else "")
            + f"); wait for it to end, or if it is dead, delete {path}"
        )

    def claim(self, fresh: bool) -> None:
        """Create the directory and lock it before anything else is written to it; for a fresh
        run, refuse a directory that is not empty once locked (another run may have written
        into it since it was checked); on resume, remove the temporary files a killed run left.
        """
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
        except OSError as error:
            fix = (
                "choose a writable one (out=, --out)"
                if fresh
                else "resume=True (--resume) writes into it: make it writable, or copy the run "
                "to a place that is and resume there"
            )
            raise CheckpointError(
                f"cannot write the run directory {str(self.path)!r} ({error.strerror}); {fix}"
            ) from None
        others = [p.name for p in self.path.iterdir() if p.name != LOCK]
        if fresh and others:
            self.unlock()
            raise CheckpointError(
                f"run directory {str(self.path)!r} is not empty (another run wrote {others[0]} "
                "into it); pass resume=True (--resume) to continue that run, or choose a new "
                "one (out=, --out)"
            )
        if not fresh:
            self.remove_stale_temporaries()

    def release(self) -> None:
        """Unlock, and remove the directory again when :meth:`claim` created it and it is still
        empty (a run refused after claiming leaves nothing behind)."""
        self.unlock()
        if not getattr(self, "_created", False):
            return
        try:
            self.path.rmdir()
        except OSError:
            pass  # not empty: a run's files are there

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files of whole-file writes a killed process left (only call
        while holding the lock: no other process of this run can be writing one)."""
        for path in self.path.iterdir():
            if _TEMPORARY.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                log.info("removed %s, left by a run that was killed while writing it", path.name)

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock` (harmless when it was not taken)."""
        if getattr(self, "_locked", False):
            # Removed while still held, so no other process can take the file being removed.
            self.file(LOCK).unlink(missing_ok=True)
            os.close(self._lock_descriptor)
            self._locked = False

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.file(SUMMARY), summary)


def _holder() -> dict[str, Any]:
    """This process as a lock names it: host, pid, start and SLURM job id ("" outside a job)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "job": _job(), "started": _start(pid)}


def _start(pid: int) -> str | None:
    """When process ``pid`` started, as the kernel counts it (the boot and the clock ticks
    since): a pid reused by another process after its holder died does not match."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return f"{boot}/{stat.rpartition(')')[2].split()[19]}"  # field 22: starttime
    except (OSError, IndexError):
        return None


def _os_lock(descriptor: int) -> bool:
    """Take the OS lock on ``descriptor`` without waiting; True when taken (or where the file
    system has no such locks: the lock file's contents decide alone)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether ``descriptor`` is still the file at ``path`` (a holder that released it
    removed it; its successor locks a new one)."""
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except OSError:
        return False


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
    except (OSError, *UNPARSABLE):
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
    # A live pid may have been reused by another process since the holder died: it started
    # later. A lock without its holder's start (an earlier evores) counts as alive.
    started = holder.get("started")
    return not isinstance(started, str) or _start(pid) in (started, None)
