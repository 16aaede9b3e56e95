"""The embedded generator: deterministic, balanced, and its cues vanish where they should."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evores.data import synthetic


def _bytes(n_per_class: int, seed: int) -> list[bytes]:
    return [image.tobytes() for _, image in synthetic.generate(n_per_class, seed)]


def test_same_seed_gives_identical_bytes():
    assert _bytes(3, seed=7) == _bytes(3, seed=7)


def test_other_seed_gives_other_images():
    assert _bytes(2, seed=1) != _bytes(2, seed=2)


def test_generate_is_balanced_rgb_and_native_size():
    pairs = list(synthetic.generate(4, 0))
    labels = [label for label, _ in pairs]
    assert len(synthetic.CLASS_NAMES) == 8
    assert np.bincount(labels).tolist() == [4] * 8
    assert all(im.mode == "RGB" and im.size == (64, 64) for _, im in pairs)


def test_render_is_random_access_and_size_is_a_parameter():
    listed = list(synthetic.generate(3, seed=5, size=48))
    assert listed[7][1].tobytes() == synthetic.render(2, 1, seed=5, size=48).tobytes()
    assert listed[0][1].size == (48, 48)


def test_class_cues_cover_every_combination():
    cues = {synthetic.class_cues(label) for label in range(8)}
    assert len(cues) == 8


@pytest.mark.parametrize("period, factor", [(2, 2), (4, 4), (2, 4)])
@pytest.mark.parametrize("orientation", ["v", "h"])
def test_box_filter_flattens_the_fine_gratings_exactly(period, factor, orientation):
    # Why 16 px cannot see the background cue and 32 px cannot see the fill cue.
    for phase in (0.0, 0.7, np.pi):
        wave = synthetic._grating(64, period, orientation, phase)
        image = Image.fromarray(np.uint8(np.rint(127 + 100 * wave)))
        small = np.asarray(image.resize((64 // factor,) * 2, Image.Resampling.BOX), np.int16)
        assert small.max() - small.min() <= 1


def test_period_four_grating_survives_a_factor_two_box():
    wave = synthetic._grating(64, 4, "v", 0.3)
    image = Image.fromarray(np.uint8(np.rint(127 + 100 * wave)))
    small = np.asarray(image.resize((32, 32), Image.Resampling.BOX), np.int16)
    assert small.max() - small.min() > 50


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        synthetic.render(8, 0)
    with pytest.raises(ValueError):
        next(synthetic.generate(0))
