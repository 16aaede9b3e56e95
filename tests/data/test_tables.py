"""Labels from a CSV file: the rows read, the given splits honoured, every refusal in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evores.core.errors import DataError
from evores.data.cache import open_cache
from evores.data.sources import ScanReport, open_source
from evores.data.tables import CsvSource


def make_table(root: Path, per_class: int = 5, split: bool = False) -> Path:
    """Images in root/images/, labelled by root/labels.csv (labels "cat" and "dog")."""
    (root / "images" / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["path,label" + (",split" if split else "")]
    for i in range(2 * per_class):
        name = f"images/{i}.png" if i % 3 else f"images/more/{i}.png"
        Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(root / name)
        given = ",train" if i % per_class < per_class - 2 else (",val" if i % 2 else ",test")
        lines.append(f"{name},{'cat' if i < per_class else 'dog'}" + (given if split else ""))
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "labels.csv"


def test_rows_become_items_with_sorted_class_names(tmp_path):
    source = open_source(make_table(tmp_path))
    assert isinstance(source, CsvSource) and source.class_names == ["cat", "dog"]
    items = source.scan(ScanReport())
    assert [it.label for it in items] == [0] * 5 + [1] * 5
    assert items[0].name == "images/more/0.png" and items[1].size == (14, 12)
    assert source.layout == "generated split"


def test_split_column_is_honoured_and_the_fingerprint_follows_the_table(tmp_path):
    table = make_table(tmp_path, split=True)
    cache = open_cache(table, [8], cache_dir=tmp_path / "cache")
    assert cache.report["layout"] == "given train/val/test in the split column"
    assert cache.report["split_sizes"] == {"train": 6, "val": 2, "test": 2}
    before = open_source(table).fingerprint()
    table.write_text(table.read_text().replace("cat", "kitten"), encoding="utf-8")
    assert open_source(table).fingerprint() != before


def test_train_and_test_rows_draw_validation_from_train(tmp_path):
    table = make_table(tmp_path, split=True)
    table.write_text(table.read_text().replace(",val", ",test"), encoding="utf-8")
    source = open_source(table)
    assert source.layout.startswith("given train and test (test)")
    assert {it.split for it in source.scan(ScanReport())} == {"train", "test"}


def _rewrite(table: Path, old: str, new: str) -> None:
    table.write_text(table.read_text().replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    "old, new, match",
    [
        ("path,label", "file,label", r"no 'path' column \(its header is 'file,label'\)"),
        ("images/1.png", "images/missing.png", r"line 3: image 'images/missing.png' does not"),
        ("images/1.png", "../outside.png", r"line 3: path '../outside.png' leaves the CSV"),
        ("images/1.png", "/etc/passwd", r"line 3: path '/etc/passwd' is absolute"),
        ("images/1.png,cat", 'images/1.png,"cat', r"line 3 is malformed CSV"),
        ("images/1.png,cat", "images/1.png,cat,extra", r"line 3 has 3 fields where the header"),
        ("images/1.png", "images/2.png", r"line 4 lists 'images/2.png' again \(first on line 3"),
        ("images/1.png,cat", "images/1.png,", r"line 3 has an empty label"),
    ],
)
def test_bad_tables_are_refused_in_one_line(tmp_path, old, new, match):
    table = make_table(tmp_path)
    _rewrite(table, old, new)
    with pytest.raises(DataError, match=match) as error:
        open_source(table)
    assert "\n" not in str(error.value)


def test_unknown_split_value_and_no_train_rows(tmp_path):
    table = make_table(tmp_path, split=True)
    _rewrite(table, ",train", ",training")
    with pytest.raises(DataError, match=r"line 2: split 'training' is unknown; use train, val"):
        open_source(table)
    table.write_text(table.read_text().replace(",train\n", ",val\n"), encoding="utf-8")
    _rewrite(table, ",training", ",val")
    with pytest.raises(DataError, match="marks no row train"):
        open_source(table)


def test_a_label_without_readable_images_is_refused(tmp_path):
    table = make_table(tmp_path)
    for i in range(5, 10):
        name = f"images/{i}.png" if i % 3 else f"images/more/{i}.png"
        (tmp_path / name).write_bytes(b"not a png")
    with pytest.raises(DataError, match="label 'dog' of labels file .* has no readable image"):
        open_source(table).scan(ScanReport())


def test_a_single_label_and_an_empty_table(tmp_path):
    table = make_table(tmp_path)
    table.write_text(table.read_text().replace("dog", "cat"), encoding="utf-8")
    with pytest.raises(DataError, match="names a single class"):
        open_source(table)
    table.write_text("path,label\n", encoding="utf-8")
    with pytest.raises(DataError, match="lists no images"):
        open_source(table)
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "absent.csv")
