"""Image formats beyond Pillow's: pyramidal TIFF and BigTIFF, DICOM, 16-bit and gray images kept
in one channel."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from evores.config import load
from evores.core.errors import ConfigError, DataError
from evores.data.cache import open_cache
from evores.data.dicom import displayed
from evores.data.images import to_8bit
from evores.data.readers import open_file
from evores.data.resample import downsample
from evores.data.sources import ScanReport, open_source
from evores.data.tiff import TiffLevels
from evores.training.model import build_cnn
from evores.training.prepared import PreparedData

pydicom = pytest.importorskip("pydicom")

TILE = 256


def write_pyramid(path: Path, side: int, small: list[int], value: int, bigtiff=False) -> Path:
    """A gray tiled TIFF, ``side`` px of zeros at level 0 (written tile by tile, compressed, so
    it costs almost nothing), and smaller levels ``small`` filled with ``value``."""
    zeros = np.zeros((TILE, TILE), np.uint8)
    n_tiles = (-(-side // TILE)) ** 2
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tiff:
        tiff.write(
            (zeros for _ in range(n_tiles)), shape=(side, side), dtype=np.uint8,
            tile=(TILE, TILE), compression="zlib", subifds=len(small),
        )  # fmt: skip
        for s in small:
            tiff.write(np.full((s, s), value, np.uint8), compression="zlib", subfiletype=1)
    return path


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory) -> Path:
    """Two classes of 1,024 px pyramids (levels 256 and 64 px), half of them BigTIFF; the
    level-2 value tells which class (and which image) it is. Shared: tests only read it."""
    root = tmp_path_factory.mktemp("pyramids") / "slides"
    for c, cls in enumerate(("dark", "light")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            value = 40 + 150 * c + i
            write_pyramid(root / cls / f"{i}.tif", 1024, [256, 64], value, bigtiff=i % 2 == 1)
    return root


def test_pyramid_is_read_at_its_smallest_sufficient_level(pyramids, tmp_path, monkeypatch):
    read = []
    original = TiffLevels.read
    monkeypatch.setattr(TiffLevels, "read", lambda self, level: read.append(level) or
                        original(self, level))  # fmt: skip
    # Level 0 (1,024^2 = 1.05 MP) is over the limit; level 2 (64 px) is >= 2 x 32 px.
    cache = open_cache(pyramids, [16, 32], cache_dir=tmp_path / "cache", max_decode_pixels=500_000)
    assert cache.report["n_images"] == 8 and cache.report["n_skipped"] == 0
    assert cache.report["n_decoded_reduced"] == 8
    assert read == [2] * 8  # one decode per image, of the 64 px level only
    x, y = cache.arrays(16, "train+val")
    assert cache.channels == 1 and x.shape[1:] == (1, 16, 16)
    means = x.reshape(len(x), -1).mean(axis=1)
    assert np.all(np.where(y == 0, means < 50, means > 180))  # the level's pixels, not zeros


def test_a_resolution_that_needs_level_zero_is_refused_by_the_limit(pyramids, tmp_path):
    source = open_source(pyramids)
    items = source.scan(ScanReport())
    assert items[0].size == (1024, 1024) and items[0].smallest == (64, 64) and items[0].gray
    with pytest.raises(DataError, match=r"every image .* data.max_decode_pixels = 500,000 pixels"):
        open_cache(pyramids, [512], cache_dir=tmp_path / "cache", max_decode_pixels=500_000)


def test_downsample_of_a_pyramid_matches_the_cache(pyramids, tmp_path):
    cache = open_cache(pyramids, [16], cache_dir=tmp_path / "cache")
    x, _ = cache.arrays(16, "train+val")
    source = open_source(pyramids)
    with source.open(source.scan(ScanReport())[0]) as image:
        assert isinstance(image, TiffLevels)
        one = downsample(image, 16, "box", "centre", channels=1)
    assert one.shape == (1, 16, 16) and any(np.array_equal(one, row) for row in x)


def test_plain_sixteen_bit_tiff_and_png_keep_their_contrast(tmp_path):
    twelve_bit = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(twelve_bit).save(tmp_path / "scan.tif")
    Image.fromarray(twelve_bit).save(tmp_path / "scan.png")
    tifffile.imwrite(tmp_path / "big.tif", twelve_bit, bigtiff=True, tile=(32, 32))
    for name in ("scan.tif", "scan.png", "big.tif"):  # a single-level BigTIFF: Pillow reads it
        with Image.open(tmp_path / name) as image:
            gray = downsample(image, 8, "box", "squash", channels=1)
        assert gray.shape == (1, 8, 8) and gray.max() > 230 and gray.min() < 25, name
    assert to_8bit(np.array([0, 255], np.uint16)).tolist() == [0, 255]  # 8-bit values kept
    assert to_8bit(np.array([0, 1023], np.uint16)).tolist() == [0, 255]  # 10 bits


# --- DICOM -----------------------------------------------------------------------------------


def write_dicom(path: Path, pixels: np.ndarray, frames: int = 1, **tags) -> Path:
    """An uncompressed 16-bit DICOM file of ``pixels`` (rows, columns) with ``tags``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.PixelData = np.ascontiguousarray(np.tile(pixels, (frames, 1)), "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _read(path: Path) -> np.ndarray:
    with open_file(path, ".dcm") as image:
        return np.asarray(image.read(0))


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    stored = np.array([[0, 1064], [1264, 4095]], np.uint16)  # HU -1024, 40, 240, 3071
    tags = dict(RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    windowed = _read(write_dicom(tmp_path / "w.dcm", stored, **tags))
    assert windowed.tolist() == [[0, 128], [255, 255]]  # centre 40 HU mid-gray, above: white
    inverted = _read(write_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation=
                                 "MONOCHROME1", **tags))  # fmt: skip
    assert inverted.tolist() == [[255, 127], [0, 0]]
    full = _read(write_dicom(tmp_path / "f.dcm", stored, RescaleSlope=2, RescaleIntercept=5))
    assert full.tolist() == [[0, 66], [79, 255]]  # no window: the image's own range


def test_dicom_window_as_several_values_and_a_bad_width():
    class Tags(dict):
        get = dict.get

    pixels = np.array([[0, 100]], np.uint16)
    several = Tags(WindowCenter=[50, 500], WindowWidth=[99, 1000])
    assert displayed(pixels, several).tolist() == [[0, 255]]
    unusable = Tags(WindowCenter=50, WindowWidth=0)  # width < 1: the image's own range
    assert displayed(pixels, unusable).tolist() == [[0, 255]]


def _dicom_folder(root: Path, multi_frame: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("benign", "malignant")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 1000 + 3000 * c, (24, 20), dtype=np.uint16)
            write_dicom(root / cls / f"{i}.dcm", pixels)
    if multi_frame:
        write_dicom(root / "benign" / "stack.dcm", np.ones((24, 20), np.uint16), frames=3)
        (root / "benign" / "junk.dcm").write_bytes(b"not a DICOM file at all")
    return root


def test_dicom_folder_builds_a_one_channel_cache(tmp_path):
    root = _dicom_folder(tmp_path / "scans", multi_frame=True)
    cache = open_cache(root, [8], cache_dir=tmp_path / "cache")
    assert cache.report["n_images"] == 8 and cache.channels == 1
    skipped = cache.report["skipped"]
    assert skipped.pop("multi-frame DICOM (3 frames): save one frame per file") == 1
    assert [reason.startswith("not a DICOM file") for reason in skipped] == [True]
    x, _ = cache.arrays(8, "train")
    assert x.shape[1] == 1 and x.max() > 200


def test_dicom_without_pydicom_says_what_to_install(tmp_path, monkeypatch):
    root = _dicom_folder(tmp_path / "scans")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom raises ImportError
    with pytest.raises(DataError, match=r"pip install 'evores\[dicom\]'"):
        open_cache(root, [8], cache_dir=tmp_path / "cache")


# --- one channel -----------------------------------------------------------------------------


def _gray_folder(root: Path, colour_one: bool = False) -> Path:
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    if colour_one:
        Image.new("RGB", (24, 20), (200, 10, 10)).save(root / "a" / "red.png")
    return root


def test_gray_images_cache_one_channel_and_train_a_one_channel_network(tmp_path):
    root = _gray_folder(tmp_path / "gray")
    cache = open_cache(root, [8], cache_dir=tmp_path / "cache")
    assert cache.channels == cache.report["channels"] == 1
    data = PreparedData.from_cache(cache, 8)
    assert data.in_channels == 1 and data.mean.shape == (1, 1, 1, 1)
    hparams = {"conv_filters": [4], "conv_kernels": [3], "fc_units": [8]}
    model = build_cnn(hparams, 8, data.n_classes, data.in_channels)
    batch, _ = data.train_batch(np.arange(2))
    assert model(batch).shape == (2, 2)
    # Asking for RGB builds another cache; the gray one is not reused for it.
    rgb = open_cache(root, [8], cache_dir=tmp_path / "cache", channels=3)
    assert rgb.channels == 3 and rgb.path != cache.path
    assert rgb.arrays(8, "train")[0].shape[1] == 3


def test_one_colour_image_keeps_three_channels_unless_asked(tmp_path):
    root = _gray_folder(tmp_path / "mixed", colour_one=True)
    assert open_cache(root, [8], cache_dir=tmp_path / "cache").channels == 3
    gray = open_cache(root, [8], cache_dir=tmp_path / "cache", channels=1)
    assert gray.arrays(8, "train")[0].shape[1] == 1


def test_channels_key_is_checked(tmp_path):
    assert load(values={"data": {"channels": 1}})["data"]["channels"] == 1
    for bad in (2, "gray", True):
        with pytest.raises(ConfigError, match="data.channels must be"):
            load(values={"data": {"channels": bad}})
    for bad in (2, True, 1.0):
        with pytest.raises(ConfigError, match="channels"):
            open_cache("embedded", [8], cache_dir=tmp_path, channels=bad)


@pytest.mark.parametrize("planar", [False, True])
def test_colour_pyramids_chunky_or_planar_read_as_rgb(tmp_path, planar):
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 200
    path = tmp_path / "red.tif"
    with tifffile.TiffWriter(path) as tiff:
        for k, side in enumerate((256, 64)):
            level = np.zeros((side, side, 3), np.uint8) if k == 0 else red
            data = np.moveaxis(level, -1, 0) if planar else level
            tiff.write(
                data, photometric="rgb", planarconfig="separate" if planar else "contig",
                tile=(32, 32), subifds=1 if k == 0 else None, subfiletype=k,
            )  # fmt: skip
    with open_file(path, ".tif") as image:
        assert isinstance(image, TiffLevels) and not image.gray
        assert image.levels == [(256, 256), (64, 64)]
        rgb = downsample(image, 8, "box", "centre")
    assert rgb.shape == (3, 8, 8) and rgb[0].min() == 200 and rgb[1:].max() == 0


def test_a_pyramid_codec_tifffile_lacks_says_what_to_install(pyramids, monkeypatch):
    from tifffile import TIFF

    monkeypatch.setattr(TIFF, "DECOMPRESSORS", {}, raising=False)  # as without imagecodecs
    with pytest.raises(DataError, match="ADOBE_DEFLATE-compressed.*pip install imagecodecs"):
        open_source(pyramids).scan(ScanReport())
