"""Labels from a CSV file: one row per image, ``path,label``, and optionally ``split``.

Paths are relative to the CSV's folder and may not leave it (no absolute paths, no ``..`` out
of it): the dataset is the folder the CSV describes, which is what its fingerprint covers and
what can be moved or shared as one, and a CSV received from elsewhere cannot point a build at
other files on the machine. A ``split`` column (``train``/``val``/``test``) is honoured as given
split folders are (:class:`evores.data.sources.FolderSource`): with train, val and test rows
all three are given; with train and one of val or test, that one is the test split and
validation is drawn from train; with train rows alone, every split is drawn.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path, PurePosixPath

from PIL import Image

from evores.core.errors import DataError
from evores.core.paths import usable_path
from evores.data.images import IMAGE_EXTENSIONS
from evores.data.items import Item, ScanReport, Source, resolved
from evores.data.levels import LevelledImage
from evores.data.readers import open_file, scan_file

SPLITS = ("train", "val", "test")
REQUIRED = ("path", "label")
_FIX = "its first line names the columns path,label (and optionally split)"


class CsvSource(Source):
    """The images a CSV file of ``path,label[,split]`` rows lists."""

    def __init__(self, path: str | Path):
        self.path = resolved(path)
        if not self.path.is_file():
            raise DataError(
                f"labels file {self.path} does not exist; set data.path to a CSV file whose {_FIX}"
            )
        self.root = self.path.parent
        self.name = self.path.stem
        self.identity = f"csv:{self.path}"
        rows = self._rows()
        self.class_names = sorted({label for _, _, label, _ in rows})
        if len(self.class_names) < 2:
            raise DataError(
                f"labels file {self.path} names a single class ({self.class_names[0]!r}); "
                "classification needs at least 2 labels"
            )
        self._rows_by_split = self._given_splits(rows)

    def _where(self, line: int) -> str:
        return f"labels file {self.path}, line {line}"

    def _rows(self) -> list[tuple[int, str, str, str | None]]:
        """(line, path, label, split) of every non-blank row, each checked."""
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(
                f"labels file {self.path} is not UTF-8 text; save it as UTF-8 CSV"
            ) from None
        except OSError as error:
            raise DataError(f"labels file {self.path} cannot be read ({error.strerror})") from None
        table = self._table(text)
        if not table:
            raise DataError(f"labels file {self.path} is empty; {_FIX}")
        columns = self._columns(table[0][1])
        rows, seen = [], {}
        for line, row in table[1:]:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise DataError(
                    f"{self._where(line)} has {len(row)} fields where the header names "
                    f"{len(columns)}; give one value per column"
                )
            cells = {name: cell.strip() for name, cell in zip(columns, row, strict=True)}
            relative = self._relative(cells["path"], line)
            if relative in seen:
                raise DataError(
                    f"{self._where(line)} lists {relative!r} again (first on line "
                    f"{seen[relative]}); list each image once"
                )
            seen[relative] = line
            if not cells["label"]:
                raise DataError(f"{self._where(line)} has an empty label; give every image one")
            rows.append((line, relative, cells["label"], self._split(cells.get("split"), line)))
        if not rows:
            raise DataError(f"labels file {self.path} lists no images; add path,label rows")
        return rows

    def _table(self, text: str) -> list[tuple[int, list[str]]]:
        """(line, cells) of every row; DataError naming the line where a malformed row starts
        (an unclosed quote would otherwise be reported at the end of the file)."""
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        table = []
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return table
            except csv.Error as error:
                raise DataError(
                    f"{self._where(start)} is malformed CSV ({error}); fix its quoting"
                ) from None
            table.append((start, row))

    def _columns(self, header: list[str]) -> list[str]:
        columns = [cell.strip().lower() for cell in header]
        for name in REQUIRED:
            if name not in columns:
                raise DataError(
                    f"labels file {self.path} has no {name!r} column (its header is "
                    f"{','.join(header)!r}); {_FIX}"
                )
        if len(set(columns)) != len(columns):
            raise DataError(f"labels file {self.path} repeats a column in its header; {_FIX}")
        return columns

    def _relative(self, cell: str, line: int) -> str:
        """The row's path, checked: relative, inside the CSV's folder, an existing file."""
        if not cell:
            raise DataError(f"{self._where(line)} has an empty path; give every image one")
        if Path(cell).is_absolute() or PurePosixPath(cell).is_absolute():
            raise DataError(
                f"{self._where(line)}: path {cell!r} is absolute; give it relative to the "
                f"CSV's folder {self.root}"
            )
        relative = os.path.normpath(cell)
        if relative == ".." or relative.startswith(".." + os.sep):
            raise DataError(
                f"{self._where(line)}: path {cell!r} leaves the CSV's folder {self.root}; put "
                "the CSV in the folder that holds the images"
            )
        full = usable_path(self.root / relative, f"{self._where(line)}: path", DataError)
        if not full.exists():
            raise DataError(
                f"{self._where(line)}: image {cell!r} does not exist (looked for {full}); fix "
                "the path or remove the row"
            )
        return PurePosixPath(Path(relative)).as_posix()

    def _split(self, value: str | None, line: int) -> str | None:
        if value is None:
            return None
        if value.lower() not in SPLITS:
            raise DataError(
                f"{self._where(line)}: split {value!r} is unknown; use train, val or test "
                "(or drop the split column to have the splits drawn)"
            )
        return value.lower()

    def _given_splits(self, rows) -> list[tuple[str, str, str | None]]:
        """(path, label, split) per row with the splits read as given folders are read."""
        present = {split for *_, split in rows}
        if present == {None}:
            return [(path, label, None) for _, path, label, _ in rows]
        if "train" not in present:
            raise DataError(
                f"labels file {self.path} marks no row train; mark the training images train "
                "(or drop the split column to have the splits drawn)"
            )
        if present == {"train"}:
            return [(path, label, None) for _, path, label, _ in rows]
        if present >= {"val", "test"}:
            self.layout = "given train/val/test in the split column"
            return [(path, label, split) for _, path, label, split in rows]
        test = "test" if "test" in present else "val"
        self.layout = f"given train and {test} (test) in the split column; validation drawn"
        renamed = {"train": "train", test: "test"}
        return [(path, label, renamed[split]) for _, path, label, split in rows]

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.path.read_bytes())
        for path, _, _ in self._rows_by_split:
            try:
                st = (self.root / path).stat()
                state = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError as error:
                state = f"error {error.errno}"
            digest.update(f"{path}\0{state}\n".encode())
        return digest.hexdigest()

    def scan(self, report: ScanReport) -> list[Item]:
        items: list[Item] = []
        labels = {name: i for i, name in enumerate(self.class_names)}
        for path, label, split in self._rows_by_split:
            if PurePosixPath(path).suffix.lower() not in IMAGE_EXTENSIONS:
                report.skip(path, "not an image file by its extension")
                continue
            item = scan_file(self.root / path, path, labels[label], split, len(items), report)
            if item is not None:
                items.append(item)
        counts = {item.label for item in items}
        empty = [name for name, i in labels.items() if i not in counts]
        if empty:
            raise DataError(
                f"label {empty[0]!r} of labels file {self.path} has no readable image; add "
                "images of it or remove its rows"
            )
        return items

    def open(self, item: Item) -> Image.Image | LevelledImage:
        path = self.root / item.name
        return open_file(path, path.suffix)
