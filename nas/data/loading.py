"""Segmentation data: a built-in synthetic task or a folder (flat, split subfolders or the DRIVE download).

Everything is held in memory as full-resolution tensors: the datasets we search on are small, and
the trainer crops patches (``nas.data.patches.iterate_train_batches``) and validates on whole images.
Optional FOV masks and a test split ride along. Data problems raise ``DataError`` with a one-line
message naming the file or folder, so the CLI can show it as is; ``check_data_source`` finds layout
problems before a run writes anything. See docs/data_and_training.md for the layouts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from nas.data.dataset import SegmentationData  # noqa: F401 (re-exported: its historic home)
from nas.data.checks import (mask_alpha_problem, require_finite, require_foreground, require_min_side,
                             require_nonempty_fov, require_single_frame)
from nas.data.errors import DataError
from nas.data.labels import read_mask_values, require_trained_classes, resolve_classes
from nas.data.normalization import Normalization, compute_normalization
from nas.data.splits import carve
from nas.data.synthetic import CLASS_COLOURS, CLASS_NAMES, SYNTHETIC_KINDS, SYNTHETIC_NAME, make_synthetic
from nas.data.volumes import VOLUME_SUFFIXES, read_volume, read_volume_mask, volume_suffix

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
SUFFIXES = IMAGE_SUFFIXES + VOLUME_SUFFIXES
VAL_SEED_OFFSET = 1_000_003  # synthetic validation images come from a different seed than training
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16/32-bit and float grey (microscopy TIFFs)


# ---------------------------------------------------------------------------------------------
# Checking the layout (cheap: lists files, decodes nothing)

Pair = tuple[str, Path, Path, "Path | None"]  # (stem, image, mask, fov or None)
DRIVE_SPLITS = (("training", "train"), ("test", "test"))
SPLITS = ("train", "val", "test")


def check_data_source(source: str) -> None:
    """Raise ``DataError`` unless ``source`` is a synthetic task or a folder in a supported layout."""
    if _synthetic_kind(source) is not None:
        return
    _discover(Path(source))


def _synthetic_kind(source: str) -> str | None:
    """``"default"`` for ``synthetic``, the kind for ``synthetic:<kind>``, None for a path."""
    text = str(source)
    if text == SYNTHETIC_NAME:
        return "default"
    if text.startswith(SYNTHETIC_NAME + ":"):
        kind = text.split(":", 1)[1]
        if kind not in SYNTHETIC_KINDS or kind == "default":
            choices = ", ".join(f"{SYNTHETIC_NAME}:{k}" for k in SYNTHETIC_KINDS if k != "default")
            raise DataError(f"unknown synthetic dataset {text!r}: use {SYNTHETIC_NAME!r} or one of {choices}")
        return kind
    return None


def _discover(folder: Path) -> dict[str, list[Pair]]:
    """The folder's splits: ``{"all": pairs}`` (flat) or a subset of ``train``/``val``/``test``.

    Layouts, tried in order: the DRIVE download (``training/images`` + ``training/1st_manual`` [+
    ``training/mask``], same for ``test/``), split subfolders (``train/`` required, ``val/`` and
    ``test/`` optional, each with ``images/`` + ``masks/`` [+ ``fov/``]), flat ``images/`` + ``masks/``.
    """
    if not folder.exists():
        raise DataError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"data source {folder} is not a folder (expected a folder with images/ and masks/)")
    if (folder / "training" / "images").is_dir() and (folder / "training" / "1st_manual").is_dir():
        return _discover_drive(folder)
    if (folder / "train").is_dir() and not (folder / "images").is_dir():
        splits = {name: _list_pairs(folder / name, minimum=1) for name in SPLITS if (folder / name).is_dir()}
        if "val" not in splits and len(splits["train"]) < 2:
            raise DataError(f"data folder {folder / 'train'} has 1 image and there is no val/: need at least 2")
        return splits
    return {"all": _list_pairs(folder, minimum=2)}


def _discover_drive(folder: Path) -> dict[str, list[Pair]]:
    """DRIVE names: ``21_training.tif`` + ``21_manual1.gif`` (+ FOV ``21_training_mask.gif``)."""
    splits: dict[str, list[Pair]] = {}
    for sub, split in DRIVE_SPLITS:
        root = folder / sub
        if not (root / "images").is_dir() or not (root / "1st_manual").is_dir():
            continue  # the official test download has no manual annotations: no test split then
        images = _files_by_stem(root / "images")
        manual = {stem.split("_")[0]: path for stem, path in _files_by_stem(root / "1st_manual").items()}
        fovs = ({stem.split("_")[0]: path for stem, path in _files_by_stem(root / "mask").items()}
                if (root / "mask").is_dir() else None)
        pairs = []
        for stem, path in sorted(images.items()):
            key = stem.split("_")[0]
            if key not in manual:
                raise DataError(f"image {path} has no annotation in {root / '1st_manual'} "
                                f"(expected {key}_manual1.gif)")
            if fovs is not None and key not in fovs:
                raise DataError(f"image {path} has no FOV mask in {root / 'mask'} (expected {stem}_mask.gif)")
            pairs.append((key, path, manual[key], fovs[key] if fovs is not None else None))
        if not pairs:
            raise DataError(f"no images in {root / 'images'} (looked for {', '.join(IMAGE_SUFFIXES)})")
        splits[split] = pairs
    if len(splits.get("train", [])) < 2:
        raise DataError(f"DRIVE folder {folder / 'training'} needs at least 2 annotated images")
    return splits


def _list_pairs(folder: Path, minimum: int = 2) -> list[Pair]:
    """``(stem, image, mask, fov)`` for every image, sorted by stem; every layout problem is a ``DataError``."""
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    for sub in ("images", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"data folder {folder} has no {sub}/ folder{_layout_hint(folder)}")
    images = _files_by_stem(folder / "images")
    masks = _files_by_stem(folder / "masks")
    fovs = _files_by_stem(folder / "fov") if (folder / "fov").is_dir() else None
    if not images:
        raise DataError(f"no images in {folder / 'images'} (looked for {', '.join(SUFFIXES)})")
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(f"image {path} has no mask in {folder / 'masks'} (expected the stem {stem!r})")
        if fovs is not None and stem not in fovs:
            raise DataError(f"image {path} has no FOV mask in {folder / 'fov'} (expected the stem {stem!r})")
    for stem, path in masks.items():
        if stem not in images:
            raise DataError(f"mask {path} has no image in {folder / 'images'} (expected the stem {stem!r})")
    if len(images) < minimum:
        raise DataError(f"data folder {folder} has {len(images)} image; need at least {minimum} "
                        "(training and validation)")
    return [(stem, images[stem], masks[stem], fovs[stem] if fovs is not None else None)
            for stem in sorted(images)]


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Image/volume files of ``folder`` by stem (``x.nii.gz`` -> ``x``); hidden and other files ignored."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = volume_suffix(path) or path.suffix.lower()
        if path.name.startswith(".") or suffix not in SUFFIXES or not path.is_file():
            continue
        stem = path.name[: -len(suffix)]
        if stem in found:
            first = found[stem].name
            raise DataError(f"two files with the stem {stem!r} in {folder}: {first}, {path.name}")
        found[stem] = path
    return found


def _layout_hint(folder: Path) -> str:
    """Point at a split subfolder when the user passed a folder above the dataset."""
    try:
        splits = sorted(sub.name for sub in folder.iterdir()
                        if (sub / "images").is_dir() and (sub / "masks").is_dir())
    except OSError:
        return ""
    return f" (found {', '.join(s + '/' for s in splits)}: pass that folder)" if splits else ""


# ---------------------------------------------------------------------------------------------
# Loading


def load_data(
    source: str,
    *,
    image_size: int,
    seed: int,
    val_fraction: float = 0.25,
    test_fraction: float | None = None,
    synthetic_train: int = 96,
    synthetic_val: int = 32,
    synthetic_test: int | None = None,
    num_classes: int | None = None,
) -> SegmentationData:
    """Load ``source`` into memory and split it.

    ``"synthetic[:kind]"``: ``synthetic_train`` + ``synthetic_val`` generated images of ``image_size``
    px (validation from a derived seed, so it is not a copy of training; ``synthetic:volumes``: a
    quarter as many ``image_size // 2`` px cubes). A folder: every image at its own resolution
    (``image_size`` is not used); its ``train/`` ``val/`` ``test/`` splits when it has them, else a
    ``seed``-shuffle puts ``max(1, round(val_fraction * n))`` images into validation and, without
    ``test/``, ``test_fraction`` of them into a test split (``nas.data.splits``; ``None``: 0.2 from 10
    images on, else none). Synthetic data gets ``synthetic_test`` (default: as many as validation) test images from a
    third seed. ``num_classes`` (``--num-classes``, background included) declares the classes of label-map masks;
    ``None`` finds them (``nas.data.labels``).
    """
    kind = _synthetic_kind(source)
    if kind is not None:
        data = _load_synthetic(str(source), kind, image_size, seed, synthetic_train, synthetic_val,
                               synthetic_val if synthetic_test is None else synthetic_test)
        if num_classes is not None and num_classes != data.num_classes:
            raise DataError(f"--num-classes {num_classes} but {source} has {data.num_classes} classes")
        return data
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    folder = Path(source)
    splits = _discover(folder)
    channels: list[tuple[Path, int]] = []
    loaded = {name: _read_pairs(pairs, channels) for name, pairs in splits.items()}
    classes = resolve_classes({name: (loaded[name][2], [pair[2] for pair in splits[name]]) for name in loaded},
                              folder, num_classes)
    test_note, held_out = carve(loaded, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    train_names, train_images, train_masks, train_fovs = loaded["train"]
    val_names, val_images, val_masks, val_fovs = loaded["val"]
    test_names, test_images, test_masks, test_fovs = loaded.get("test", ([], [], [], []))
    require_foreground("train", train_names, train_masks, train_fovs, str(folder))
    require_foreground("validation", val_names, val_masks, val_fovs, str(folder))
    require_trained_classes({name: loaded[name][::2] for name in loaded}, classes, str(folder))
    return SegmentationData(
        name=folder.resolve().name, source=str(source),
        train_images=train_images, train_masks=train_masks,
        val_images=val_images, val_masks=val_masks, val_names=val_names,
        in_channels=channels[0][1], normalization=compute_normalization(train_images),
        train_names=train_names, train_fovs=train_fovs, val_fovs=val_fovs,
        test_images=test_images, test_masks=test_masks, test_names=test_names, test_fovs=test_fovs,
        test_note=test_note, held_out=held_out,
        num_classes=classes.count, class_names=classes.names, class_colours=classes.colours,
    )


def _read_pairs(pairs: list[Pair], channels: list[tuple[Path, int]]):
    """Decode a split: ``(stems, images (C, *S), masks (1, *S), fovs (1, *S) or [])``; checks shapes."""
    stems, images, masks, fovs = [], [], [], []
    for stem, image_path, mask_path, fov_path in pairs:
        image = _read_image(image_path)  # (*S, C) float32
        mask = read_mask_values(mask_path, _open)  # (*S) float32 raw: resolve_classes makes it {0, 1} or labels
        _check_shape(image.shape[:-1], mask.shape, image_path, mask_path, "mask")
        require_min_side(image.shape[:-1], image_path)
        if fov_path is not None:
            fov = _read_mask(fov_path)
            _check_shape(image.shape[:-1], fov.shape, image_path, fov_path, "FOV mask")
            require_nonempty_fov(fov, fov_path, image_path)
            fovs.append(torch.from_numpy(fov)[None])
        if not channels:
            channels.append((image_path, image.shape[-1]))
        elif image.shape[-1] != channels[0][1] or image.ndim != len(mask.shape) + 1:
            raise DataError(
                f"image {image_path} has {image.shape[-1]} channel(s) but {channels[0][0]} has "
                f"{channels[0][1]}; all images in {image_path.parent} must have the same number"
            )
        stems.append(stem)
        images.append(torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0))))
        masks.append(torch.from_numpy(mask)[None])
    return stems, images, masks, fovs


def _check_shape(image_shape, mask_shape, image_path: Path, mask_path: Path, what: str) -> None:
    if tuple(image_shape) != tuple(mask_shape):
        shown = ("x".join(map(str, reversed(s))) for s in (mask_shape, image_shape))
        turned = len(image_shape) == 2 and tuple(image_shape) == tuple(mask_shape)[::-1]
        hint = (" (turned by 90 degrees: is one of them saved with an EXIF orientation and the other not? both "
                "are read as a viewer shows them)") if turned else ""
        raise DataError(f"{what} {mask_path} is {next(shown)} but image {image_path} is {next(shown)}{hint}")


def _load_synthetic(source: str, kind: str, image_size: int, seed: int, n_train: int,
                    n_val: int, n_test: int = 0) -> SegmentationData:
    if n_train < 1 or n_val < 1 or n_test < 0:
        raise ValueError(f"synthetic data needs >= 1 training and validation image, got {n_train}, {n_val}")
    if kind == "volumes":
        n_train, n_val, image_size = max(1, n_train // 4), max(1, n_val // 4), max(16, image_size // 2)
        n_test = max(1, n_test // 4) if n_test else 0
    train_x, train_y = make_synthetic(n_train, image_size, seed, kind)
    val_x, val_y = make_synthetic(n_val, image_size, seed + VAL_SEED_OFFSET, kind)
    test_x, test_y = make_synthetic(n_test, image_size, seed + 2 * VAL_SEED_OFFSET, kind) if n_test else ([], [])
    train_images = list(torch.from_numpy(train_x).unbind(0))
    name = source.replace(":", "-")
    return SegmentationData(
        name=name,
        source=source,
        train_images=train_images,
        train_masks=list(torch.from_numpy(train_y).unbind(0)),
        val_images=list(torch.from_numpy(val_x).unbind(0)),
        val_masks=list(torch.from_numpy(val_y).unbind(0)),
        val_names=[f"{name}_{i:04d}" for i in range(n_val)],
        in_channels=1,
        normalization=compute_normalization(train_images),
        train_names=[f"{name}_train_{i:04d}" for i in range(n_train)],
        test_images=[torch.from_numpy(x) for x in test_x], test_masks=[torch.from_numpy(y) for y in test_y],
        test_names=[f"{name}_test_{i:04d}" for i in range(n_test)],
        test_note=f"test: {n_test} generated images (a third seed)" if n_test else "no test split",
        **({"num_classes": len(CLASS_NAMES), "class_names": CLASS_NAMES, "class_colours": CLASS_COLOURS}
           if kind == "classes" else {}),
    )


def _open(path: Path, what: str) -> Image.Image:
    """Decode ``path`` fully, turning any Pillow/OS failure into a one-line ``DataError``."""
    try:
        with Image.open(path) as handle:
            require_single_frame(handle, path, what)
            handle.load()
            # EXIF orientation applied, to images and masks alike (every reader comes here): the
            # pixels are the ones a viewer shows, so a rotated photo never meets an unrotated mask
            return ImageOps.exif_transpose(handle)
    except DataError:  # a stack or an animation: its own message
        raise
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).replace(f"'{path}'", "").replace(str(path), "").split())
        reason = reason.rstrip(" :") or type(exc).__name__
        raise DataError(f"cannot read {what} {path}: {reason}") from exc


def _read_image(path: Path) -> np.ndarray:
    """``(H, W, C)`` float32 in [0, 1], C = 1 (grey) or 3 (colour): alpha dropped, palettes expanded.

    Volumes (``.npy``, NIfTI) give ``(D, H, W, C)`` (see ``nas.data.volumes``)."""
    if volume_suffix(path):
        return read_volume(path)
    image = _open(path, "image")
    mode = image.mode
    if mode in ("1", "L", "LA", "P", "PA") and _is_grey(image):
        array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    elif mode in _WIDE_MODES:
        raw = np.asarray(image, dtype=np.float64)
        require_finite(raw, path)  # a NaN would min-max scale the whole image to zeros
        array = _scale_wide(raw, mode).astype(np.float32)
    else:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


def _is_grey(image: Image.Image) -> bool:
    """Grey modes are grey; a palette image is grey when every palette colour has R == G == B."""
    if image.mode not in ("P", "PA"):
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _scale_wide(array: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer grey -> [0, 1] by the 16-bit range; float grey kept if in [0, 1]; else min-max."""
    low, high = float(array.min()), float(array.max())
    if mode == "F" and 0.0 <= low and high <= 1.0:
        return array
    if mode != "F" and 0.0 <= low and high <= 65535.0:
        return array / 65535.0
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _read_mask(path: Path) -> np.ndarray:
    """``(H, W)`` float32 in {0, 1}; the file must hold only 0/255 or 0/1 (after conversion to grey).

    Anything else (a JPEG mask, a label map, a soft mask) is refused rather than thresholded, since
    a silent guess would corrupt the labels the search is scored on.
    """
    if volume_suffix(path):
        return read_volume_mask(path)
    image = _open(path, "mask")
    array = np.asarray(image) if image.mode in _WIDE_MODES else np.asarray(image.convert("L"))
    mask_alpha_problem(image, array, path)
    values = np.unique(array)
    present = set(values.tolist())
    if present <= {0, 1} or present <= {0, 255} or (image.mode in _WIDE_MODES and present <= {0, 65535}):
        return (array > 0).astype(np.float32)
    shown = ", ".join(str(v) for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
    raise DataError(f"mask {path} is not binary: values {shown} (expected only 0/255 or 0/1)")
