"""Downsampling one image to a square resolution, as the dataset cache and a trained winner do
it alike: crop mode, resampling filter, and JPEG draft decoding at a reduced DCT scale."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from evores.core.errors import DataError
from evores.data.images import display_size, to_rgb
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
    """(3, r, r) uint8 of an RGB image, cropped / squashed / padded to a square."""
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
        out = Image.new("RGB", (r, r))
        out.paste(image.resize((nw, nh), resample), ((r - nw) // 2, (r - nh) // 2))
    return np.asarray(out).transpose(2, 0, 1)


def _upright_rgb(image: Image.Image, scale: int) -> Image.Image:
    """Decode ``image`` (at 1/``scale`` for a JPEG), apply its EXIF orientation, make it RGB."""
    if scale > 1:
        w, h = image.size
        image.draft(image.mode, (max(1, w // scale), max(1, h // scale)))
    image.load()
    if image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def _scales(image, item: Item, resolutions, filter: str, crop: str) -> dict[int, list[int]]:
    """The resolutions grouped by the JPEG draft scale each is decoded at (1: whole)."""
    use_draft = image.format == "JPEG" and filter != "nearest"
    by_scale: dict[int, list[int]] = defaultdict(list)
    for r in resolutions:
        by_scale[_draft_scale(item.size, r, crop) if use_draft else 1].append(r)
    return by_scale


def _decoded_pixels(image, scale: int) -> int:
    width, height = image.size
    return -(-width // scale) * -(-height // scale)


def decodable(
    source: Source, item: Item, resolutions, filter: str, crop: str, max_decode_pixels: int
) -> bool:
    """Whether building ``item`` decodes at most ``max_decode_pixels``; its header is read
    only when its size alone cannot tell (no draft scale reduces more than 8 x 8)."""
    width, height = item.size
    if width * height <= max_decode_pixels:
        return True
    if -(-width // 8) * -(-height // 8) > max_decode_pixels:
        return False
    with source.open(item) as image:
        by_scale = _scales(image, item, resolutions, filter, crop)
        return _decoded_pixels(image, min(by_scale)) <= max_decode_pixels


class TooLargeToDecode(ValueError):
    """An image that would decode to more than ``max_decode_pixels``: skipped, undecoded."""


def process_image(
    source: Source,
    item: Item,
    resolutions: Sequence[int],
    filter: str,
    crop: str,
    max_decode_pixels: int = MAX_DECODE_PIXELS,
) -> tuple[dict[int, np.ndarray], int]:
    """Every resolution of one image, decoding it once per distinct JPEG draft scale, and the
    smallest scale it decoded at (1: whole). Raises :class:`TooLargeToDecode`, having decoded
    nothing, when a decode would exceed ``max_decode_pixels``."""
    out: dict[int, np.ndarray] = {}
    image = source.open(item)
    try:
        by_scale = _scales(image, item, resolutions, filter, crop)
        largest = _decoded_pixels(image, min(by_scale))
        if largest > max_decode_pixels:
            width, height = image.size
            logger.info("%s: %d x %d px would decode to %d pixels", item.name, width, height,
                        largest)  # fmt: skip
            raise TooLargeToDecode(
                f"too large to decode (over data.max_decode_pixels = {max_decode_pixels:,})"
            )
        for n, (scale, group) in enumerate(sorted(by_scale.items())):
            if n:  # a JPEG can be drafted only before its first decode: open it again
                image.close()
                image = source.open(item)
            rgb = _upright_rgb(image, scale)
            for r in group:
                out[r] = _resize(rgb, r, crop, _RESAMPLE[filter])
            del rgb  # a single full-resolution image alive at a time
    finally:
        image.close()
    return out, min(by_scale)


def downsample(image: Image.Image, resolution: int, filter: str, crop: str) -> np.ndarray:
    """One image at one resolution exactly as :func:`process_image` puts it in a cache:
    uint8 (3, r, r), a JPEG decoded at the same draft scale (``image`` freshly opened; an
    image already loaded cannot be drafted and must come decoded the same way)."""
    use_draft = image.format == "JPEG" and filter != "nearest"
    scale = _draft_scale(display_size(image), resolution, crop) if use_draft else 1
    return _resize(_upright_rgb(image, scale), resolution, crop, _RESAMPLE[filter])
