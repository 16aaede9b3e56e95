"""The run directory a command line names: ``--out`` checked, and the run's data report kept.

``--out`` is checked before anything slow (the dataset cache can take minutes to build) and
claimed (``RunDirectory.claim``: created and locked) before anything is written into it, so two
runs racing for one directory cannot overwrite each other's files. The dataset report that
``summary.json`` shows is the one the run started with, kept in the run directory: the shared
cache may be rebuilt by another run meanwhile (more resolutions, a changed folder), and a
resumed run's summary must still describe the data it was run on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evores.core.atomic import write_json
from evores.core.errors import UNPARSABLE, CheckpointError
from evores.core.paths import usable_path
from evores.store.checkpoint import RunDirectory
from evores.store.names import CANDIDATE, DATA_REPORT

log = logging.getLogger("evores.store.checkpoint")


def out_path(text: str) -> Path:
    """``--out``'s argparse type: an empty path would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("--out is empty; give the run directory's path")
    return Path(text)


def run_directory(out: Path | None, resume: bool) -> RunDirectory:
    """The run directory ``--out`` names (a new dated one for a fresh run without it)."""
    if out is None:
        if resume:
            raise CheckpointError(
                "resume=True (--resume) needs the run directory to continue (out=, --out DIR)"
            )
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    run_dir = RunDirectory(usable_path(out, "run directory (out=, --out)", CheckpointError))
    if run_dir.path.is_symlink() and not run_dir.path.exists():
        raise CheckpointError(
            f"run directory (out=, --out) {str(run_dir.path)!r} is a symlink to "
            f"{os.readlink(run_dir.path)!r}, which does not exist; create that directory, or "
            "give another"
        )
    if run_dir.path.exists() and not run_dir.path.is_dir():
        raise CheckpointError(
            f"run directory (out=, --out) {str(run_dir.path)!r} is a file, not a directory; "
            "choose a directory"
        )
    return run_dir


@dataclass(frozen=True)
class RunData:
    """What a run's summary says of its data: the class names and the cache's build report."""

    class_names: list[str]
    report: dict[str, Any]


def keep_data_report(run_dir: RunDirectory, cache: Any) -> RunData:
    """The data description the run started with: written on the first start, read back on
    every later one (a run from before this file keeps the report of its first resume)."""
    path = run_dir.file(DATA_REPORT)
    pin = cache.pin() if hasattr(cache, "pin") else None  # a stand-in cache has none
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        data = RunData(list(kept["classes"]), dict(kept["report"]))
    except FileNotFoundError:
        data = RunData(list(cache.class_names), dict(cache.report))
        write_json(path, {"classes": data.class_names, "report": data.report, "data": pin})
        return data
    except (*UNPARSABLE, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path} is damaged ({type(error).__name__}); delete it to describe the run with "
            "the dataset cache as it is now"
        ) from None
    if data.class_names != list(cache.class_names):
        raise CheckpointError(
            f"the dataset's classes changed since the run started ({data.class_names} -> "
            f"{list(cache.class_names)}); resume with the data it started with, or start anew"
        )
    started = kept.get("data")  # absent from runs started before the data was pinned
    if started and pin and started != pin:
        what = "images" if started["source_fingerprint"] != pin["source_fingerprint"] else "split"
        raise CheckpointError(
            f"the dataset's {what} changed since the run started (it started on "
            f"{data.report.get('n_images', '?')} images, and its test images must stay unseen): "
            "resume with the data it started with, or start a new run directory"
        )
    return data


def candidate_path(run_dir: str | Path, index: int) -> Path:
    """Where the final retraining writes the weights of final candidate ``index``."""
    return Path(run_dir) / CANDIDATE.format(index=index)
