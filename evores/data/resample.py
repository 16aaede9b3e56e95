"""Downsampling one image to a square resolution, as the dataset cache and a trained winner do
it alike: crop mode, resampling filter, gray or RGB, and decoding at a reduced size: a JPEG at a
reduced DCT scale, a pyramidal TIFF at a smaller stored level."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from evores.core.errors import DataError
from evores.data.images import display_size, to_channels
from evores.data.levels import LevelledImage
from evores.data.sources import Item, Source

logger = logging.getLogger("evores.data.resample")

MIN_RESOLUTION = 2  # the smallest schedule.resolutions value the configuration accepts
# The most pixels one image may decode to while the cache is built (data.max_decode_pixels):
# 250 million pixels are 750 MB as 8-bit RGB, and at most about 1.5 GB while a gray, 16-bit
# or RGBA image is converted: one image at a time, beside the cache's output arrays, on any
# node that trains CNNs. A 12,000 px JPEG decodes at 1/8 scale (2.3 MP); a 10,000 px PNG whole
# (100 MP); a header that claims 100,000 x 100,000 px (10,000 MP) is refused undecoded.
MAX_DECODE_PIXELS = 250_000_000
FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
CROPS = ("centre", "squash", "pad")
CHANNELS = ("auto", 1, 3)  # data.channels: "auto" stores one where every image is gray


_RESAMPLE = {name: getattr(Image.Resampling, name.upper()) for name in FILTERS}


def _relevant_side(size: tuple[int, int], crop: str) -> int:
    return max(size) if crop == "pad" else min(size)


def upscaled_counts(items, resolutions, crop: str, where: str) -> dict[int, int]:
    """Images per resolution that must be upscaled; DataError if all of them must."""
    sides = np.array([_relevant_side(item.size, crop) for item in items])
    largest = int(sides.max())
    side_name = "long" if crop == "pad" else "short"
    for r in resolutions:
        if r > largest and largest < MIN_RESOLUTION:
            raise DataError(
                f"every image of {where} is at most {largest} px on its {side_name} side, too "
                f"small to train on: use a dataset whose images are at least {MIN_RESOLUTION} px"
            )
        if r > largest:
            raise DataError(
                f"every image of {where} would be upscaled to {r} px: largest image {side_name} "
                f"side is {largest} px; choose resolutions <= {largest}"
            )
    counts = {r: int((sides < r).sum()) for r in resolutions}
    for r, n in counts.items():
        if n:
            logger.warning("%d of %d images of %s are upscaled to %d px", n, len(items), where, r)
    return counts


def _draft_scale(size: tuple[int, int], resolution: int, crop: str) -> int:
    """The JPEG DCT scale (1, 2, 4, 8) keeping the needed side >= 2 x resolution."""
    side = _relevant_side(size, crop)
    scale = side // (2 * resolution)
    return next(s for s in (8, 4, 2, 1) if s <= max(scale, 1))


def _resize(image: Image.Image, r: int, crop: str, resample: int) -> np.ndarray:
    """(C, r, r) uint8 of an RGB or gray image, cropped / squashed / padded to a square."""
    w, h = image.size
    if crop == "centre":
        s = min(w, h)
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        out = image.resize((r, r), resample, box=box)
    elif crop == "squash":
        out = image.resize((r, r), resample)
    else:
        scale = r / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        out = Image.new(image.mode, (r, r))
        out.paste(image.resize((nw, nh), resample), ((r - nw) // 2, (r - nh) // 2))
    array = np.asarray(out)
    return array[np.newaxis] if array.ndim == 2 else array.transpose(2, 0, 1)


def _level_for(levels: Sequence[tuple[int, int]], resolution: int, crop: str) -> int:
    """The smallest stored level whose needed side is still >= 2 x resolution (0: the full
    image, when no smaller level is large enough)."""
    large = [i for i, size in enumerate(levels) if _relevant_side(size, crop) >= 2 * resolution]
    return max(large, default=0)


def _decoded(image, key: int, channels: int) -> Image.Image:
    """Decode ``image`` at ``key`` (a stored level of a LevelledImage; else a JPEG's DCT scale,
    1 for the whole image), upright, as 8-bit RGB or gray."""
    if isinstance(image, LevelledImage):
        return to_channels(image.read(key), channels)
    if key > 1:
        w, h = image.size
        image.draft(image.mode, (max(1, w // key), max(1, h // key)))
    image.load()
    if image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    return to_channels(image, channels)


def _plan(image, size, resolutions, filter: str, crop: str) -> dict[int, list[int]]:
    """The resolutions grouped by what each decodes (see :func:`_decoded` for the keys);
    ``size`` the image's upright (width, height)."""
    by_key: dict[int, list[int]] = defaultdict(list)
    for r in resolutions:
        if isinstance(image, LevelledImage):
            key = _level_for(image.levels, r, crop)
        elif image.format == "JPEG" and filter != "nearest":
            key = _draft_scale(size, r, crop)
        else:
            key = 1
        by_key[key].append(r)
    return by_key


def _largest(image, by_key: dict[int, list[int]]) -> tuple[int, int]:
    """The key of ``by_key`` that decodes the most pixels, and how many."""
    if isinstance(image, LevelledImage):
        level = min(by_key)
        width, height = image.levels[level]
        return level, width * height
    scale = min(by_key)
    width, height = image.size
    return scale, -(-width // scale) * -(-height // scale)


def _reduction(image, key: int) -> int:
    """How much smaller than the full image decoding at ``key`` is (1: not reduced)."""
    if not isinstance(image, LevelledImage):
        return key
    if key == 0:
        return 1
    return max(2, round(image.levels[0][0] / image.levels[key][0]))


def decodable(
    source: Source, item: Item, resolutions, filter: str, crop: str, max_decode_pixels: int
) -> bool:
    """Whether building ``item`` decodes at most ``max_decode_pixels``; its header is read
    only when its size alone cannot tell (no draft scale reduces more than 8 x 8, no stored
    level is smaller than the smallest the scan saw)."""
    width, height = item.size
    if width * height <= max_decode_pixels:
        return True
    smallest = item.smallest or (-(-width // 8), -(-height // 8))
    if smallest[0] * smallest[1] > max_decode_pixels:
        return False
    with source.open(item) as image:
        by_key = _plan(image, item.size, resolutions, filter, crop)
        return _largest(image, by_key)[1] <= max_decode_pixels


class TooLargeToDecode(ValueError):
    """An image that would decode to more than ``max_decode_pixels``: skipped, undecoded."""


def process_image(
    source: Source,
    item: Item,
    resolutions: Sequence[int],
    filter: str,
    crop: str,
    max_decode_pixels: int = MAX_DECODE_PIXELS,
    channels: int = 3,
) -> tuple[dict[int, np.ndarray], int]:
    """Every resolution of one image, uint8 (``channels``, r, r), decoding it once per distinct
    JPEG draft scale or stored level, and how much the largest decode was reduced (1: the
    whole image). Raises :class:`TooLargeToDecode`, having decoded nothing, when a decode
    would exceed ``max_decode_pixels``."""
    out: dict[int, np.ndarray] = {}
    image = source.open(item)
    try:
        by_key = _plan(image, item.size, resolutions, filter, crop)
        largest, pixels = _largest(image, by_key)
        if pixels > max_decode_pixels:
            width, height = image.size
            logger.info("%s: %d x %d px would decode to %d pixels", item.name, width, height,
                        pixels)  # fmt: skip
            raise TooLargeToDecode(
                f"too large to decode (over data.max_decode_pixels = {max_decode_pixels:,})"
            )
        for n, (key, group) in enumerate(sorted(by_key.items())):
            if n and not isinstance(image, LevelledImage):
                image.close()  # a JPEG can be drafted only before its first decode: reopen it
                image = source.open(item)
            decoded = _decoded(image, key, channels)
            for r in group:
                out[r] = _resize(decoded, r, crop, _RESAMPLE[filter])
            del decoded  # a single full-resolution image alive at a time
        reduction = _reduction(image, largest)
    finally:
        image.close()
    return out, reduction


def downsample(
    image: Image.Image | LevelledImage, resolution: int, filter: str, crop: str, channels: int = 3
) -> np.ndarray:
    """One image at one resolution exactly as :func:`process_image` puts it in a cache:
    uint8 (``channels``, r, r), a JPEG decoded at the same draft scale and a pyramid at the
    same level (``image`` freshly opened; an image already loaded cannot be drafted and must
    come decoded the same way)."""
    (key,) = _plan(image, display_size(image), [resolution], filter, crop)
    return _resize(_decoded(image, key, channels), resolution, crop, _RESAMPLE[filter])
