"""The embedded dataset: small RGB images whose classes need fine detail to tell apart.

evores generates it itself (numpy + Pillow, no download) so that a search runs anywhere and
so that the effect the project studies - fitness changes with the image resolution - is
present by construction. Each image (native 64x64) shows an object (a disc or a bar, chosen
at random: not a class cue) on a textured background:

- coarse cue, visible at every resolution: the object is lighter or darker than the
  background (by 45-80 grey levels);
- medium cue: the orientation (vertical/horizontal) of a period-4 px sinusoidal grating on the
  background. A 4x4 box average of a period-4 grating on the pixel grid is exactly flat, so
  the cue is gone at 16 px (box filter) and present at 32 px;
- fine cue: the orientation of a period-2 px two-colour stripe pattern filling the object.
  A 2x2 box average makes it exactly flat, so it is only visible at 64 px.

Class = tone x medium orientation x fine orientation (8 classes). Position, size, shape,
colours, grating contrasts and phases are jittered; the background carries smooth
low-frequency clutter and every pixel a little noise, so 64 px is not trivially separable.
With the box filter a classifier can tell 2 groups of classes apart at 16 px (best possible
accuracy 0.25), 4 at 32 px (0.5) and all 8 at 64 px. Other filters remove the fine cues
less exactly (nearest aliases them). A disc-vs-square shape was tried first as the coarse
cue: a small CNN learnt it far more slowly than the textures, so tone replaced it.

Measured with v1 (150 images per class, seed 0, box filter; 105 train / 45 test images per
class; test accuracy, chance 0.125):

- tiny CNN (conv 16/32/64, 3x3, 2x2 max pooling, FC 128; Adam 1e-3, batch 32, 25 epochs,
  torch on 2 CPU threads), three training seeds:
  16 px 0.24 / 0.26 / 0.26 (mean 0.25); 32 px 0.48 / 0.48 / 0.48 (mean 0.48);
  64 px 0.88 / 0.63 / 0.96 (mean 0.82). Per cue at 64 px: tone 0.99, background >= 0.99,
  fill 0.64-0.96 - the fine cue is the one a short training sometimes misses.
- ridge classifier on raw pixels (best of lambda 1/10/100): 0.24 / 0.22 / 0.24. It sees the
  tone only: telling a random-phase grating's orientation needs a non-linearity, so a linear
  probe is no sanity check of the fine cues here.

Generating the 1,200 images takes about 1.2 s on one core (about 1 ms each).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from evores.core.seeding import derive_rng

#: Bumped whenever the images change; part of the cache fingerprint.
VERSION = "1"

TONES = ("light", "dark")
SHAPES = ("disc", "bar")
ORIENTATIONS = ("v", "h")

#: Class names in label order: shape, background (medium) and fill (fine) orientation.
CLASS_NAMES = tuple(
    f"{tone}-{bg}bg-{fine}fill" for tone in TONES for bg in ORIENTATIONS for fine in ORIENTATIONS
)

DEFAULT_N_PER_CLASS = 150
DEFAULT_SEED = 0
NATIVE_SIZE = 64


def class_cues(label: int) -> tuple[str, str, str]:
    """(object tone, background orientation, fill orientation) of a class label."""
    tone, rest = divmod(label, 4)
    bg, fine = divmod(rest, 2)
    return TONES[tone], ORIENTATIONS[bg], ORIENTATIONS[fine]


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency clutter (H, W, 3) in [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    big = Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 127.5 - 1.0


def _grating(size: int, period: int, orientation: str, phase: float) -> np.ndarray:
    """A sinusoid (H, W) with the given period in px along x ('v' stripes) or y ('h')."""
    coord = np.arange(size, dtype=np.float32)
    wave = np.cos(2 * np.pi * coord / period + phase)
    return np.broadcast_to(wave[None, :] if orientation == "v" else wave[:, None], (size, size))


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Boolean (H, W) mask of a disc or a bar (3:1, horizontal or vertical) of jittered size."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "disc":
        radius = rng.uniform(0.2, 0.3) * size
        cx, cy = rng.uniform(radius + 2, size - radius - 2, size=2)
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    half_long, half_short = rng.uniform(0.3, 0.42) * size, rng.uniform(0.1, 0.14) * size
    half_x, half_y = (half_long, half_short) if rng.integers(0, 2) else (half_short, half_long)
    cx = rng.uniform(half_x + 2, size - half_x - 2)
    cy = rng.uniform(half_y + 2, size - half_y - 2)
    return (np.abs(x - cx) <= half_x) & (np.abs(y - cy) <= half_y)


def _colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, size=3).astype(np.float32)


def render(
    label: int, index: int, seed: int = DEFAULT_SEED, size: int = NATIVE_SIZE
) -> Image.Image:
    """Image ``index`` of class ``label``: random access, the same pixels for the same arguments."""
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    rng = derive_rng(seed, "synthetic", VERSION, label, index)
    tone, bg_orient, fine_orient = class_cues(label)
    # Background: mean colour + medium grating (random contrast and phase) + smooth clutter.
    bg_grating = _grating(size, 4, bg_orient, rng.uniform(0, 2 * np.pi))
    bg_contrast = rng.uniform(8, 24)
    bg_mean = rng.uniform(95, 160) + _colour(rng, -20, 20)
    img = bg_mean + _smooth_field(rng, size, 4) * rng.uniform(10, 30)
    img = img + (bg_grating * bg_contrast)[..., None]
    # Shape: two colours alternating every pixel row or column (period 2, random phase).
    mask = _shape_mask(rng, SHAPES[rng.integers(0, 2)], size)
    fine = _grating(size, 2, fine_orient, np.pi * rng.integers(0, 2))
    # The object is clearly lighter or darker than the background: the coarse cue.
    step = rng.uniform(45, 80) * (1 if tone == "light" else -1)
    fill_mean = np.clip(bg_mean + step + _colour(rng, -20, 20), 20, 235)
    fill_delta = rng.normal(0, 1, size=3).astype(np.float32)
    fill_delta *= rng.uniform(10, 30) / max(float(np.linalg.norm(fill_delta)), 1e-6)
    fill = fill_mean[None, None] + fine[..., None] * fill_delta[None, None]
    img = np.where(mask[..., None], fill, img)
    img = img + rng.normal(0, 4, size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def generate(
    n_per_class: int = DEFAULT_N_PER_CLASS, seed: int = DEFAULT_SEED, size: int = NATIVE_SIZE
) -> Iterator[tuple[int, Image.Image]]:
    """Yield (label, RGB image), class by class; deterministic in (n_per_class, seed, size)."""
    if n_per_class < 1 or size < 8:
        raise ValueError(f"need n_per_class >= 1 and size >= 8, got {n_per_class}, {size}")
    for label in range(len(CLASS_NAMES)):
        for index in range(n_per_class):
            yield label, render(label, index, seed, size)
