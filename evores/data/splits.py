"""Assigning images to train, validation and test splits: given splits honoured, the rest drawn
per class from a seeded generator, duplicates kept on one side."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from evores.core.errors import DataError
from evores.core.seeding import derive_rng
from evores.data.sources import (
    Item,
)


def assign_splits(
    items: Sequence[Item], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[str | None], int]:
    """Split per item ("train"/"val"/"test", None = dropped) and the number dropped.

    Items with a given split keep it; val/test items identical to an earlier split's image are
    dropped. The rest is split stratified by class with identical images kept together,
    deterministically from ``seed``.
    """
    splits: list[str | None] = [item.split for item in items]
    if all(s is None for s in splits):
        pool = list(range(len(items)))
        targets = {"test": test_fraction, "val": val_fraction}
    else:
        pool = [i for i, s in enumerate(splits) if s == "train"]
        targets = {} if "val" in splits else {"val": val_fraction}
    for i in pool:
        splits[i] = "train"
    _draw(items, pool, targets, splits, derive_rng(seed, "split"))
    return splits, _drop_leaks(items, splits)


def _draw(items, pool, targets: dict, splits: list, rng: np.random.Generator) -> None:
    """Move groups of identical images of each class from train into the target splits."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in pool:
        groups[items[i].key].append(i)
    by_class: dict[int, list[list[int]]] = defaultdict(list)
    for members in groups.values():  # insertion order: deterministic
        by_class[items[members[0]].label].append(members)
    for label in sorted(by_class):
        class_groups = by_class[label]
        n = sum(len(g) for g in class_groups)
        order = rng.permutation(len(class_groups))
        counts = dict.fromkeys(targets, 0)
        for g in order:
            split = next((s for s in targets if counts[s] < max(1, round(targets[s] * n))), None)
            if split is None:
                break
            for i in class_groups[g]:
                splits[i] = split
            counts[split] += len(class_groups[g])


def _drop_leaks(items, splits: list) -> int:
    """Drop val images identical to a train image and test images identical to either."""
    dropped = 0
    seen: set[str] = set()
    for split in ("train", "val", "test"):
        members = [i for i, s in enumerate(splits) if s == split]
        for i in members:
            if split != "train" and items[i].key in seen:
                splits[i] = None
                dropped += 1
        seen.update(items[i].key for i in members if splits[i] is not None)
    return dropped


def check_split_classes(items, splits, class_names, where: str) -> None:
    for split in ("train", "val", "test"):
        present = Counter(it.label for it, s in zip(items, splits, strict=True) if s == split)
        for label, name in enumerate(class_names):
            if present[label] == 0:
                mine = [it for it in items if it.label == label]
                raise DataError(
                    f"class {name!r} of {where} has no image in the {split} split; "
                    + _split_hint(mine, items, split)
                )


def _split_hint(mine: list[Item], items, split: str) -> str:
    """What would give the class an image in ``split``. Never the split fractions: each split
    takes at least one group of identical images per class whatever they are, so a class
    lacks one only for want of (distinct) images, or where a given folder lacks the class."""
    given = {it.split for it in items} - {None}
    if split in given:
        folder = next(it.name.split("/")[0] for it in items if it.split == split)
        return f"add images of that class to the dataset's {folder}/ folder"
    # A generated split draws all three splits, a given train/ folder train and validation.
    needed, place = (2, " in train/") if given else (3, "")
    pool = [it for it in mine if it.split in (None, "train")]
    distinct = len({it.key for it in pool})
    if len(pool) < needed:
        return (
            f"it has {len(pool)} usable image{'s' * (len(pool) != 1)}{place} and every class "
            f"needs at least {needed} there (one per split drawn): add images of that class"
        )
    return (
        f"its {len(pool)} usable images{place} hold only {distinct} distinct one(s) (identical "
        f"copies stay in one split) and every class needs at least {needed}: add other images"
    )
