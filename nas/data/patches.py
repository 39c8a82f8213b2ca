"""Training patches: random (optionally foreground-centred) crops with flips, 90-degree rotations and
optional brightness/contrast and elastic augmentation, batched without per-pixel Python work.

Crop, flip and rotation are one gather: the source coordinates of every output pixel come from 16
precomputed ``(flip_y, flip_x, turns)`` coordinate grids, so a batch costs one indexing op when the
training images share a size (else one per patch). The base draws (order, corner, flips, turns) use
the same generator and order as the first release, so default batches are unchanged; the optional
extras draw from their own generator.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from nas.data.loading import SegmentationData

_ELASTIC_KNOTS = 5  # coarse displacement grid per side, upsampled smoothly to the patch


def patch_side(data: SegmentationData, patch_size: int) -> int:
    """The side a training patch really has: ``patch_size``, or the smallest training side if smaller."""
    return min(patch_size, min(min(image.shape[1:]) for image in data.train_images))


def epoch_patches(data: SegmentationData, patch_size: int) -> int:
    """Patches in one default epoch: the training images' area (volume) once, at least one per image.

    ``ceil(sum of training areas / patch area)``: one patch per image undersamples large images (20
    epochs of 96 px patches on 565 x 584 images show the network about 3 % of the pixels, 20 times).
    """
    side = patch_side(data, patch_size)
    return max(len(data.train_images), -(-_train_pixels(data) // side ** data.spatial_dims))


def _train_pixels(data: SegmentationData) -> int:
    return sum(math.prod(image.shape[1:]) for image in data.train_images)


def describe_epoch(data: SegmentationData, patch_size: int, override: int | None = None) -> str:
    """One line for the run header: how many patches an epoch has, and why."""
    if override is not None:
        return f"epoch: {override} patch(es) (--patches-per-epoch)"
    side, count = patch_side(data, patch_size), epoch_patches(data, patch_size)
    return (f"epoch: {count} patches of {side} px = the {len(data.train_images)} training images' "
            f"{_train_pixels(data):,} px "
            "once (at least one patch per image; --patches-per-epoch overrides)")


SPARSE_FOREGROUND = 0.2  # below this share of foreground training pixels the header suggests centring patches


def foreground_share(data: SegmentationData) -> float:
    """Foreground (label > 0) pixels over all training pixels, inside the FOV where there is one."""
    fovs = data.train_fovs or [None] * len(data.train_masks)
    inside = [mask > 0 if fov is None else (mask > 0) & (fov > 0) for mask, fov in zip(data.train_masks, fovs)]
    total = sum(int(fov.sum()) if fov is not None else mask.numel() for mask, fov in zip(data.train_masks, fovs))
    return sum(int(part.sum()) for part in inside) / max(total, 1)


def describe_foreground(data: SegmentationData, foreground_fraction: float) -> str:
    """One line for the run header: how sparse the foreground is and how patches are placed.

    Uniform patches of sparse data are mostly background; on the CVC polyp sample centring half of
    them on foreground raised test Dice (benchmarks/RESULTS.md, "Recipe defaults"). The default stays
    uniform (the synthetic default task keeps its front), so the header says when to change it.
    """
    share = foreground_share(data)
    line = f"foreground: {share:.1%} of training pixels; {foreground_fraction:g} of patches centred on it"
    if foreground_fraction == 0 and share < SPARSE_FOREGROUND:
        line += (f" (sparse: under {SPARSE_FOREGROUND:.0%}; consider --foreground-fraction 0.5, "
                 "which helped on sparse real data: benchmarks/RESULTS.md)")
    return line


def iterate_train_batches(
    data: SegmentationData,
    *,
    patch_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    patches_per_epoch: int | None = None,
    foreground_fraction: float = 0.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
    elastic: float = 0.0,
    with_fov: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``(images (B, C, P, P), masks (B, 1, P, P))`` raw in [0, 1] (the trainer normalises),
    plus ``fovs (B, 1, P, P)`` when ``with_fov`` (ones where the data has no FOV masks).

    ``P = min(patch_size, smallest training side)``. Images are visited in shuffled passes (each
    once per pass) until ``patches_per_epoch`` patches (default: one per training image). A patch is
    a random crop, or with probability ``foreground_fraction`` one centred on a random foreground
    pixel (clamped to the image; label maps: a class present in the image first, uniformly); then random flips and a random 90-degree rotation; then, when
    set, contrast ``* U(1 - contrast, 1 + contrast)`` about the patch mean, brightness
    ``+ U(-brightness, brightness)`` (clamped to [0, 1]) and an elastic warp with a smooth random
    displacement of up to ``elastic`` px. Randomness comes from ``(seed, epoch)`` only, so patches do
    not depend on ``batch_size``. Volumes ``(C, D, H, W)`` get cubic patches (flips on every axis,
    rotations in the H-W plane; no elastic warp).
    """
    if patch_size < 1 or batch_size < 1:
        raise ValueError(f"patch_size and batch_size must be >= 1, got {patch_size}, {batch_size}")
    if not 0.0 <= foreground_fraction <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
    images, masks = data.train_images, data.train_masks
    if not images:
        raise ValueError(f"dataset {data.name} has no training images")
    total = len(images) if patches_per_epoch is None else int(patches_per_epoch)
    if total < 0:
        raise ValueError(f"patches_per_epoch must be >= 0, got {patches_per_epoch}")
    spatial = images[0].dim() - 1
    patch = patch_side(data, patch_size)

    rng = np.random.default_rng([seed, epoch])
    passes = -(-total // len(images))
    order = np.concatenate([rng.permutation(len(images)) for _ in range(passes)])[:total] if total else []
    corner = rng.random((total, spatial))  # fraction of the free range, scaled per image below
    flips = rng.integers(0, 2, (total, spatial))
    turns = rng.integers(0, 4, total)
    extra = np.random.default_rng([seed, epoch, 1])  # optional extras: base draws stay unchanged
    centred = extra.random(total) < foreground_fraction
    pick = extra.random(total)

    fovs = data.train_fovs
    sizes = {tuple(image.shape[1:]) for image in images}
    stacked = None
    if spatial == 2 and len(sizes) == 1:
        parts = [torch.stack(images), torch.stack(masks)] + ([torch.stack(fovs)] if with_fov and fovs else [])
        stacked = torch.cat(parts, 1)  # (N, C + 1 [+ 1], H, W)
    grids = _transform_grids(patch) if spatial == 2 else None
    foreground: dict[int, torch.Tensor] = {}
    for start in range(0, total, batch_size):
        ks = range(start, min(start + batch_size, total))
        corners = [_corner(k, order, corner, centred, pick, masks, foreground, patch, data.num_classes > 2)
                   for k in ks]
        if spatial == 3:
            pairs = [_volume_patch(_pair(int(order[k]), images, masks, fovs, with_fov), c, patch, flips[k],
                                   int(turns[k])) for k, c in zip(ks, corners)]
            batch = torch.stack(pairs)  # (B, C + 1 [+ 1], P, P, P)
        else:
            sel = slice(ks.start, ks.stop)
            combo = torch.as_tensor(flips[sel, 0] * 8 + flips[sel, 1] * 4 + turns[sel])
            grid = grids.view(16, 2, patch, patch).index_select(0, combo)  # (B, 2, P, P)
            tops = torch.tensor([c[0] for c in corners]).view(-1, 1, 1)
            lefts = torch.tensor([c[1] for c in corners]).view(-1, 1, 1)
            rows, cols = grid[:, 0] + tops, grid[:, 1] + lefts  # (B, P, P) source pixel coordinates
            if stacked is not None:  # one flat gather: ~10x faster than mixed advanced indexing
                n, planes, height, width = stacked.shape
                index = torch.as_tensor(order[sel]).view(-1, 1, 1, 1)
                plane = torch.arange(planes).view(1, -1, 1, 1)
                flat = ((index * planes + plane) * height + rows[:, None]) * width + cols[:, None]
                batch = torch.take(stacked, flat)  # (B, C + 1 [+ 1], P, P)
            else:
                batch = torch.stack([_pair(int(order[k]), images, masks, fovs, with_fov)[:, r, c]
                                     for k, r, c in zip(ks, rows, cols)])
        channels = images[0].shape[0]
        x, y = batch[:, :channels], batch[:, channels:channels + 1]  # (B, C, *P), (B, 1, *P)
        fov = batch[:, channels + 1:] if with_fov and fovs else torch.ones_like(y)
        if contrast or brightness:
            x = _intensity(x, extra, contrast, brightness)
        if elastic and spatial == 2:
            x, y, fov = _elastic(x, y, fov, extra, elastic)
        yield (x.contiguous(), y.contiguous(), fov.contiguous()) if with_fov else (x.contiguous(), y.contiguous())


def _pair(index: int, images, masks, fovs, with_fov: bool) -> torch.Tensor:
    parts = [images[index], masks[index]] + ([fovs[index]] if with_fov and fovs else [])
    return torch.cat(parts)  # (C + 1 [+ 1], *S)


def _corner(k, order, corner, centred, pick, masks, foreground, patch, multiclass=False) -> tuple[int, ...]:
    """Patch origin: the first release's random corner, or centred on a foreground pixel. With label
    maps the class comes first, uniform over the classes present in the image, then a pixel of it,
    so a rare class is centred as often as a common one (one draw serves both: its integer part
    picks the class, its fraction the pixel)."""
    index = int(order[k])
    shape = masks[index].shape[1:]
    if centred[k]:
        if index not in foreground:
            label = masks[index][0]
            foreground[index] = ([torch.nonzero(label == value) for value in torch.unique(label[label > 0]).tolist()]
                                 if multiclass else [torch.nonzero(label > 0.5)])  # per class: (n, spatial)
        classes, draw = foreground[index], float(pick[k])
        if multiclass and classes:
            chosen = min(int(draw * len(classes)), len(classes) - 1)
            points, draw = classes[chosen], draw * len(classes) - chosen
        else:
            points = classes[0] if classes else torch.zeros(0)
        if len(points):
            centre = points[min(int(draw * len(points)), len(points) - 1)].tolist()
            return tuple(min(max(c - patch // 2, 0), s - patch) for c, s in zip(centre, shape))
    return tuple(int(f * (s - patch + 1)) for f, s in zip(corner[k], shape))


def _transform_grids(patch: int) -> torch.Tensor:
    """``(2, 2, 4, 2, P, P)``: for (flip_y, flip_x, turns), the source (row, col) of each output pixel,
    i.e. what ``torch.flip`` then ``torch.rot90(dims=(1, 2))`` do to a ``(C, P, P)`` patch."""
    axis = torch.arange(patch)
    base = torch.stack(torch.meshgrid(axis, axis, indexing="ij"))  # (2, P, P)
    grids = torch.empty(2, 2, 4, 2, patch, patch, dtype=torch.long)
    for fy in range(2):
        for fx in range(2):
            dims = [d for d, flip in zip((1, 2), (fy, fx)) if flip]
            flipped = torch.flip(base, dims) if dims else base
            for k in range(4):
                grids[fy, fx, k] = torch.rot90(flipped, k, dims=(1, 2)) if k else flipped
    return grids


def _volume_patch(volume: torch.Tensor, origin, patch: int, flips, turns: int) -> torch.Tensor:
    d, h, w = origin
    cube = volume[:, d:d + patch, h:h + patch, w:w + patch]  # (C', P, P, P)
    dims = [axis for axis, flip in zip((1, 2, 3), flips) if flip]
    if dims:
        cube = torch.flip(cube, dims)
    return torch.rot90(cube, turns, dims=(2, 3)) if turns else cube


def _intensity(x: torch.Tensor, rng: np.random.Generator, contrast: float, brightness: float) -> torch.Tensor:
    """Per-patch contrast about the patch mean, then brightness shift, clamped to [0, 1]."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    gain = torch.from_numpy(rng.uniform(1 - contrast, 1 + contrast, x.shape[0])).float().view(shape)
    shift = torch.from_numpy(rng.uniform(-brightness, brightness, x.shape[0])).float().view(shape)
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return ((x - mean) * gain + mean + shift).clamp_(0.0, 1.0)


def _elastic(x, y, fov, rng: np.random.Generator, strength: float):
    """Smooth random warp (bicubic-upsampled coarse noise) of up to ``strength`` px; masks nearest."""
    batch, _, height, width = x.shape
    coarse = torch.from_numpy(rng.uniform(-1, 1, (batch, 2, _ELASTIC_KNOTS, _ELASTIC_KNOTS))).float()
    shift = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)  # (B, 2, H, W)
    shift = shift.clamp(-1, 1) * strength * 2 / torch.tensor([width, height]).view(1, 2, 1, 1)
    theta = torch.eye(2, 3).expand(batch, 2, 3)
    grid = F.affine_grid(theta, (batch, 1, height, width), align_corners=False) + shift.permute(0, 2, 3, 1)
    def warp(t: torch.Tensor, mode: str) -> torch.Tensor:
        return F.grid_sample(t, grid, mode=mode, padding_mode="reflection", align_corners=False)
    return warp(x, "bilinear"), warp(y, "nearest"), warp(fov, "nearest")
