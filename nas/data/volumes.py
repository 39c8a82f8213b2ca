"""Volumes on disk: ``.npy`` (always) and NIfTI ``.nii`` / ``.nii.gz`` (needs the ``volumes`` extra, nibabel).

An image volume is ``(D, H, W)`` (grey) or ``(C, D, H, W)`` in the file and is returned as
``(D, H, W, C)`` float32 in [0, 1]: floats already in [0, 1] are kept, anything else is min-max
scaled per volume (CT/MRI intensities have no fixed range; the per-dataset normalization follows).
A mask volume must hold only 0/1 (or 0/255). Every problem is a ``DataError`` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nas.data.checks import require_finite
from nas.data.errors import DataError

VOLUME_SUFFIXES = (".npy", ".nii", ".nii.gz")


def volume_suffix(path: Path) -> str | None:
    """The volume suffix of ``path`` (``.nii.gz`` counts as one), or None for anything else."""
    name = path.name.lower()
    return next((s for s in (".nii.gz", ".nii", ".npy") if name.endswith(s)), None)


def _error(message: str) -> Exception:
    return DataError(message)


def _load(path: Path, what: str) -> np.ndarray:
    suffix = volume_suffix(path)
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        try:
            import nibabel
        except ImportError:
            raise _error(f"cannot read {what} {path}: NIfTI needs nibabel "
                         "(pip install 'resunet-nas[volumes]')") from None
        # NIfTI stores (x, y, z): reorder to (z, y, x) = (D, H, W) like the .npy convention.
        return np.asarray(nibabel.load(str(path)).dataobj).T
    except (OSError, ValueError, EOFError) as exc:
        reason = " ".join(str(exc).replace(str(path), "").split()).rstrip(" :") or type(exc).__name__
        raise _error(f"cannot read {what} {path}: {reason}") from exc


def read_volume(path: Path) -> np.ndarray:
    """``(D, H, W, C)`` float32 in [0, 1]."""
    array = _load(path, "image")
    if array.ndim == 3:
        array = array[None]
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise _error(f"image {path} holds {array.dtype} values; expected integer or float intensities "
                     "(a complex or boolean volume is not an image)")
    if array.ndim != 4:
        raise _error(f"image {path} has shape {array.shape} ({array.dtype}); expected (D, H, W) or (C, D, H, W)")
    array = array.astype(np.float64)
    require_finite(array, path)  # a NaN would make the min-max scaling all NaN
    low, high = float(array.min()), float(array.max())
    if not (0.0 <= low and high <= 1.0):
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.ascontiguousarray(np.moveaxis(array, 0, -1)).astype(np.float32)


def read_volume_labels(path: Path) -> np.ndarray:
    """``(D, H, W)`` float32 raw mask values (0/1, 0/255 or integer labels; ``nas.data.labels`` decides)."""
    array = _load(path, "mask")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise _error(f"mask {path} has shape {array.shape}; expected (D, H, W)")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise _error(f"mask {path} holds {array.dtype} values; expected integer labels")
    require_finite(array, path, "mask")
    return array.astype(np.float32)


def read_volume_mask(path: Path) -> np.ndarray:
    """``(D, H, W)`` float32 in {0, 1}; only 0/1 or 0/255 are accepted (FOV masks)."""
    array = read_volume_labels(path)
    values = np.unique(array)
    present = set(values.tolist())
    if present <= {0, 1} or present <= {0, 255}:
        return (array > 0).astype(np.float32)
    shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
    raise _error(f"mask {path} is not binary: values {shown} (expected only 0/255 or 0/1)")
