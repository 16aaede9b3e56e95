"""DICOM (``.dcm``) files through ``pydicom``, the optional extra ``evores[dicom]``.

A single-frame image becomes 8-bit the way a viewer shows it: the stored values through the
rescale slope and intercept (the modality's units, e.g. Hounsfield), then the file's first
window (centre and width, the DICOM linear function) where it has one, else the image's own
range, onto 0..255; MONOCHROME1 (where a high value is dark) is inverted. Colour files (RGB,
or YBR, which pydicom converts) are read as RGB. A multi-frame file (a tomosynthesis stack, a
cine loop) is skipped and counted, since which frame is the image is not evores's to choose.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from evores.core.errors import DataError
from evores.data.images import UnsupportedImage, to_8bit
from evores.data.levels import LevelledImage

_GRAY = ("MONOCHROME1", "MONOCHROME2")
# What decoding pixel data raises when pydicom lacks a handler for its compression, or the file
# lacks a tag the pixels need.
_PIXEL_ERRORS = (NotImplementedError, AttributeError, KeyError, RuntimeError, TypeError)


def require_pydicom():
    """The pydicom module; DataError in one line saying how to install it when it is absent."""
    try:
        import pydicom
    except ImportError:
        raise DataError(
            "the dataset holds DICOM (.dcm) files, and reading them needs pydicom: "
            "pip install 'evores[dicom]'"
        ) from None
    return pydicom


class DicomImage(LevelledImage):
    """One single-frame DICOM image (one level: the file stores no smaller copy)."""

    format = "DICOM"

    def __init__(self, dataset) -> None:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise UnsupportedImage(f"multi-frame DICOM ({frames} frames): save one frame per file")
        if "PixelData" not in dataset:
            raise UnsupportedImage("DICOM file without pixel data")
        self._dataset = dataset
        self._photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
        samples = int(dataset.get("SamplesPerPixel", 1))
        if self._photometric not in _GRAY and samples != 3:
            raise UnsupportedImage(f"DICOM photometric {self._photometric} is not supported")
        self.gray = self._photometric in _GRAY
        self.levels = [(int(dataset.Columns), int(dataset.Rows))]

    def read(self, level: int) -> Image.Image:
        try:
            pixels = self._dataset.pixel_array
        except _PIXEL_ERRORS as error:
            raise UnsupportedImage(
                f"DICOM pixel data not decodable ({type(error).__name__}: {error})"[:200]
            ) from None
        if not self.gray:
            return Image.fromarray(to_8bit(pixels))
        shown = displayed(pixels, self._dataset)
        if self._photometric == "MONOCHROME1":
            shown = 255 - shown
        return Image.fromarray(shown)


def displayed(pixels: np.ndarray, dataset) -> np.ndarray:
    """Gray stored values as uint8: rescaled, then windowed (or their own range) onto 0..255."""
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    values = pixels.astype(np.float64) * slope + intercept
    window = _window(dataset)
    if window is not None:
        centre, width = window
        scaled = (values - (centre - 0.5)) / max(width - 1, 1e-9) + 0.5
    else:
        low, high = float(values.min(initial=0)), float(values.max(initial=0))
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.rint(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _window(dataset) -> tuple[float, float] | None:
    """The file's first (centre, width) window, or None where it has none usable."""
    centre, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if centre is None or width is None:
        return None
    try:
        centre, width = float(_first(centre)), float(_first(width))
    except (TypeError, ValueError):
        return None
    return (centre, width) if width >= 1 else None


def _first(value):
    """The first of a multi-valued DICOM element (a file may hold several windows)."""
    return value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value


def open_dicom(file) -> DicomImage:
    """The DICOM image in ``file`` (a path or a binary file)."""
    pydicom = require_pydicom()
    try:
        dataset = pydicom.dcmread(file)
    except pydicom.errors.InvalidDicomError as error:
        raise UnsupportedImage(f"not a DICOM file ({error})"[:200]) from None
    return DicomImage(dataset)
