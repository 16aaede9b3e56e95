"""One image file: which files count as images, how one is opened and decoded safely, its upright
size, and which decoding errors mean an unreadable file rather than a fault of the machine."""

from __future__ import annotations

import errno
import hashlib
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)
# Decoding errors Pillow raises for corrupt or truncated files. Its decompression-bomb error
# stays among them for a Pillow call other than open_image's, which keeps its own size check;
# what a cache build may decode is decided by evores.data.resample.decodable instead.
DECODE_ERRORS = (
    OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
    Image.DecompressionBombError,
)  # fmt: skip


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB: palette, grayscale, CMYK, 16-bit and alpha images included."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # convert("L") would clip 16-bit values at 255; scale the full range down instead.
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if array.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(file) -> Image.Image:
    """``Image.open``, which reads the header alone, without Pillow's decompression-bomb check
    on the header's size: how much may be decoded is decided from what downsampling the image
    decodes (a JPEG at a reduced DCT scale), by :func:`evores.data.resample.process_image`."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the check reads this global; restored at once
    try:
        return Image.open(file)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def unusable_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file (a reason for the report), or None.

    A FIFO or device named like an image would block or never end when read; a symlink loop
    or a dangling symlink cannot be opened at all.
    """
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if path.is_symlink():
            return "symlink loop" if error.errno == errno.ELOOP else "dangling symlink"
        return f"unreadable ({type(error).__name__})"
    return None if stat.S_ISREG(mode) else "not a regular file"


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def display_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except DECODE_ERRORS:
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
