"""Image sources: folders of every image mode, HDF5 files, torchvision sets, error messages."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from evores.core.errors import DataError
from evores.data import synthetic
from evores.data.images import to_rgb
from evores.data.sources import (
    EmbeddedSource,
    FolderSource,
    HDF5Source,
    ScanReport,
    open_source,
)


def _noise(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def make_mixed_folder(root: Path) -> Path:
    """Two classes holding every awkward kind of file an image folder tends to contain."""
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    _noise(1).save(root / "cats" / "rgb.jpg")
    _noise(2).convert("L").save(root / "cats" / "gray.png")
    _noise(3).convert("CMYK").save(root / "cats" / "cmyk.jpg")
    rgba = _noise(4).convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited over black
    rgba.save(root / "dogs" / "alpha.png")
    _noise(5).convert("P").save(root / "dogs" / "palette.gif")
    _noise(6, size=(80, 20)).save(root / "dogs" / "wide.png")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a jpeg")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "dogs" / ".DS_Store").write_bytes(b"hidden")
    return root


def test_folder_scan_converts_every_mode_and_skips_the_corrupt_file(tmp_path):
    source = open_source(make_mixed_folder(tmp_path / "pets"))
    assert isinstance(source, FolderSource)
    assert source.class_names == ["cats", "dogs"]
    report = ScanReport()
    items = source.scan(report)
    assert [it.name for it in items] == [
        "cats/cmyk.jpg",
        "cats/gray.png",
        "cats/rgb.jpg",
        "dogs/alpha.png",
        "dogs/palette.gif",
        "dogs/wide.png",
    ]
    assert sum(report.skipped.values()) == 1 and report.examples[0][0] == "dogs/broken.jpg"
    assert report.n_ignored == 1  # notes.txt; hidden files are not even counted
    assert items[-1].size == (80, 20)
    opened = {it.name: to_rgb(source.open(it)) for it in items}
    assert all(image.mode == "RGB" for image in opened.values())
    alpha = next(image for name, image in opened.items() if name.endswith("alpha.png"))
    assert np.asarray(alpha).max() == 0


def test_content_key_is_the_file_hash(tmp_path):
    root = make_mixed_folder(tmp_path / "pets")
    (root / "dogs" / "copy.jpg").write_bytes((root / "cats" / "rgb.jpg").read_bytes())
    items = {it.name: it for it in open_source(root).scan(ScanReport())}
    assert items["dogs/copy.jpg"].key == items["cats/rgb.jpg"].key
    assert items["cats/gray.png"].key != items["cats/rgb.jpg"].key


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    root = make_mixed_folder(tmp_path / "pets")
    before = FolderSource(root).fingerprint()
    assert FolderSource(root).fingerprint() == before
    _noise(9).save(root / "cats" / "new.png")
    assert FolderSource(root).fingerprint() != before


@pytest.mark.parametrize(
    "dirs, layout, test_folder",
    [
        (("train", "val"), "given train/ and val/", "val"),
        (("train", "test"), "given train/ and test/", "test"),
        (("train", "val", "test"), "given train/ val/ test/", "test"),
        (("train",), "generated", None),
    ],
)
def test_split_folders_are_recognised(tmp_path, dirs, layout, test_folder):
    for d in dirs:
        for cls in ("a", "b"):
            (tmp_path / d / cls).mkdir(parents=True)
            _noise(len(d) + ord(cls)).save(tmp_path / d / cls / "x.png")
    source = FolderSource(tmp_path)
    assert source.layout.startswith(layout)
    splits = {it.name.split("/")[0]: it.split for it in source.scan(ScanReport())}
    if test_folder is None:
        assert all(s is None for s in splits.values())
    else:
        assert splits[test_folder] == "test" and splits["train"] == "train"
    if dirs == ("train", "val", "test"):
        assert splits["val"] == "val"


def test_missing_folder_names_path_and_fix(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; set data.path"):
        open_source(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        open_source(tmp_path)


def test_single_class(tmp_path):
    (tmp_path / "only").mkdir()
    _noise(0).save(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="single class"):
        open_source(tmp_path)


def test_no_readable_images(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable images"):
        open_source(tmp_path).scan(ScanReport())


def test_empty_class_folder(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    _noise(0).save(tmp_path / "a" / "x.png")
    with pytest.raises(DataError, match="class folder 'b'"):
        open_source(tmp_path).scan(ScanReport())


def test_plain_file_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="not .h5/.hdf5"):
        open_source(path)


def _write_h5(path: Path, images: np.ndarray, labels, **attrs) -> Path:
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["labels"] = np.asarray(labels)
        f.attrs.update(attrs)
    return path


def test_hdf5_grayscale_with_renumbered_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 12, 10), dtype=np.uint8)
    path = _write_h5(tmp_path / "g.h5", images, [3, 7, 3, 7, 3, 7])
    source = open_source(path)
    assert isinstance(source, HDF5Source) and source.class_names == ["3", "7"]
    items = source.scan(ScanReport())
    assert [it.label for it in items] == [0, 1, 0, 1, 0, 1] and items[0].size == (10, 12)
    image = to_rgb(source.open(items[0]))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image)[..., 1], images[0])


def test_hdf5_rgb_with_class_names(tmp_path):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    path = _write_h5(tmp_path / "c.hdf5", images, [0, 1, 1, 0], class_names=["no", "yes"])
    assert open_source(path).class_names == ["no", "yes"]


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((4, 8, 8), np.float32), [0, 1, 0, 1], "float32"),
        (np.zeros((4, 8, 8), np.uint8), [0, 1, 0], "4 images and 3 labels"),
        (np.zeros((4, 8, 8), np.uint8), [0, 0, 0, 0], "single class"),
    ],
)
def test_hdf5_bad_layouts(tmp_path, images, labels, match):
    with pytest.raises(DataError, match=match):
        open_source(_write_h5(tmp_path / "bad.h5", images, labels))


def test_hdf5_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "none.h5")


@pytest.mark.parametrize("kind", ["cifar10", "stl10", "flowers102"])
def test_missing_torchvision_set_says_how_to_fix(tmp_path, kind):
    with pytest.raises(DataError, match=r"set data.download = true or point data.path"):
        open_source(f"{kind}:{tmp_path}")


def test_embedded_source_matches_the_generator():
    source = open_source("embedded")
    assert isinstance(source, EmbeddedSource) and len(source.class_names) == 8
    small = EmbeddedSource(n_per_class=2)
    items = small.scan(ScanReport())
    assert len(items) == 16
    fifth = list(synthetic.generate(2))[5][1]
    assert small.open(items[5]).tobytes() == fifth.tobytes()


def test_to_rgb_scales_sixteen_bit_images():
    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert np.asarray(to_rgb(deep)).min() == 255
    assert to_rgb(Image.new("1", (3, 3), 1)).mode == "RGB"
    la = Image.new("LA", (2, 2), (200, 0))
    assert np.asarray(to_rgb(la)).max() == 0
