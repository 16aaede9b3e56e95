"""One image file: which files count as images, how one is opened and decoded safely, its upright
size, how its pixels become 8-bit gray or RGB, and which decoding errors mean an unreadable file
rather than a fault of the machine."""

from __future__ import annotations

import errno
import hashlib
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp",
     ".dcm"}
)  # fmt: skip
# Pillow modes without colour: stored as one channel when every image of a source has one.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Bit depths a deeper-than-8-bit image is taken to use: the smallest that holds its largest
# value, so a 12-bit scan in a 16-bit file keeps its contrast instead of turning almost black.
_DEEP_BITS = (10, 12, 14, 16, 32)


class UnsupportedImage(ValueError):
    """A file that parses but holds something evores cannot train on (its message says what,
    for the build report): a multi-frame DICOM, a TIFF that is not one 2-D picture."""


# Decoding errors Pillow raises for corrupt or truncated files. Its decompression-bomb error
# stays among them for a Pillow call other than open_image's, which keeps its own size check;
# what a cache build may decode is decided by evores.data.resample.decodable instead.
DECODE_ERRORS = (
    OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
    Image.DecompressionBombError,
)  # fmt: skip


def to_8bit(array: np.ndarray) -> np.ndarray:
    """uint8 of a gray or colour array: values within 0..255 as they are; deeper values scaled
    from the smallest of 10, 12, 14, 16 or 32 bits that holds the largest (negatives clip to 0)."""
    if array.dtype == np.uint8:
        return array
    values = np.clip(np.asarray(array, dtype=np.float64), 0, None)
    top = float(values.max(initial=0))
    if top > 255:
        bits = next((b for b in _DEEP_BITS if top <= 2**b - 1), _DEEP_BITS[-1])
        values *= 255.0 / (2**bits - 1)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_channels(image: Image.Image, channels: int = 3) -> Image.Image:
    """The image as 8-bit RGB (``channels`` 3) or gray "L" (1): palette, grayscale, CMYK,
    16-bit and alpha images included (alpha composited over black, the colour of padding)."""
    target = "RGB" if channels == 3 else "L"
    if image.mode == target:
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # convert("L") would clip deep values at 255; scale them down instead.
        image = Image.fromarray(to_8bit(np.asarray(image)), "L")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert(target)
    return image.convert(target)


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB (see :func:`to_channels`)."""
    return to_channels(image, 3)


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


def is_gray(image) -> bool:
    """Whether an opened image (Pillow's, or a :class:`evores.data.levels.LevelledImage`) has
    no colour, judged from its header."""
    gray = getattr(image, "gray", None)
    return gray if gray is not None else image.mode in GRAY_MODES


def display_size(image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    width, height = image.size
    if not hasattr(image, "getexif"):  # read by evores, not Pillow: no orientation tag applied
        return width, height
    try:
        orientation = image.getexif().get(0x0112, 1)
    except DECODE_ERRORS:
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
