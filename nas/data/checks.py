"""Checks that catch data which would load fine and then give a silently wrong answer.

Each raises ``DataError`` with one line naming the file or split (the CLIs exit 2 with it):

* ``require_finite``: a NaN or infinite pixel (a float TIFF, a volume) would be min-max scaled into
  an all-zero (or all-NaN) image without a word; refused, naming the file and the first bad pixel.
* ``mask_alpha_problem``: a mask whose foreground is drawn only in its alpha channel reads as empty
  once converted to grey; refused unless the alpha agrees with the grey values.
* ``require_min_side``: an image under ``MIN_SIDE`` px on a side is not an image to segment (a 1x1-pixel
  dataset "trained" and exported a Dice 1.000 model). Between that and the 8 px the shallowest
  architecture needs for a 2 px bridge, the per-trial depth check (``nas.engine.policy``) prunes.
* ``require_foreground``: a split whose masks have no foreground at all cannot rank models (a model
  that predicts nothing scores best), nor one whose masks are foreground everywhere (a model that
  predicts everything does: inverted masks); refused for the training and validation splits.
* ``require_nonempty_fov``: a field-of-view mask with nothing inside.
* ``require_single_frame``: a multi-page TIFF (a stack) or an animated GIF would be read as its first
  frame only.

``data_fingerprint`` hashes what was loaded (names, shapes and the decoded pixels of every split),
so a resume on data whose content changed (masks inverted, images added) is refused, not mixed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas.data.errors import DataError

MIN_SIDE = 4  # px: below this even depth 3 (the shallowest) would pool a side to under 1 px
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def require_finite(array: np.ndarray, path: Path, what: str = "image") -> None:
    """Refuse a NaN or infinite value; the message counts them and names the first one's position."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    first = np.argwhere(bad)[0].tolist()
    kinds = "/".join(k for k, hit in (("NaN", np.isnan(array).any()), ("infinite", np.isinf(array).any())) if hit)
    raise DataError(f"{what} {path} has {int(bad.sum())} {kinds} value(s) (first at index {first}): "
                    "fix or remove the file (non-finite pixels are never guessed)")


def mask_alpha_problem(image: Any, grey: np.ndarray, path: Path) -> None:
    """Refuse a mask (a Pillow image with an alpha band) whose alpha disagrees with its grey values.

    ``grey`` is the mask converted to grey. Fully opaque masks and masks whose transparent pixels are
    exactly their background pass; anything else means the foreground lives in the alpha channel.
    """
    if image.mode not in _ALPHA_MODES:
        return
    alpha = np.asarray(image.getchannel("A"))
    if alpha.min() == alpha.max() or np.array_equal(alpha > 0, grey > 0):
        return
    raise DataError(f"mask {path} has transparency that disagrees with its grey values ({int((alpha > 0).sum())} "
                    f"opaque pixels, {int((grey > 0).sum())} foreground pixels): the foreground must be drawn "
                    "as grey 255 (or 1), not only in the alpha channel; save the mask without alpha")


def require_min_side(shape: Sequence[int], path: Path) -> None:
    """Refuse an image (spatial ``shape``) with a side under ``MIN_SIDE`` px."""
    if min(shape) < MIN_SIDE:
        size = "x".join(str(s) for s in reversed(tuple(shape)))
        raise DataError(f"image {path} is {size} px; images need at least {MIN_SIDE} px per side "
                        "(the shallowest architecture halves a side twice on the way to its bridge)")


def _has_foreground(mask: Any, fov: Any | None) -> bool:
    inside = mask > 0.5
    if fov is not None:
        inside = inside & (fov > 0.5)
    return bool(inside.any())


def _all_foreground(mask: Any, fov: Any | None) -> bool:
    background = mask <= 0.5
    if fov is not None:
        background = background & (fov > 0.5)
    return not bool(background.any()) and (fov is None or bool((fov > 0.5).any()))


def require_nonempty_fov(fov: np.ndarray, fov_path: Path, image_path: Path) -> None:
    """Refuse a field-of-view mask with no pixel inside: the image would be neither trained on nor scored."""
    if not fov.any():
        raise DataError(f"FOV mask {fov_path} is empty: no pixel of {image_path} would be trained on or scored "
                        "(the field of view must be 255 or 1)")


def require_single_frame(image: Any, path: Path, what: str) -> None:
    """Refuse a Pillow image with several frames (a TIFF stack, an animated GIF)."""
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > 1:
        raise DataError(f"{what} {path} holds {frames} frames (a stack or an animation) and only the first would be "
                        "read: save one image per file, or a volume as .npy / NIfTI")


def require_foreground(split: str, names: Sequence[str], masks: Sequence[Any], fovs: Sequence[Any],
                       where: str) -> None:
    """Refuse a split none of whose masks has a foreground pixel, or a background pixel (inside the FOV)."""
    if not masks:
        return
    shown = ", ".join(list(names)[:3]) + (", ..." if len(names) > 3 else "")
    if all(_all_foreground(m, fovs[i] if fovs else None) for i, m in enumerate(masks)):
        raise DataError(f"every pixel of the {len(masks)} {split} mask(s) of {where} ({shown}) is foreground: "
                        "predicting everything would score best (inverted masks?); the background must be 0")
    if any(_has_foreground(m, fovs[i] if fovs else None) for i, m in enumerate(masks)):
        return
    if split == "train":
        raise DataError(f"no training mask in {where} has a foreground pixel ({len(masks)} masks, all empty: "
                        f"{shown}): there is nothing to segment; the foreground must be 255 (or 1) in the masks")
    raise DataError(f"the {len(masks)} {split} image(s) of {where} ({shown}) have no foreground pixel: Dice "
                    "cannot rank models on them (predicting nothing would score best); add annotated images "
                    "or change --val-fraction / --seed")


def data_fingerprint(data: Any) -> str:
    """Hex digest of every split's names, shapes and decoded pixels (images, masks, FOVs).

    Hashes the tensors already in memory (about 1 GB/s), so thousands of images cost seconds and
    no file is read twice; the same files, decoded the same way, always give the same digest.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"channels={data.in_channels};".encode())
    if getattr(data, "num_classes", 2) != 2:  # binary data keeps the digest it always had
        digest.update(f"classes={','.join(data.class_names)};".encode())
    for split in ("train", "val", "test"):
        names = getattr(data, f"{split}_names") or []
        images, masks, fovs = (getattr(data, f"{split}_{kind}") for kind in ("images", "masks", "fovs"))
        digest.update(f"[{split}:{len(images)}]".encode())
        for index, image in enumerate(images):
            name = names[index] if index < len(names) else str(index)
            digest.update(f"{name}:{tuple(image.shape)};".encode())
            for tensor in (image, masks[index], *(fovs[index:index + 1] if fovs else ())):
                digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()))
    return digest.hexdigest()
