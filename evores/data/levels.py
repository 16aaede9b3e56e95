"""Images that evores decodes itself rather than through Pillow: a pyramidal TIFF's stored levels
or a DICOM file's pixels, each read whole only when asked for, as 8-bit gray or RGB.

Downsampling (:mod:`evores.data.resample`) picks the level to decode from ``levels`` (the sizes,
level 0 the full image) exactly as it picks a JPEG's DCT scale: the smallest one that still
keeps twice the resolution wanted, so a 40,000 px pyramid never decodes whole.
"""

from __future__ import annotations

from PIL import Image


class LevelledImage:
    """One image stored at one or more sizes (level 0 the full one, then smaller ones)."""

    format: str = ""
    #: (width, height) of each stored level, level 0 first, each smaller than the one before.
    levels: list[tuple[int, int]]
    #: Whether the pixels have no colour (one sample per pixel).
    gray: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.levels[0]

    def read(self, level: int) -> Image.Image:
        """The pixels of ``level`` decoded, as an 8-bit Pillow image ("L" or "RGB")."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the open file; the image cannot be read afterwards."""

    def __enter__(self) -> LevelledImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
