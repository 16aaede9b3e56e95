"""The HDF5 resolution cache: building, reuse, rebuild, splits, filters, crops, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from evores.core.errors import ConfigError, DataError
from evores.data import build as build_mod
from evores.data import cache as cache_mod
from evores.data.cache import open_cache, read_cache
from evores.data.resample import CROPS, FILTERS
from evores.data.sources import Item
from evores.data.splits import assign_splits

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def _noise(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def make_folder(root: Path, per_class: int = 6, classes=("a", "b", "c"), seed: int = 0) -> Path:
    """Class folders of JPEG/PNG noise, including grayscale, CMYK, RGBA and a corrupt file."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            image = _noise(seed + 100 * c + i, size=(48 + 8 * (i % 3), 40))
            image.save(root / cls / f"{i}.{'jpg' if i % 2 else 'png'}")
    _noise(seed + 900).convert("L").save(root / "a" / "gray.png")
    _noise(seed + 901).convert("CMYK").save(root / "b" / "cmyk.jpg")
    _noise(seed + 902).convert("RGBA").save(root / "c" / "alpha.png")
    (root / "c" / "corrupt.jpg").write_bytes(b"\xff\xd8\xffnot really")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


def _open(source, tmp_path, resolutions=(8, 16), **kwargs):
    return open_cache(source, resolutions, cache_dir=tmp_path / "cache", **kwargs)


def test_build_shapes_dtypes_and_report(folder, tmp_path):
    cache = _open(folder, tmp_path)
    assert cache.class_names == ["a", "b", "c"] and cache.n_classes == 3
    assert cache.resolutions == (8, 16) and cache.filter == "box" and cache.crop == "centre"
    assert cache.report["n_images"] == 21 and cache.report["n_skipped"] == 1
    total = 0
    for split in ("train", "val", "test"):
        x, y = cache.arrays(16, split)
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 16, 16) and x.flags.c_contiguous
        assert y.dtype == np.int64 and set(y.tolist()) == {0, 1, 2}
        total += len(y)
    assert total == 21
    x, y = cache.arrays(8, "train+val")
    assert len(y) == cache.split_sizes["train"] + cache.split_sizes["val"]
    assert cache.path.name.startswith("data-box-centre-") and cache.path.suffix == ".h5"


def test_provenance_attributes(folder, tmp_path):
    cache = _open(folder, tmp_path, seed=3)
    with h5py.File(cache.path, "r") as f:
        for name in ("fingerprint", "filter", "crop", "evores_version", "split_seed", "report"):
            assert name in f.attrs
        assert f.attrs["split_seed"] == 3 and f["keys"].shape == (21,)
    assert read_cache(cache.path) == cache


def test_second_open_reuses_the_file(folder, tmp_path, monkeypatch):
    first = _open(folder, tmp_path)
    mtime = first.path.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(cache_mod, "build_cache", lambda *a, **k: calls.append(a))
    second = _open(folder, tmp_path, resolutions=(16,))
    assert calls == [] and second.path.stat().st_mtime_ns == mtime and second == first


def test_rebuild_after_source_change(folder, tmp_path):
    first = _open(folder, tmp_path)
    _noise(77).save(folder / "a" / "extra.png")
    second = _open(folder, tmp_path)
    assert second.path == first.path and second.report["n_images"] == 22


def test_missing_resolution_rebuilds_with_the_union(folder, tmp_path):
    _open(folder, tmp_path, resolutions=(8,))
    cache = _open(folder, tmp_path, resolutions=(16,))
    assert cache.resolutions == (8, 16)


def test_resolution_pixels_do_not_depend_on_the_other_resolutions(folder, tmp_path):
    alone = open_cache(folder, [16], cache_dir=tmp_path / "one")
    together = open_cache(folder, [16, 40], cache_dir=tmp_path / "two")
    assert np.array_equal(alone.arrays(16, "train")[0], together.arrays(16, "train")[0])


def test_failed_build_leaves_no_partial_file(folder, tmp_path, monkeypatch):
    good = _open(folder, tmp_path)
    before = good.path.read_bytes()
    _noise(5).save(folder / "b" / "changed.png")  # forces a rebuild
    calls = []

    def explode(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    real = build_mod.process_image
    monkeypatch.setattr(build_mod, "process_image", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _open(folder, tmp_path)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [good.path.name]
    assert good.path.read_bytes() == before


@pytest.mark.parametrize("filter", FILTERS)
def test_every_filter_builds(folder, tmp_path, filter):
    cache = _open(folder, tmp_path, resolutions=(8,), filter=filter)
    assert cache.filter == filter and cache.arrays(8, "test")[0].shape[1:] == (3, 8, 8)


def test_filters_give_different_pixels(folder, tmp_path):
    nearest = _open(folder, tmp_path, resolutions=(8,), filter="nearest").arrays(8, "train")[0]
    box = _open(folder, tmp_path, resolutions=(8,), filter="box").arrays(8, "train")[0]
    assert nearest.std() > box.std()  # box averages the noise away, nearest keeps it


def test_unknown_filter_lists_the_valid_ones(folder, tmp_path):
    with pytest.raises(ConfigError, match="nearest, box, bilinear, hamming, bicubic, lanczos"):
        _open(folder, tmp_path, filter="gaussian")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"crop": "zoom"}, "centre, squash, pad"),
        ({"resolutions": ()}, "positive integers"),
        ({"resolutions": (16.0,)}, "positive integers"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum to less than 1"),
    ],
)
def test_bad_options(folder, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        open_cache(folder, **{"resolutions": (8,), "cache_dir": tmp_path, **kwargs})


def test_unknown_resolution_or_split(folder, tmp_path):
    cache = _open(folder, tmp_path)
    with pytest.raises(ConfigError, match="resolution 32 is not in cache"):
        cache.arrays(32, "train")
    with pytest.raises(ConfigError, match="split 'training'"):
        cache.arrays(8, "training")


def _wide_folder(root: Path) -> Path:
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            image = Image.new("RGB", (60, 20), colour)
            image.paste((0, 255, 0), (0, 0, 15 + i, 20))  # green left edge
            image.save(root / cls / f"{i}.png")
    return root


def test_crop_modes_on_non_square_images(tmp_path):
    root = _wide_folder(tmp_path / "wide")
    results = {}
    for crop in CROPS:
        x, _ = open_cache(root, [10], crop=crop, cache_dir=tmp_path / "c").arrays(10, "train")
        results[crop] = x[0]
    centre, squash, pad = results["centre"], results["squash"], results["pad"]
    assert centre[1].max() == 0  # the green edge lies outside the central square
    assert squash[1, :, 0].min() == 255  # squashed: the edge is kept, the image fills the square
    assert pad[:, 0].max() == 0 and pad[:, -1].max() == 0  # black bars above and below
    assert pad[1, 5, 0] == 255


def test_resolution_larger_than_every_image_is_refused(tmp_path):
    root = _wide_folder(tmp_path / "wide")
    with pytest.raises(
        DataError, match="largest image short side is 20 px; choose resolutions <= 20"
    ):
        open_cache(root, [8, 32], cache_dir=tmp_path)
    cache = open_cache(root, [32], crop="pad", cache_dir=tmp_path)  # long side 60 is enough
    assert cache.report["n_upscaled"] == 0


def test_some_upscaled_images_are_counted_and_logged(folder, tmp_path, caplog):
    _noise(3, size=(12, 12)).save(folder / "a" / "tiny.png")
    with caplog.at_level(logging.WARNING, logger="evores.data.cache"):
        cache = _open(folder, tmp_path, resolutions=(16,))
    assert cache.report["n_upscaled"] == 1
    assert "upscaled" in caplog.text


def test_duplicates_never_straddle_a_generated_split(folder, tmp_path):
    dup = (folder / "a" / "0.png").read_bytes()
    for k in range(4):
        (folder / "b" / f"dup{k}.png").write_bytes(dup)
    cache = _open(folder, tmp_path)
    with h5py.File(cache.path, "r") as f:
        keys = f["keys"][...]
        split_of = {}
        for split in ("train", "val", "test"):
            for row in f[f"splits/{split}"][...]:
                assert split_of.setdefault(keys[row], split) == split
    assert cache.report["n_duplicates_kept"] == 4


def test_given_test_images_identical_to_training_ones_are_dropped(tmp_path):
    root = tmp_path / "given"
    make_folder(root / "train")
    make_folder(root / "val", per_class=3, seed=5000)
    (root / "val" / "b" / "leak.png").write_bytes((root / "train" / "a" / "0.png").read_bytes())
    cache = _open(root, tmp_path)
    assert cache.report["n_duplicates_dropped"] == 1
    # every readable val/ image except the leak is the test split
    assert cache.split_sizes["test"] == 3 * 3 + 3
    assert cache.report["layout"].startswith("given train/ and val/")


def test_too_few_images_for_the_split(tmp_path):
    root = tmp_path / "few"
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(2 if cls == "a" else 5):
            _noise(10 * c + i).save(root / cls / f"{i}.png")
    with pytest.raises(DataError, match="class 'a' .* no image in the"):
        _open(root, tmp_path)


def test_split_is_deterministic_stratified_and_seeded():
    items = [Item(i, i % 3, f"k{i}", (10, 10), str(i)) for i in range(60)]
    a, _ = assign_splits(items, 0.2, 0.1, seed=1)
    assert a == assign_splits(items, 0.2, 0.1, seed=1)[0]
    assert a != assign_splits(items, 0.2, 0.1, seed=2)[0]
    for label in range(3):
        splits = [s for s, it in zip(a, items, strict=True) if it.label == label]
        assert splits.count("val") == 4 and splits.count("test") == 2


def test_hdf5_source_builds(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "set.h5"
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, (30, 20, 20, 3), dtype=np.uint8)
        f["labels"] = np.arange(30) % 2
    cache = _open(path, tmp_path, resolutions=(10, 20))
    x, _ = cache.arrays(20, "train+val")
    assert cache.report["n_images"] == 30 and x.shape[1:] == (3, 20, 20)
    with h5py.File(path, "r") as f:
        originals = {f["images"][i].tobytes() for i in range(30)}
    assert {img.transpose(1, 2, 0).tobytes() for img in x} <= originals


def test_embedded_builds_and_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EVORES_CACHE_DIR", str(tmp_path / "env"))
    cache = open_cache("embedded", [16])
    assert cache.path.parent == tmp_path / "env" and cache.n_classes == 8
    assert cache.report["n_images"] == 1200


def test_hymenoptera_at_32_px(tmp_path):
    root = DATASETS / "hymenoptera"
    if not root.is_dir():
        pytest.skip(f"shared dataset folder {root} is absent")
    messages = []
    cache = open_cache(root, [32], cache_dir=tmp_path, progress=lambda *done: messages.append(done))
    assert cache.class_names == ["ants", "bees"] and cache.split_sizes["test"] == 153
    assert cache.report["n_images"] == 397 and cache.arrays(32, "val")[0].shape[1:] == (3, 32, 32)
    assert messages == [(k, 397, "hymenoptera") for k in range(1, 398)]
