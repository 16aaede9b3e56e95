"""Pyramidal TIFF (BigTIFF included): whole-slide and satellite images read level by level.

A TIFF (or BigTIFF) whose first series stores reduced-resolution levels (SubIFDs or reduced
pages: the pyramids of whole-slide scanners, GDAL overviews, ``tifffile``'s own) becomes a
:class:`~evores.data.levels.LevelledImage`: downsampling decodes only the level it needs, so a
40,000 px slide is read at its small level. Every other TIFF, a single-level BigTIFF included,
stays with Pillow, which reads every photometric interpretation the format allows.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from evores.core.errors import DataError
from evores.data.images import UnsupportedImage, open_image, to_8bit
from evores.data.levels import LevelledImage

_GRAY = ("MINISBLACK", "MINISWHITE")
_COLOUR = ("RGB", "YCBCR")  # tifffile returns the RGB of a JPEG-compressed YCbCr tile


class TiffLevels(LevelledImage):
    """The levels of one TIFF's first series; the file stays open until :meth:`close`."""

    format = "TIFF"

    def __init__(self, tiff) -> None:
        self._tiff = tiff
        series = tiff.series[0]
        self._levels = list(series.levels)
        self._axes = series.axes
        if self._axes not in ("YX", "YXS", "SYX"):
            raise UnsupportedImage(
                f"a TIFF series with axes {self._axes} is not one 2-D picture; save one image "
                "per file"
            )
        page = series.keyframe
        _check_codec(page.compression)
        self._photometric = page.photometric.name
        if self._photometric not in _GRAY + _COLOUR:
            raise UnsupportedImage(
                f"TIFF photometric {self._photometric} is not supported; save it as RGB or gray"
            )
        self.gray = self._photometric in _GRAY
        rows = self._axes.index("Y")
        self.levels = [(level.shape[rows + 1], level.shape[rows]) for level in self._levels]

    def read(self, level: int) -> Image.Image:
        pixels = self._levels[level].asarray()
        if self._axes == "SYX":  # planar samples: one plane per colour
            pixels = np.moveaxis(pixels, 0, -1)
        if self._photometric == "MINISWHITE":
            top = np.iinfo(pixels.dtype).max if pixels.dtype.kind in "ui" else pixels.max()
            pixels = top - pixels
        pixels = to_8bit(pixels)
        if pixels.ndim == 3:  # samples: colour (or gray) and perhaps alpha, then extra ones
            colour = 1 if self.gray else 3
            keep = colour + (pixels.shape[2] > colour)  # Pillow composites alpha over black
            pixels = np.ascontiguousarray(pixels[..., :keep])
            if keep == 1:
                pixels = pixels[..., 0]
        return Image.fromarray(pixels)

    def close(self) -> None:
        self._tiff.close()


def _check_codec(compression) -> None:
    """DataError in one line when tifffile lacks the codec of a pyramid's tiles (JPEG, JPEG
    2000 ... need imagecodecs): a fault of the installation, not of the file."""
    from tifffile import TIFF

    if compression not in TIFF.DECOMPRESSORS:
        raise DataError(
            f"the dataset holds pyramidal TIFFs whose tiles are {compression.name}-compressed, "
            "and reading them needs the imagecodecs package: pip install imagecodecs"
        )


def open_tiff(file) -> Image.Image | TiffLevels:
    """A pyramidal TIFF as :class:`TiffLevels` (header read only); any other TIFF opened by
    Pillow, as is a file tifffile cannot parse. ``file``: a path or a seekable binary file."""
    import tifffile

    try:
        tiff = tifffile.TiffFile(file)
    except tifffile.TiffFileError:
        tiff = None
    if tiff is not None:
        try:
            if tiff.series and len(tiff.series[0].levels) > 1:
                return TiffLevels(tiff)
        except BaseException:
            tiff.close()
            raise
        tiff.close()
    if hasattr(file, "seek"):
        file.seek(0)
    return open_image(file)
