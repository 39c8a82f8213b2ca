"""Seeded validation and test splits of a folder that lacks ``val/`` or ``test/``.

Selecting the best of many trials on validation Dice makes that Dice optimistic, so the numbers a
user is told (the report, the model cards) come from a test split that nothing is selected on. A
folder without ``test/`` gets one, held out by ``--seed``: ``--test-fraction`` of its images (0.2 by
default when the folder has at least ``MIN_IMAGES_FOR_TEST`` images, none for tiny folders, where a
test image would be taken from too few training images). Validation is carved as before, from the
same shuffle, so a tiny folder (no test split) keeps exactly the split it always had.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nas.data.errors import DataError

DEFAULT_TEST_FRACTION = 0.2
MIN_IMAGES_FOR_TEST = 10

Split = tuple[list[str], list[Any], list[Any], list[Any]]  # (stems, images, masks, fovs or [])


def test_count(n: int, test_fraction: float | None) -> int:
    """How many of ``n`` pooled images become test images (``None``: the default rule)."""
    if test_fraction is None:
        test_fraction = DEFAULT_TEST_FRACTION if n >= MIN_IMAGES_FOR_TEST else 0.0
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    return max(1, round(test_fraction * n)) if test_fraction > 0 else 0


def carve(loaded: dict[str, Split], *, seed: int, val_fraction: float,
          test_fraction: float | None) -> tuple[str, float]:
    """Fill ``loaded`` (``{"all": ...}`` or ``train``/``val``/``test``) up to ``train``, ``val`` and
    optionally ``test``, in place. Returns the one line that says where the test split came from, and
    the fraction that carved it (0.0 when none was carved): a search stores it, so ``nas-finalize``
    and a resume split the same way."""
    has_test = "test" in loaded
    if "val" in loaded and has_test:
        return _folder_test(loaded, test_fraction), 0.0
    pool_name = "all" if "all" in loaded else "train"
    stems, images, masks, fovs = loaded.pop(pool_name)
    n = len(stems)
    n_val = 0 if "val" in loaded else min(n - 1, max(1, round(val_fraction * n)))
    n_test = 0 if has_test else test_count(n, test_fraction)
    if n_test and n - n_val - n_test < 1:
        raise DataError(f"--test-fraction {test_fraction}: {n} images leave none for training after "
                        f"{n_val} validation and {n_test} test images")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    for name, idx in parts.items():
        if name == "val" and not n_val or name == "test" and not n_test:
            continue
        idx = sorted(idx)
        loaded[name] = ([stems[i] for i in idx], [images[i] for i in idx], [masks[i] for i in idx],
                        [fovs[i] for i in idx] if fovs else [])
    if has_test:
        return _folder_test(loaded, test_fraction), 0.0
    source = "images" if pool_name == "all" else "train/ images"
    if n_test:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        return f"test: {n_test} of {n} {source} held out by --seed {seed} (--test-fraction {fraction:g})", fraction
    if test_fraction == 0:
        return "no test split (--test-fraction 0): final numbers are validation numbers", 0.0
    return (f"no test split: {n} {source} are fewer than {MIN_IMAGES_FOR_TEST} (--test-fraction F forces one); "
            "final numbers are validation numbers"), 0.0


def _folder_test(loaded: dict[str, Split], test_fraction: float | None) -> str:
    note = f"test: the folder's test/ ({len(loaded['test'][0])} images)"
    return note + ("; --test-fraction ignored" if test_fraction else "")
