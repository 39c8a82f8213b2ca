"""Segmentation data: the built-in synthetic task or a folder of ``images/`` + ``masks/``.

Everything is held in memory as full-resolution tensors: the datasets we search on are small, and
the trainer crops random patches (``iterate_train_batches``) and validates on whole images. Data
problems raise ``DataError`` with a one-line message naming the file or folder, so the CLI can show
it as is; ``check_data_source`` finds layout problems before a run writes anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from .synthetic import SYNTHETIC_NAME, make_synthetic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VAL_SEED_OFFSET = 1_000_003  # synthetic validation images come from a different seed than training
_STD_FLOOR = 1e-6
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16/32-bit and float grey (microscopy TIFFs)


class DataError(ValueError):
    """Bad data input; the message is one line and names the file or folder."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean/std, computed on the training split; stored with checkpoints."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"Normalization needs one mean and one std per channel: {self.mean}, {self.std}")

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` (or ``(C, H, W)``) in [0, 1] -> zero mean, unit std per channel."""
        channels = images.shape[-3]
        if channels != len(self.mean):
            raise ValueError(f"images have {channels} channel(s), normalization has {len(self.mean)}")
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images - mean) / std


@dataclass
class SegmentationData:
    """A train/val split held in memory at full resolution (sizes may differ between images)."""

    name: str  # "synthetic" or the folder's name
    source: str  # what the user passed ("synthetic" or the path)
    train_images: list[torch.Tensor]  # each (C, H, W) float32 in [0, 1]
    train_masks: list[torch.Tensor]  # each (1, H, W) float32 in {0, 1}
    val_images: list[torch.Tensor]
    val_masks: list[torch.Tensor]
    val_names: list[str]  # stems (synthetic: "synthetic_0007")
    in_channels: int
    normalization: Normalization
    train_names: list[str] = field(default_factory=list)  # stems, for error messages and reports


# ---------------------------------------------------------------------------------------------
# Checking the layout (cheap: lists files, decodes nothing)


def check_data_source(source: str) -> None:
    """Raise ``DataError`` unless ``source`` is ``"synthetic"`` or a folder with matching images/masks."""
    if _is_synthetic(source):
        return
    _list_pairs(Path(source))


def _is_synthetic(source: str) -> bool:
    text = str(source)
    if text == SYNTHETIC_NAME:
        return True
    if text.startswith(SYNTHETIC_NAME + ":"):
        raise DataError(f"unknown synthetic dataset {text!r}: the only built-in one is {SYNTHETIC_NAME!r}")
    return False


def _list_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(stem, image, mask)`` for every image, sorted by stem; every layout problem is a ``DataError``."""
    if not folder.exists():
        raise DataError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"data source {folder} is not a folder (expected a folder with images/ and masks/)")
    for sub in ("images", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"data folder {folder} has no {sub}/ folder{_layout_hint(folder)}")
    images = _files_by_stem(folder / "images")
    masks = _files_by_stem(folder / "masks")
    if not images:
        raise DataError(f"no images in {folder / 'images'} (looked for {', '.join(IMAGE_SUFFIXES)})")
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(f"image {path} has no mask in {folder / 'masks'} (expected the stem {stem!r})")
    for stem, path in masks.items():
        if stem not in images:
            raise DataError(f"mask {path} has no image in {folder / 'images'} (expected the stem {stem!r})")
    if len(images) < 2:
        raise DataError(f"data folder {folder} has 1 image; need at least 2 (training and validation)")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem; hidden files and other suffixes are ignored."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            first = found[path.stem].name
            raise DataError(f"two files with the stem {path.stem!r} in {folder}: {first}, {path.name}")
        found[path.stem] = path
    return found


def _layout_hint(folder: Path) -> str:
    """Point at a split subfolder (e.g. ``train/``) when the user passed the dataset's root."""
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
    synthetic_train: int = 96,
    synthetic_val: int = 32,
) -> SegmentationData:
    """Load ``source`` into memory and split it.

    ``"synthetic"``: ``synthetic_train`` + ``synthetic_val`` generated images of ``image_size`` px
    (validation from a derived seed, so it is not a copy of training). A folder: every image at its
    own resolution (``image_size`` is not used), split by a ``seed``-shuffle into
    ``max(1, round(val_fraction * n))`` validation images and the rest for training.
    """
    if _is_synthetic(source):
        return _load_synthetic(str(source), image_size, seed, synthetic_train, synthetic_val)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    folder = Path(source)
    pairs = _list_pairs(folder)

    stems, images, masks = [], [], []
    first: tuple[Path, int] | None = None
    for stem, image_path, mask_path in pairs:
        image = _read_image(image_path)  # (H, W, C) float32
        mask = _read_mask(mask_path)  # (H, W) float32
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        if first is None:
            first = (image_path, image.shape[2])
        elif image.shape[2] != first[1]:
            raise DataError(
                f"image {image_path} has {image.shape[2]} channel(s) but {first[0]} has {first[1]}; "
                f"all images in {folder / 'images'} must have the same number"
            )
        stems.append(stem)
        images.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        masks.append(torch.from_numpy(mask)[None])

    order = np.random.default_rng(seed).permutation(len(stems))
    n_val = min(len(stems) - 1, max(1, round(val_fraction * len(stems))))
    val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
    train_images = [images[i] for i in train_idx]
    return SegmentationData(
        name=folder.resolve().name,
        source=str(source),
        train_images=train_images,
        train_masks=[masks[i] for i in train_idx],
        val_images=[images[i] for i in val_idx],
        val_masks=[masks[i] for i in val_idx],
        val_names=[stems[i] for i in val_idx],
        in_channels=first[1],
        normalization=compute_normalization(train_images),
        train_names=[stems[i] for i in train_idx],
    )


def _load_synthetic(source: str, image_size: int, seed: int, n_train: int, n_val: int) -> SegmentationData:
    if n_train < 1 or n_val < 1:
        raise ValueError(f"synthetic data needs >= 1 training and validation image, got {n_train}, {n_val}")
    train_x, train_y = make_synthetic(n_train, image_size, seed)
    val_x, val_y = make_synthetic(n_val, image_size, seed + VAL_SEED_OFFSET)
    train_images = list(torch.from_numpy(train_x).unbind(0))
    return SegmentationData(
        name=SYNTHETIC_NAME,
        source=source,
        train_images=train_images,
        train_masks=list(torch.from_numpy(train_y).unbind(0)),
        val_images=list(torch.from_numpy(val_x).unbind(0)),
        val_masks=list(torch.from_numpy(val_y).unbind(0)),
        val_names=[f"{SYNTHETIC_NAME}_{i:04d}" for i in range(n_val)],
        in_channels=1,
        normalization=compute_normalization(train_images),
        train_names=[f"{SYNTHETIC_NAME}_train_{i:04d}" for i in range(n_train)],
    )


def _open(path: Path, what: str) -> Image.Image:
    """Decode ``path`` fully, turning any Pillow/OS failure into a one-line ``DataError``."""
    try:
        with Image.open(path) as handle:
            handle.load()
            return handle.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).replace(f"'{path}'", "").replace(str(path), "").split())
        reason = reason.rstrip(" :") or type(exc).__name__
        raise DataError(f"cannot read {what} {path}: {reason}") from exc


def _read_image(path: Path) -> np.ndarray:
    """``(H, W, C)`` float32 in [0, 1], C = 1 (grey) or 3 (colour): alpha dropped, palettes expanded."""
    image = _open(path, "image")
    mode = image.mode
    if mode in ("1", "L", "LA", "P", "PA") and _is_grey(image):
        array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    elif mode in _WIDE_MODES:
        array = _scale_wide(np.asarray(image, dtype=np.float64), mode).astype(np.float32)
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
    image = _open(path, "mask")
    array = np.asarray(image) if image.mode in _WIDE_MODES else np.asarray(image.convert("L"))
    values = np.unique(array)
    present = set(values.tolist())
    if present <= {0, 1} or present <= {0, 255} or (image.mode in _WIDE_MODES and present <= {0, 65535}):
        return (array > 0).astype(np.float32)
    shown = ", ".join(str(v) for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
    raise DataError(f"mask {path} is not binary: values {shown} (expected only 0/255 or 0/1)")


def compute_normalization(images: list[torch.Tensor]) -> Normalization:
    """Per-channel mean and std over every pixel of ``images`` (two passes, float64; std >= 1e-6)."""
    count = sum(image[0].numel() for image in images)
    total = sum(image.double().sum(dim=(1, 2)) for image in images)
    mean = total / count
    squares = sum(((image.double() - mean.view(-1, 1, 1)) ** 2).sum(dim=(1, 2)) for image in images)
    std = (squares / count).sqrt().clamp_min(_STD_FLOOR)
    return Normalization(mean=tuple(mean.tolist()), std=tuple(std.tolist()))


# ---------------------------------------------------------------------------------------------
# Training batches


def iterate_train_batches(
    data: SegmentationData,
    *,
    patch_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    patches_per_epoch: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images (B, C, P, P), masks (B, 1, P, P))``, raw in [0, 1]; the trainer normalises.

    ``P = min(patch_size, smallest training side)``. Images are visited in shuffled passes (each
    once per pass) until ``patches_per_epoch`` patches (default: one per training image); each patch
    is a random crop with random flips and a random 90-degree rotation. All randomness is drawn up
    front from ``(seed, epoch)``, so the patches do not depend on ``batch_size``.
    """
    if patch_size < 1 or batch_size < 1:
        raise ValueError(f"patch_size and batch_size must be >= 1, got {patch_size}, {batch_size}")
    images, masks = data.train_images, data.train_masks
    if not images:
        raise ValueError(f"dataset {data.name} has no training images")
    total = len(images) if patches_per_epoch is None else int(patches_per_epoch)
    if total < 0:
        raise ValueError(f"patches_per_epoch must be >= 0, got {patches_per_epoch}")
    patch = min(patch_size, min(min(image.shape[-2:]) for image in images))

    rng = np.random.default_rng([seed, epoch])
    passes = -(-total // len(images))
    order = np.concatenate([rng.permutation(len(images)) for _ in range(passes)])[:total] if total else []
    corner = rng.random((total, 2))  # fraction of the free range, scaled per image below
    flips = rng.integers(0, 2, (total, 2))
    turns = rng.integers(0, 4, total)

    for start in range(0, total, batch_size):
        batch_x, batch_y = [], []
        for k in range(start, min(start + batch_size, total)):
            image, mask = images[order[k]], masks[order[k]]
            height, width = image.shape[-2:]
            top = int(corner[k, 0] * (height - patch + 1))
            left = int(corner[k, 1] * (width - patch + 1))
            pair = torch.cat([image[:, top:top + patch, left:left + patch],
                              mask[:, top:top + patch, left:left + patch]])  # (C+1, P, P)
            dims = [d for d, flip in zip((1, 2), flips[k]) if flip]
            if dims:
                pair = torch.flip(pair, dims)
            if turns[k]:
                pair = torch.rot90(pair, int(turns[k]), dims=(1, 2))
            batch_x.append(pair[:-1])
            batch_y.append(pair[-1:])
        yield torch.stack(batch_x), torch.stack(batch_y)
