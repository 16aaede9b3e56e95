"""Image sources: where the pictures come from, read one at a time.

A source is scanned once (cheap: file headers, sizes and a content hash per image) into a
list of :class:`Item` records, then each image is opened on demand with :meth:`Source.open`.
Nothing holds all full-resolution images in memory, which is what lets the cache
(:mod:`evores.data.cache`) build from folders far larger than RAM.

Sources: a folder with one subfolder per class (optionally split into ``train/`` plus
``val/`` and/or ``test/``), a CSV file of paths and labels (:mod:`evores.data.tables`), an HDF5
file (``images`` + ``labels``), the torchvision sets CIFAR10 / STL10 / Flowers102 from a root
directory, and the embedded synthetic set. Files are opened by their format
(:mod:`evores.data.readers`: Pillow, pyramidal TIFF, DICOM).

Images in any mode are converted to 8-bit RGB, or gray where every image of the source is, by
:func:`evores.data.images.to_channels` (alpha composited over black, the colour the cache pads
with). Unreadable files are skipped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from evores.core.errors import DataError
from evores.core.paths import usable_path
from evores.data import synthetic
from evores.data.images import IMAGE_EXTENSIONS, sha256_bytes
from evores.data.items import Item, ScanReport, Source, resolved
from evores.data.levels import LevelledImage
from evores.data.readers import open_file, scan_file
from evores.data.tables import CsvSource

__all__ = ["Item", "ScanReport", "Source", "open_source"]

SPLIT_DIRS = ("train", "val", "test")
TORCHVISION_SETS = ("cifar10", "stl10", "flowers102")


def _sorted_files(folder: Path) -> list[Path]:
    """All non-hidden files below ``folder``, recursively, in a deterministic order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return found


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class FolderSource(Source):
    """A folder with one subfolder per class, or train/ (+ val/ and/or test/) of those.

    With ``train/`` plus ``val/`` or ``test/``, the folders decide the splits: with both,
    ``val/`` is validation and ``test/`` is test; with only one of them, it is the test split
    and validation is drawn from ``train/``. A folder holding only ``train/`` is read as if
    pointed at ``train/``. Otherwise the cache draws a stratified split.
    """

    def __init__(self, root: str | Path):
        self.root = resolved(root)
        fix = "set data.path to a folder with one subfolder of images per class"
        if not self.root.is_dir():
            raise DataError(f"dataset folder {self.root} does not exist; {fix}")
        self.splits = self._split_dirs()
        self.name = self.root.name
        self.identity = f"folder:{self.root}"
        classes = sorted({c for d in self.splits.values() for c in _subdirs(d)})
        if not classes:
            raise DataError(f"dataset folder {self.root} has no class subfolders; {fix}")
        if len(classes) < 2:
            raise DataError(
                f"dataset folder {self.root} has a single class ({classes[0]!r}); "
                "classification needs at least 2 class subfolders"
            )
        self.class_names = classes

    def _split_dirs(self) -> dict[str | None, Path]:
        present = {s for s in SPLIT_DIRS if (self.root / s).is_dir()}
        if "train" in present and present & {"val", "test"}:
            if present >= {"val", "test"}:
                self.layout = "given train/ val/ test/ folders"
                return {s: self.root / s for s in SPLIT_DIRS}
            test_dir = "test" if "test" in present else "val"
            self.layout = f"given train/ and {test_dir}/ (test); validation drawn from train/"
            return {"train": self.root / "train", "test": self.root / test_dir}
        if present == {"train"} and len(_subdirs(self.root)) == 1:
            return {None: self.root / "train"}
        return {None: self.root}

    def _class_files(self) -> Iterator[tuple[str | None, int, Path]]:
        for split, folder in self.splits.items():
            for label, cls in enumerate(self.class_names):
                if (folder / cls).is_dir():
                    for path in _sorted_files(folder / cls):
                        yield split, label, path

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for _, _, path in self._class_files():
            try:
                st = path.stat()
                state = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError as error:  # the scan skips it; a repaired link changes the digest
                state = f"error {error.errno}"
            digest.update(f"{path.relative_to(self.root)}\0{state}\n".encode())
        return digest.hexdigest()

    def scan(self, report: ScanReport) -> list[Item]:
        items: list[Item] = []
        for split, label, path in self._class_files():
            name = str(path.relative_to(self.root))
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                report.n_ignored += 1
                continue
            item = scan_file(path, name, label, split, len(items), report)
            if item is not None:
                items.append(item)
        self._check_classes(items)
        return items

    def _check_classes(self, items: list[Item]) -> None:
        if not items:
            raise DataError(
                f"dataset folder {self.root} holds no readable images; put .jpg/.png files "
                "in one subfolder per class"
            )
        counts = Counter(item.label for item in items)
        empty = [c for label, c in enumerate(self.class_names) if counts[label] == 0]
        if empty:
            raise DataError(
                f"class folder {empty[0]!r} in {self.root} holds no readable images; "
                "add images or remove the folder"
            )

    def open(self, item: Item) -> Image.Image | LevelledImage:
        path = self.root / item.name
        return open_file(path, path.suffix)


class HDF5Source(Source):
    """An HDF5 file with ``images`` (N, H, W) or (N, H, W, C) uint8 and integer ``labels``.

    Class names come from a ``class_names`` attribute (of the file or of ``labels``) or a
    ``class_names`` dataset; without them, labels are renumbered 0..K-1 in sorted order and
    named by their value.
    """

    def __init__(self, path: str | Path):
        import h5py

        self.path = resolved(path)
        self.name = self.path.stem
        self.identity = f"hdf5:{self.path}"
        if self.path.exists() and not self.path.is_file():
            raise DataError(
                f"HDF5 dataset {self.path} is not a regular file (a folder, a FIFO or a device); "
                "set data.path to an HDF5 file"
            )
        if not self.path.is_file():
            raise DataError(f"HDF5 dataset {self.path} does not exist; set data.path to it")
        try:
            with h5py.File(self.path, "r") as f:
                self._check_layout(f)
                raw_labels = np.asarray(f["labels"][...]).reshape(-1)
                names = _hdf5_class_names(f)
        except OSError as exc:
            raise DataError(f"cannot read HDF5 dataset {self.path}: {exc}") from None
        self._labels, self.class_names = self._label_map(raw_labels, names)
        if len(self.class_names) < 2:
            raise DataError(f"HDF5 dataset {self.path} has a single class; need at least 2")

    def _check_layout(self, f) -> None:
        import h5py

        fix = "it needs datasets 'images' (N,H,W) or (N,H,W,C) uint8 and 'labels' (N,) int"
        if "format_version" in f.attrs and "params" in f.attrs and "fingerprint" in f.attrs:
            raise DataError(
                f"HDF5 dataset {self.path} is an evores cache file (of {f.attrs.get('source')}); "
                "set data.path to the dataset it was built from, not to its cache"
            )
        if "images" not in f or "labels" not in f:
            raise DataError(f"HDF5 dataset {self.path} lacks 'images' or 'labels'; {fix}")
        for name in ("images", "labels"):
            if not isinstance(f[name], h5py.Dataset):
                raise DataError(f"HDF5 dataset {self.path}: {name!r} is a group; {fix}")
        images, labels = f["images"], f["labels"]
        ok_shape = images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3, 4))
        if images.dtype != np.uint8 or not ok_shape:
            raise DataError(
                f"HDF5 dataset {self.path} has images {images.dtype} {images.shape}; {fix}"
            )
        if labels.ndim == 0 or labels.shape[0] != images.shape[0] or images.shape[0] == 0:
            raise DataError(
                f"HDF5 dataset {self.path} has {images.shape[0]} images and "
                f"{labels.shape[0] if labels.ndim else 'scalar'} labels; {fix} with the same "
                "non-zero N"
            )

    def _label_map(self, raw: np.ndarray, names: list[str] | None):
        if not np.issubdtype(raw.dtype, np.integer):
            raise DataError(f"HDF5 dataset {self.path} has {raw.dtype} labels; store integers")
        if names is not None:
            if raw.min() < 0 or raw.max() >= len(names):
                raise DataError(
                    f"HDF5 dataset {self.path} has labels in [{raw.min()}, {raw.max()}] but "
                    f"{len(names)} class names; labels must index class_names"
                )
            return raw.astype(np.int64), names
        values, labels = np.unique(raw, return_inverse=True)
        return labels.astype(np.int64), [str(v) for v in values]

    def fingerprint(self) -> str:
        st = self.path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    def scan(self, report: ScanReport) -> list[Item]:
        import h5py

        items = []
        with h5py.File(self.path, "r") as f:
            images = f["images"]
            height, width = images.shape[1:3]
            gray = images.ndim == 3 or images.shape[3] == 1
            for i in range(images.shape[0]):
                key = sha256_bytes(np.ascontiguousarray(images[i]).data)
                label, name = int(self._labels[i]), f"images[{i}]"
                items.append(Item(i, label, key, (width, height), name, gray=gray))
        return items

    def open(self, item: Item) -> Image.Image:
        import h5py

        with h5py.File(self.path, "r") as f:
            array = np.asarray(f["images"][item.index])
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        return Image.fromarray(array)


def _hdf5_class_names(f) -> list[str] | None:
    raw = f.attrs.get("class_names")
    if raw is None:
        raw = f["labels"].attrs.get("class_names")
    if raw is None and "class_names" in f:
        raw = f["class_names"][...]
    if raw is None:
        return None
    if isinstance(raw, (str, bytes)):
        raw = [raw]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(raw).reshape(-1)]


class EmbeddedSource(Source):
    """The synthetic data set of :mod:`evores.data.synthetic`, generated on demand."""

    def __init__(
        self,
        n_per_class: int = synthetic.DEFAULT_N_PER_CLASS,
        seed: int = synthetic.DEFAULT_SEED,
        size: int = synthetic.NATIVE_SIZE,
    ):
        self.n_per_class, self.seed, self.size = n_per_class, seed, size
        self.name = "embedded"
        self.identity = f"embedded:v{synthetic.VERSION}:n{n_per_class}:s{seed}:px{size}"
        self.class_names = list(synthetic.CLASS_NAMES)

    def fingerprint(self) -> str:
        return self.identity

    def scan(self, report: ScanReport) -> list[Item]:
        items = []
        images = synthetic.generate(self.n_per_class, self.seed, self.size)
        for i, (label, image) in enumerate(images):
            key = sha256_bytes(image.tobytes())
            items.append(Item(i, label, key, image.size, f"{self.class_names[label]}/{i}"))
        return items

    def open(self, item: Item) -> Image.Image:
        label, index = divmod(item.index, self.n_per_class)
        return synthetic.render(label, index, self.seed, self.size)


class TorchvisionSource(Source):
    """CIFAR10, STL10 (labelled train + test) or Flowers102 read by torchvision from ``root``.

    The published test split is kept as the test split; Flowers102's val split is validation.
    """

    SPLITS = {
        "cifar10": (("train", {"train": True}), ("test", {"train": False})),
        "stl10": (("train", {"split": "train"}), ("test", {"split": "test"})),
        "flowers102": (
            ("train", {"split": "train"}),
            ("val", {"split": "val"}),
            ("test", {"split": "test"}),
        ),
    }
    FOLDERS = {
        "cifar10": "cifar-10-batches-py",
        "stl10": "stl10_binary",
        "flowers102": "flowers-102",
    }

    def __init__(self, kind: str, root: str | Path, download: bool = False):
        self.kind = kind
        self.root = Path(root).expanduser().resolve()
        self.name = kind
        self.identity = f"{kind}:{self.root}"
        drawn = "" if kind == "flowers102" else "; validation drawn from train"
        self.layout = "published splits" + drawn
        self._sets = [(split, self._load(kwargs, download)) for split, kwargs in self.SPLITS[kind]]
        classes = getattr(self._sets[0][1], "classes", None)
        n_classes = 102 if kind == "flowers102" else 10
        self.class_names = list(classes) if classes else [f"{i:03d}" for i in range(n_classes)]

    def _load(self, kwargs: dict, download: bool):
        import torchvision.datasets as tvd

        cls = {"cifar10": tvd.CIFAR10, "stl10": tvd.STL10, "flowers102": tvd.Flowers102}[self.kind]
        try:
            return cls(str(self.root), download=download, **kwargs)
        except RuntimeError as exc:
            raise DataError(
                f"{self.kind} not found under {self.root} ({exc}); set data.download = true "
                f"or point data.path at a folder holding {self.FOLDERS[self.kind]}/"
            ) from None
        except ImportError as exc:
            raise DataError(f"reading {self.kind} needs {exc.name}; pip install it") from None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        base = self.root / self.FOLDERS[self.kind]
        for path in _sorted_files(base):
            st = path.stat()
            digest.update(f"{path.relative_to(base)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def _entries(self) -> Iterator[tuple[str, object, int]]:
        for split, ds in self._sets:
            for i in range(len(ds)):
                yield split, ds, i

    def scan(self, report: ScanReport) -> list[Item]:
        items = []
        for split, ds, i in self._entries():
            image, label = self._raw(ds, i)
            key = sha256_bytes(image.tobytes())
            items.append(Item(len(items), int(label), key, image.size, f"{split}/{i}", split))
        return items

    @staticmethod
    def _raw(ds, i: int) -> tuple[Image.Image, int]:
        image, label = ds[i]  # no transform: a PIL image; torchvision decodes one at a time
        return image, label

    def open(self, item: Item) -> Image.Image:
        split, i = item.name.split("/")
        return self._raw(dict(self._sets)[split], int(i))[0]


def open_source(source: str | Path, *, download: bool = False) -> Source:
    """The source named by ``source`` (see :func:`evores.data.cache.open_cache`)."""
    if isinstance(source, str):
        if source == "embedded":
            return EmbeddedSource()
        kind, sep, rest = source.partition(":")
        if sep and kind.lower() in TORCHVISION_SETS:
            return TorchvisionSource(kind.lower(), rest or ".", download=download)
    path = usable_path(source, "data.path", DataError)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return HDF5Source(path)
    if path.suffix.lower() == ".csv":
        return CsvSource(path)
    if path.is_file():
        raise DataError(
            f"dataset path {path} is a file but not .h5/.hdf5 or .csv; point data.path at a "
            "folder of class subfolders, a CSV file of path,label rows or an HDF5 file"
        )
    return FolderSource(path)
