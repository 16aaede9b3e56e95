"""What every image source has in common: the record of one image (:class:`Item`), what a scan
found besides usable images (:class:`ScanReport`), and the :class:`Source` interface."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from evores.core.errors import DataError

logger = logging.getLogger("evores.data.sources")

MAX_SKIP_EXAMPLES = 20


@dataclass(frozen=True)
class Item:
    """One image of a source: enough to split the data and to open the image later."""

    index: int  # position in the source's enumeration, what Source.open receives
    label: int
    key: str  # sha256 of the content; identical images share it
    size: tuple[int, int]  # (width, height) as displayed
    name: str  # relative path or "<split>/<index>", for reports
    split: str | None = None  # given split ("train"/"val"/"test") or None
    gray: bool = False  # no colour in its header: a source of gray images caches one channel
    smallest: tuple[int, int] | None = None  # its smallest stored level (a pyramid), if any


@dataclass
class ScanReport:
    """What a scan found besides the usable images."""

    n_ignored: int = 0  # files that are not images by their extension
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: list = field(default_factory=list)  # [name, reason], at most MAX_SKIP_EXAMPLES
    n_reduced: int = 0  # images decoded at a reduced size (a JPEG DCT scale, a pyramid level)

    def skip(self, name: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MAX_SKIP_EXAMPLES:
            self.examples.append([name, reason])
        logger.warning("skipping %s: %s", name, reason)


def resolved(path: str | Path) -> Path:
    """``path`` made absolute with its symlinks followed; a symlink loop is refused."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as error:  # RuntimeError: a loop, before Python 3.13
        raise DataError(
            f"dataset path {str(path)!r} cannot be resolved ({error}); set data.path to the "
            "dataset itself, not to a symlink loop"
        ) from None


class Source:
    """Base class: a named, fingerprinted collection of labelled images."""

    #: Short dataset name used in cache file names.
    name: str = "source"
    #: Identity of the source in the cache parameters (kind and absolute location).
    identity: str = ""
    class_names: list[str]
    #: One line describing how the splits are decided.
    layout: str = "generated split"

    def fingerprint(self) -> str:
        """A string that changes whenever the images may have changed."""
        raise NotImplementedError

    def scan(self, report: ScanReport) -> list[Item]:
        """Enumerate the usable images; skipped ones are recorded in ``report``."""
        raise NotImplementedError

    def open(self, item: Item) -> Image.Image:
        """The image of ``item``, opened lazily where possible (so JPEG draft mode works)."""
        raise NotImplementedError
