"""The run directory on disk: resolved config, evaluation log, checkpoints, summary.

Everything is plain text data. Whole files are replaced atomically (temporary file in the same
directory, fsync, rename), so a crash leaves either the old or the new file, never half of one.
The evaluation log is append-only JSON lines: a crash can at worst truncate its last line,
which reading skips. The previous checkpoint is kept beside the current one, so a damaged
checkpoint falls back to the generation before it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from evores.errors import CheckpointError

log = logging.getLogger("evores.checkpoint")

FORMAT = 1  # bump when the checkpoint layout changes incompatibly

CONFIG = "config.toml"
EVALUATIONS = "evaluations.jsonl"
CHECKPOINT = "checkpoint.json"
PREVIOUS = "checkpoint.prev.json"
SUMMARY = "summary.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, nothing between."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


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
        atomic_write_text(self.file(CONFIG), config_text)

    def append_record(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        with self.file(EVALUATIONS).open("a", encoding="utf-8") as stream:
            stream.write(line + "\n")
            stream.flush()
            os.fsync(stream.fileno())

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
        atomic_write_text(path, "".join(line + "\n" for line in good_lines))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        current = self.file(CHECKPOINT)
        text = json.dumps({"format": FORMAT, "state": state}, allow_nan=False)
        if current.exists():
            os.replace(current, self.file(PREVIOUS))
        atomic_write_text(current, text)

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
                log.warning("%s is damaged; falling back to the previous checkpoint", path)
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

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.file(SUMMARY), summary)
