"""Segmenting volumes with a 3D checkpoint: sliding cubic windows, masks written as ``.npy`` or NIfTI.

The 3D counterpart of ``nas.train.inference.sliding_window_logits``, with the same rules: windows of
exactly the patch size (volumes smaller than it are zero-padded after normalization), a separable
Gaussian weight per window (sigma = side / 8), the blending denominator as three axis vectors, and
memory of one batch of windows plus the float32 output. A mask keeps its input's format: ``x.npy``
-> ``x.npy`` (uint8 (D, H, W): 0/1, or the class index for a K-class model); ``x.nii`` / ``x.nii.gz`` ->
``x.nii.gz`` with the input's affine and header, axes back in NIfTI's (x, y, z) order.
"""
from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.data.errors import DataError
from nas.data.normalization import Normalization
from nas.data.volumes import VOLUME_SUFFIXES, read_volume, volume_suffix
from nas.io import atomic_write_bytes
from nas.train.inference import MAX_OVERLAP, Predictor, _gaussian_1d, axis_weights, window_starts
from nas.train.labels import labels_from_logits


def volume_stem(path: Path) -> str:
    """``x.nii.gz`` -> ``x`` (``Path.stem`` would give ``x.nii``)."""
    suffix = volume_suffix(path) or path.suffix
    return path.name[: -len(suffix)] if suffix else path.name


def mask_name(path: Path) -> str:
    """The mask file name for an input volume: the same stem, ``.npy`` or ``.nii.gz``."""
    return f"{volume_stem(path)}.npy" if volume_suffix(path) == ".npy" else f"{volume_stem(path)}.nii.gz"


def list_volumes(source: Path) -> list[Path]:
    """The volume itself, or the folder's volumes sorted by name; ``DataError`` if none or stems collide."""
    if not source.exists():
        raise DataError(f"input {source} does not exist")
    if source.is_file():
        if volume_suffix(source) is None:
            raise DataError(f"input {source} is not a volume ({', '.join(VOLUME_SUFFIXES)}): the model is 3D")
        return [source]
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".") and volume_suffix(p))
    if not files:
        raise DataError(f"no volumes in {source} (looked for {', '.join(VOLUME_SUFFIXES)}): the model is 3D")
    seen: dict[str, Path] = {}
    for path in files:
        if volume_stem(path) in seen:
            raise DataError(f"two files with the stem {volume_stem(path)!r} in {source}: "
                            f"{seen[volume_stem(path)].name}, {path.name}")
        seen[volume_stem(path)] = path
    return files


def segment_volume(path: Path, predictor: Predictor, normalization: Normalization, *, patch_size: Sequence[int],
                   overlap: float, batch_size: int, device: torch.device | str | None,
                   threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``(volume (D, H, W, C) in [0, 1], labels (D, H, W) int64)`` for one volume file: 0/1 above the
    probability ``threshold`` (binary), the argmax for K classes (``labels_from_logits``)."""
    volume = read_volume(path)  # (D, H, W, C)
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, -1, 0)))  # (C, D, H, W)
    logits = volume_logits(predictor, tensor, normalization=normalization, patch_size=tuple(patch_size),
                           overlap=overlap, batch_size=batch_size, device=device)
    return volume, labels_from_logits(logits, threshold, spatial_dims=3).numpy()[0]


def _device(predictor: Predictor, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(predictor, nn.Module):
        return next((t.device for t in (*predictor.parameters(), *predictor.buffers())), torch.device("cpu"))
    return torch.device("cpu")


def volume_logits(predictor: Predictor, volume: torch.Tensor, *, normalization: Normalization,
                  patch_size: int | Sequence[int], overlap: float = 0.5, batch_size: int = 2,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Blended logits ``(out, D, H, W)`` float32 on CPU for a raw ``(C, D, H, W)`` volume in [0, 1]."""
    if volume.dim() != 4:
        raise ValueError(f"volume must be (C, D, H, W), got shape {tuple(volume.shape)}")
    if not 0.0 <= overlap <= MAX_OVERLAP:
        raise ValueError(f"overlap must be in [0, {MAX_OVERLAP}], got {overlap}")
    patch = (int(patch_size),) * 3 if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
    if len(patch) != 3 or min(patch) < 1 or batch_size < 1:
        raise ValueError(f"need a positive (D, H, W) patch and batch size, got {patch_size!r}, {batch_size}")
    sides = tuple(volume.shape[1:])
    device = _device(predictor, device)
    weight = (_gaussian_1d(patch[0])[:, None, None] * _gaussian_1d(patch[1])[None, :, None]
              * _gaussian_1d(patch[2])[None, None, :]).to(device)  # (P_d, P_h, P_w)
    corners = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(sides, patch))))
    output: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(corners), batch_size):
            chunk = corners[start:start + batch_size]
            crops = []
            for corner in chunk:
                crop = volume[(slice(None), *(slice(c, c + p) for c, p in zip(corner, patch)))]
                crop = normalization.apply(crop.to(device=device, dtype=torch.float32), spatial_dims=3)
                pad = [amount for p, s in zip(reversed(patch), reversed(crop.shape[1:])) for amount in (0, p - s)]
                crops.append(F.pad(crop, pad))
            logits = predictor(torch.stack(crops))  # (N, out, P_d, P_h, P_w)
            if logits.dim() != 5 or tuple(logits.shape[2:]) != patch or logits.shape[0] != len(chunk):
                raise ValueError(f"predictor returned shape {tuple(logits.shape)} for {len(chunk)} window(s) "
                                 f"of {'x'.join(map(str, patch))}")
            weighted = (torch.as_tensor(logits).float() * weight).cpu()
            if output is None:
                output = torch.zeros(logits.shape[1], *sides)
            for corner, window in zip(chunk, weighted):
                size = [min(p, s - c) for p, s, c in zip(patch, sides, corner)]
                target = (slice(None), *(slice(c, c + n) for c, n in zip(corner, size)))
                output[target] += window[(slice(None), *(slice(0, n) for n in size))]
    assert output is not None
    for axis, (side, p) in enumerate(zip(sides, patch)):
        shape = [1, 1, 1, 1]
        shape[axis + 1] = side
        output /= axis_weights(side, p, overlap).view(shape)
    return output


def write_volume_mask(source: Path, mask: np.ndarray, target: Path) -> Path:
    """Write ``mask`` ((D, H, W) bool or class indices) beside nothing else, atomically, in ``source``'s format."""
    data = mask.astype(np.uint8)
    buffer = io.BytesIO()
    if volume_suffix(source) == ".npy":
        np.save(buffer, data, allow_pickle=False)
    else:
        import nibabel

        image = nibabel.load(str(source))
        header = image.header.copy()
        header.set_data_dtype(np.uint8)
        nifti = nibabel.Nifti1Image(data.T, image.affine, header)  # (D, H, W) -> NIfTI's (x, y, z)
        buffer.write(nifti.to_bytes() if str(target).endswith(".nii") else _gzip(nifti.to_bytes()))
    return atomic_write_bytes(target, buffer.getvalue())


def _gzip(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw, mtime=0)
