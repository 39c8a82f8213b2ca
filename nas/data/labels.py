"""Label maps: which classes a dataset has, read from its masks, ``--num-classes`` or ``classes.json``.

Binary data (every mask 0/255 or 0/1, nothing declared) is read exactly as before: foreground where
the mask is above 0. Anything else is a label map: masks hold the class of each pixel, 0 being the
background, and the dataset has K = ``num_classes`` classes, background included (docs/multiclass.md):

* PNG/TIFF/... grey values, or the *indices* of a palette PNG (a palette mask whose grey values are
  already 0/255 or 0/1 stays binary, read as before); ``.npy`` / NIfTI volumes with integer labels.
* K is declared by ``--num-classes`` or by ``classes.json`` in the data folder (a list of
  ``{"name", "value", "colour"}``, values 0..K-1), else found from the data: the largest label + 1,
  when the labels are integers under ``MAX_INFERRED_CLASSES`` and every one of 1..K-1 appears.
* Refused with one line naming the file: a label outside the declared classes, a non-integer label,
  a ``classes.json`` that does not parse or repeats a value or a name, and (``require_trained_classes``)
  a class that appears in validation or test masks but in no training mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from nas.data.checks import mask_alpha_problem
from nas.data.errors import DataError
from nas.data.volumes import read_volume_labels, volume_suffix
from nas.io import JsonError, printable, read_json

CLASSES_FILE = "classes.json"
MAX_NAME = 200  # characters of a class name (nas.deploy.checkpoint_checks reads no longer ones)
MAX_INFERRED_CLASSES = 32  # without a declaration, a mask with a larger value is a soft/JPEG mask, not labels
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
BINARY_NAMES = ("background", "foreground")
BINARY_COLOURS = ((0, 0, 0), (255, 255, 255))
# Distinct colours for classes 1.. (tab10 then tab20's light shades); background is black.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
           (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
           (219, 219, 141), (158, 218, 229))

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Classes:
    """The classes of a dataset: index = label value, [0] is the background."""

    names: tuple[str, ...] = BINARY_NAMES
    colours: tuple[Colour, ...] = BINARY_COLOURS

    @property
    def count(self) -> int:
        return len(self.names)


def default_classes(count: int) -> Classes:
    """``background``, ``class_1``, ... with the default palette (binary: background/foreground)."""
    if count == 2:
        return Classes()
    names = ("background",) + tuple(f"class_{value}" for value in range(1, count))
    return Classes(names, ((0, 0, 0),) + tuple(PALETTE[(value - 1) % len(PALETTE)] for value in range(1, count)))


def read_classes_file(folder: Path) -> Classes | None:
    """``folder/classes.json`` (or the one above a ``train/`` folder passed as the data), None when there is none."""
    places = [folder / CLASSES_FILE] + ([folder.parent / CLASSES_FILE] if folder.name in ("train", "training") else [])
    path = next((p for p in places if p.is_file()), None)
    if path is None:
        return None
    try:
        entries = read_json(path)  # size- and depth-bounded
    except JsonError as error:
        raise DataError(f"cannot read {error}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {' '.join(str(error).split())}") from None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise DataError(f"{path} must be a list of {{\"name\", \"value\", \"colour\"}} objects")
    by_value: dict[int, tuple[str, Colour]] = {}
    for index, entry in enumerate(entries):
        value, name, colour = entry.get("value"), entry.get("name"), entry.get("colour", entry.get("color"))
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise DataError(f"{path}: entry {index} needs an integer \"value\" in 0..255, got {value!r}")
        if (not isinstance(name, str) or not name.strip() or ":" in name or "," in name or len(name) > MAX_NAME
                or printable(name) != name):
            raise DataError(f"{path}: entry {index} needs a \"name\" (text of at most {MAX_NAME} characters, without "
                            f"':', ',' or control characters), got {printable(repr(name))}")
        if value in by_value:
            raise DataError(f"{path}: value {value} is declared twice ({by_value[value][0]!r} and {name!r})")
        if colour is not None and not (isinstance(colour, list) and len(colour) == 3 and all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)):
            raise DataError(f"{path}: entry {index} ({name!r}) needs a \"colour\" [R, G, B] of 0..255, got {colour!r}")
        by_value[value] = (name.strip(), tuple(colour) if colour is not None else None)
    by_value.setdefault(0, ("background", (0, 0, 0)))
    count = max(by_value) + 1
    gaps = [v for v in range(count) if v not in by_value]
    if gaps:
        raise DataError(f"{path}: values must be 0..K-1 without gaps; {', '.join(map(str, gaps[:5]))} missing")
    names = [by_value[v][0] for v in range(count)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: class name {repeated[0]!r} is used twice")
    fallback = default_classes(max(count, 3)).colours
    colours = tuple(by_value[v][1] or (BINARY_COLOURS[v] if count == 2 else fallback[v]) for v in range(count))
    return Classes(tuple(names), colours)  # type: ignore[arg-type]


def read_mask_values(path: Path, opener: Callable[[Path, str], Any]) -> np.ndarray:
    """A mask file's raw values, float32 ``(*S)``: grey values (8/16-bit), or a palette PNG's indices
    when its grey values are not already binary. ``opener`` decodes an image file (one-line errors)."""
    if volume_suffix(path):
        return read_volume_labels(path)
    image = opener(path, "mask")
    array = np.asarray(image) if image.mode in WIDE_MODES else np.asarray(image.convert("L"))
    mask_alpha_problem(image, array, path)
    if image.mode in ("P", "PA") and not _binary(array, path):
        indices = np.asarray(image)
        array = indices[..., 0] if indices.ndim == 3 else indices
    return array.astype(np.float32)


def _binary(values: Any, path: Path) -> bool:
    """Today's binary rule: only 0/1 or 0/255 (0/65535 in a 16-bit image file)."""
    present = set(np.unique(np.asarray(values)).tolist())
    return present <= {0, 1} or present <= {0, 255} or (not volume_suffix(path) and present <= {0, 65535})


def _shown(values: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")


def resolve_classes(splits: Mapping[str, tuple[list[torch.Tensor], list[Path]]], folder: Path,
                    declared: int | None = None) -> Classes:
    """Decide the classes and turn every split's raw masks (in place) into {0, 1} (binary) or label values.

    ``splits[name] = (masks, their files)``; ``declared`` is ``--num-classes``.
    """
    slots = [(masks, index) for masks, _ in splits.values() for index in range(len(masks))]
    paths = [path for _, files in splits.values() for path in files]
    uniques = [np.unique(masks[index].numpy()) for masks, index in slots]
    classes = _decide(uniques, paths, folder, declared)
    if classes.count == 2:
        for masks, index in slots:
            masks[index] = (masks[index] > 0).float()  # 0/255 -> {0, 1}, as before label maps
    return classes


def _decide(uniques: list[np.ndarray], paths: list[Path], folder: Path, declared: int | None) -> Classes:
    from_file = read_classes_file(folder)
    if from_file is not None and declared is not None and declared != from_file.count:
        raise DataError(f"--num-classes {declared} but {folder / CLASSES_FILE} declares {from_file.count} classes")
    count = declared if declared is not None else (from_file.count if from_file is not None else None)
    if count in (None, 2):
        odd = next((i for i, u in enumerate(uniques) if not _binary(u, paths[i])), None)
        if odd is None:
            return from_file or Classes()
        if count is not None:
            raise DataError(f"mask {paths[odd]} is not binary: values {_shown(uniques[odd])} (expected only 0/255 "
                            "or 0/1 for 2 classes; label maps need --num-classes K or classes.json)")
        count = _inferred_count(uniques, paths, odd)
    for index, values in enumerate(uniques):
        bad = values[(values != np.round(values)) | (values < 0) | (values >= count)]
        if bad.size:
            raise DataError(f"mask {paths[index]} has label value {bad[0]:g} outside the {count} declared classes "
                            f"(0..{count - 1}; --num-classes or {CLASSES_FILE})")
    return from_file or default_classes(count)


def _inferred_count(uniques: list[np.ndarray], paths: list[Path], odd: int) -> int:
    """K from undeclared label maps: integer labels under ``MAX_INFERRED_CLASSES``, all of 1..K-1 present."""
    found = np.unique(np.concatenate(uniques))
    count = int(found.max()) + 1
    missing = sorted(set(range(1, count)) - set(found.tolist()))
    if (found != np.round(found)).any() or found.min() < 0 or count > MAX_INFERRED_CLASSES or missing:
        why = (f"labels {', '.join(map(str, missing[:5]))} never appear" if missing and count <= MAX_INFERRED_CLASSES
               else f"a label map holds integers 0..K-1 with K <= {MAX_INFERRED_CLASSES}")
        raise DataError(f"mask {paths[odd]} is not binary: values {_shown(uniques[odd])} (expected only 0/255 or 0/1; "
                        f"as a label map: {why}; declare the classes with --num-classes K or {CLASSES_FILE})")
    return count


def require_trained_classes(splits: Mapping[str, tuple[list[str], list[torch.Tensor]]], classes: Classes,
                            where: str) -> None:
    """Refuse a class that appears in validation or test masks but in no training mask (K >= 3)."""
    if classes.count == 2 or "train" not in splits:
        return
    seen: set[int] = set()
    for mask in splits["train"][1]:
        seen.update(int(v) for v in torch.unique(mask).tolist())
    for split, label in (("val", "validation"), ("test", "test")):
        names, masks = splits.get(split, ([], []))
        for name, mask in zip(names, masks):
            unseen = sorted(int(v) for v in torch.unique(mask).tolist() if int(v) not in seen)
            if unseen:
                value = unseen[0]
                raise DataError(f"class {value} ({classes.names[value]!r}) appears in {label} image {name!r} of "
                                f"{where} but in no training mask: it could never be learned (move such images "
                                "into training, or change --seed / the split)")
