"""Opening one image file by its format: Pillow for the common ones, ``tifffile`` for pyramidal
TIFF (BigTIFF included), ``pydicom`` for DICOM; and reading one file's record for a scan."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from evores.data.dicom import open_dicom
from evores.data.images import (
    DECODE_ERRORS,
    UnsupportedImage,
    display_size,
    is_gray,
    open_image,
    sha256_bytes,
    unusable_file,
)
from evores.data.items import Item, ScanReport
from evores.data.levels import LevelledImage
from evores.data.tiff import open_tiff


def open_file(file, suffix: str) -> Image.Image | LevelledImage:
    """The image in ``file`` (a path or a binary file) with the extension ``suffix``, header
    read only; pixels are decoded by :mod:`evores.data.resample`."""
    suffix = suffix.lower()
    if suffix == ".dcm":
        return open_dicom(file)
    if suffix in (".tif", ".tiff"):
        return open_tiff(file)
    return open_image(file)


def scan_file(
    path: Path, name: str, label: int, split: str | None, index: int, report: ScanReport
) -> Item | None:
    """The record of the image file ``path`` (its content hashed, its header read), or None
    with the reason it cannot be used recorded in ``report``."""
    problem = unusable_file(path)
    if problem is not None:
        report.skip(name, problem)
        return None
    buffer = io.BytesIO()
    try:
        data = path.read_bytes()
        buffer = io.BytesIO(data)
        with open_file(buffer, path.suffix) as image:
            size = display_size(image)
            gray = is_gray(image)
            levels = getattr(image, "levels", [size])
    except UnsupportedImage as exc:
        report.skip(name, str(exc))
        return None
    except DECODE_ERRORS as exc:
        report.skip(name, f"unreadable ({type(exc).__name__})")
        return None
    finally:  # frees the file's bytes now: a reader's reference cycles would keep them to GC
        buffer.close()
    smallest = levels[-1] if len(levels) > 1 else None
    return Item(index, label, sha256_bytes(data), size, name, split, gray, smallest)
