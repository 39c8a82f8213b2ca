"""Segmentation quality on the foreground class, per image (inside the FOV when given), then the mean.

Pure numpy/torch (no scipy), 2-D or 3-D. Conventions, stated once so every report means the same:

- Dice (= F1), IoU, precision, sensitivity, specificity: a ratio whose denominator is 0 scores 1.0
  when prediction and ground truth are both empty (nothing to find, nothing found), else 0.0.
- Empty ground truth: an image with no foreground (inside the FOV) is left out of the mean Dice, IoU
  and sensitivity (``foreground_mean``), so "empty vs empty" can never make a model that predicts
  nothing look best; its false positives still count in precision, specificity and HD95. The count
  of such images is ``empty_truth_images``. A split with no foreground at all is refused when the
  data is loaded (``nas.data.checks``); ``foreground_mean`` of it is 0.0, never 1.0.
- HD95 (px): ``max(p95(d(pred -> gt)), p95(d(gt -> pred)))`` over boundary pixels (a mask pixel with
  a background 8/26-neighbour; outside the image counts as background), Euclidean. Both empty: 0.
  Exactly one empty: the image diagonal (the worst possible), so missing everything never looks good.
- Size strata: 8-connected (3-D: 26-connected) components of the ground truth, sized by their
  *equivalent diameter* ``2 * sqrt(area / pi)`` (3-D: of the equal-volume sphere), in px:
  small < 8, medium 8-32, large > 32. A component is *detected* when at least
  ``DETECTION_OVERLAP`` of its pixels are predicted foreground. A stratum's Dice is computed inside
  its *neighbourhood*: the stratum's components dilated by ``NEIGHBOURHOOD_PX`` (a square/cube,
  Chebyshev distance), inside the FOV; prediction and ground truth are both restricted to it.
- Aggregation: per-pixel metrics are the mean over images (HD95 too; Dice, IoU and sensitivity over
  the images with foreground). A stratum's ``count`` is its
  number of components over all images, ``detected`` the fraction of them detected (pooled: an
  image with 50 blobs weighs more than one with 1), ``dice`` the mean over images that have at
  least one component in it. A value that is undefined (no components) is ``None``, never NaN.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

STRATA = (("small", 0.0, 8.0), ("medium", 8.0, 32.0), ("large", 32.0, math.inf))  # [low, high) px
DETECTION_OVERLAP = 0.5
NEIGHBOURHOOD_PX = 3
PIXEL_METRICS = ("dice", "iou", "precision", "sensitivity", "specificity", "hd95")
FOREGROUND_METRICS = ("dice", "iou", "sensitivity")  # undefined on an empty truth: over images with foreground
_HD_CHUNK = 256  # boundary points per cdist block: bounds memory at 256 x (other boundary) floats
_CDIST_PAIRS = 4_000_000  # above this many boundary point pairs, the distance transform is cheaper
_EDT_BLOCK = 8_000_000  # elements per distance-transform block (64 MB of float64)


def _as_bool(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array) > 0.5 if np.asarray(array).dtype != bool else np.asarray(array)


def has_foreground(mask: Any, fov: Any | None = None) -> bool:
    """Whether a ground-truth mask has a foreground pixel (inside ``fov`` when given)."""
    truth = _as_bool(mask)
    return bool((truth & _as_bool(fov)).any() if fov is not None else truth.any())


def foreground_mean(scores: Sequence[float], masks: Sequence[Any], fovs: Sequence[Any] | None = None) -> float:
    """Mean of per-image ``scores`` over the images whose truth has foreground; 0.0 when none has.

    The Dice a model is ranked by: an image with nothing to find cannot reward predicting nothing.
    """
    kept = [score for index, score in enumerate(scores)
            if has_foreground(masks[index], fovs[index] if fovs else None)]
    return float(sum(kept) / len(kept)) if kept else 0.0


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator


# ---------------------------------------------------------------------------------------------
# Connected components (union-find with pointer jumping, vectorised over pixels)


def connected_components(mask: Any) -> tuple[np.ndarray, int]:
    """``(labels, count)``: labels 1..count on the 8-connected (3-D: 26) components, 0 on background."""
    mask = _as_bool(mask)
    index = np.full(mask.shape, -1, dtype=np.int64)
    coords = np.nonzero(mask)
    n = coords[0].size
    index[coords] = np.arange(n)
    labels = np.zeros(mask.shape, dtype=np.int64)
    if n == 0:
        return labels, 0
    a_list, b_list = [], []
    # Half of the neighbour offsets (lexicographically positive) covers every undirected edge once.
    for offset in itertools.product((-1, 0, 1), repeat=mask.ndim):
        if offset <= (0,) * mask.ndim:
            continue
        src = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, mask.shape))
        dst = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(offset, mask.shape))
        both = mask[src] & mask[dst]
        a_list.append(index[src][both])
        b_list.append(index[dst][both])
    a, b = np.concatenate(a_list), np.concatenate(b_list)
    parent = np.arange(n)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        low, high = np.minimum(pa[differ], pb[differ]), np.maximum(pa[differ], pb[differ])
        np.minimum.at(parent, high, low)  # hook the larger root under the smaller
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    roots, compact = np.unique(parent, return_inverse=True)
    labels[coords] = compact + 1
    return labels, int(roots.size)


def equivalent_diameter(area: np.ndarray | float, ndim: int = 2) -> np.ndarray:
    """Diameter of the disc (2-D) or ball (3-D) with the same pixel/voxel count."""
    area = np.asarray(area, dtype=np.float64)
    if ndim == 3:
        return 2.0 * np.cbrt(3.0 * area / (4.0 * math.pi))
    return 2.0 * np.sqrt(area / math.pi)


# ---------------------------------------------------------------------------------------------
# HD95


def _boundary(mask: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]  # (1, 1, *S)
    pool = F.max_pool3d if mask.ndim == 3 else F.max_pool2d
    eroded = -pool(-F.pad(tensor, (1, 1) * mask.ndim, value=0.0), 3, stride=1)  # 0 outside
    return mask & ~(eroded[0, 0].numpy() > 0.5)


def _directed_distances(source: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """For each source point, the distance to the nearest target point (chunked cdist)."""
    src, dst = torch.from_numpy(source).double(), torch.from_numpy(target).double()
    return torch.cat([torch.cdist(src[i:i + _HD_CHUNK], dst).amin(1) for i in range(0, len(src), _HD_CHUNK)])


def squared_distance_transform(feature: np.ndarray) -> torch.Tensor:
    """Exact squared Euclidean distance of every pixel to the nearest ``feature`` pixel.

    Separable: two linear scans along the first axis, then one brute-force 1-D pass per remaining
    axis (``min_x' f(x') + (x - x')^2``), so the cost is ``pixels x side`` per axis whatever the
    number of boundary pixels. float32 while squared distances stay exact in it, else float64.
    """
    dtype = torch.float32 if sum(side * side for side in feature.shape) < 2 ** 24 else torch.float64
    hit = torch.from_numpy(feature)
    d = torch.full(feature.shape, math.inf, dtype=dtype)  # (*S): 1-D distance along axis 0
    for i in range(feature.shape[0]):  # forward and backward scans along axis 0
        d[i] = torch.where(hit[i], 0.0, d[i - 1] + 1 if i else d[i])
    for i in range(feature.shape[0] - 2, -1, -1):
        d[i] = torch.minimum(d[i], d[i + 1] + 1)
    f = d * d
    for axis in range(1, f.dim()):
        moved = f.movedim(axis, -1)
        length = moved.shape[-1]
        position = torch.arange(length, dtype=dtype)
        cost = (position[:, None] - position[None, :]) ** 2  # (L from, L to)
        flat = moved.reshape(-1, length)
        rows = max(1, _EDT_BLOCK // (length * length))
        out = torch.cat([(flat[i:i + rows, :, None] + cost).amin(1) for i in range(0, len(flat), rows)])
        f = out.reshape(moved.shape).movedim(-1, axis)
    return f


def _directed(source: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """Distances from each ``source`` boundary pixel to the ``target`` boundary: cdist when the
    point sets are small, the separable distance transform otherwise (same exact values)."""
    n_source, n_target = int(source.sum()), int(target.sum())
    if n_source * n_target <= _CDIST_PAIRS:
        return _directed_distances(np.argwhere(source).astype(np.float64), np.argwhere(target).astype(np.float64))
    return squared_distance_transform(target)[torch.from_numpy(source)].sqrt()


def hd95(prediction: Any, target: Any) -> float:
    """95th-percentile symmetric Hausdorff distance of the boundaries, in px (see module docs)."""
    prediction, target = _as_bool(prediction), _as_bool(target)
    if not prediction.any() and not target.any():
        return 0.0
    if not prediction.any() or not target.any():
        return float(math.sqrt(sum(s * s for s in target.shape)))
    pred_edge, true_edge = _boundary(prediction), _boundary(target)
    forward = torch.quantile(_directed(pred_edge, true_edge), 0.95)
    backward = torch.quantile(_directed(true_edge, pred_edge), 0.95)
    return float(max(forward, backward))


# ---------------------------------------------------------------------------------------------
# Per image and aggregate


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]  # (1, 1, *S)
    pool = F.max_pool3d if mask.ndim == 3 else F.max_pool2d
    return pool(tensor, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy() > 0.5


def image_metrics(prediction: Any, target: Any, fov: Any | None = None) -> dict[str, Any]:
    """Metrics of one image: binary masks of the same shape ``(H, W)`` / ``(D, H, W)`` (a leading
    channel axis of 1 is dropped). Pixels outside ``fov`` are ignored everywhere."""
    prediction, target = _as_bool(prediction), _as_bool(target)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    inside = np.ones_like(target) if fov is None else _as_bool(fov)
    if inside.shape != target.shape:
        raise ValueError(f"fov {inside.shape} and target {target.shape} differ in shape")
    if target.ndim > 2 and target.shape[0] == 1:
        prediction, target, inside = prediction[0], target[0], inside[0]
    prediction, target = prediction & inside, target & inside

    tp = int((prediction & target).sum())
    fp = int((prediction & ~target).sum())
    fn = int((~prediction & target).sum())
    tn = int((~prediction & ~target & inside).sum())
    both_empty = tp + fp + fn == 0
    out: dict[str, Any] = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "sensitivity": _ratio(tp, tp + fn, both_empty),
        "specificity": _ratio(tn, tn + fp, fp == 0),
        "hd95": hd95(prediction, target),
    }

    labels, count = connected_components(target)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]  # (count,)
    hits = np.bincount(labels[prediction].ravel(), minlength=count + 1)[1:]
    diameters = equivalent_diameter(areas, target.ndim)
    detected = hits >= DETECTION_OVERLAP * areas
    strata: dict[str, dict[str, Any]] = {}
    for name, low, high in STRATA:
        members = np.nonzero((diameters >= low) & (diameters < high))[0] + 1  # label ids
        if members.size == 0:
            strata[name] = {"count": 0, "detected": 0, "dice": None}
            continue
        region = _dilate(np.isin(labels, members), NEIGHBOURHOOD_PX) & inside
        p, t = prediction & region, target & region
        both = int((p & t).sum())
        strata[name] = {
            "count": int(members.size),
            "detected": int(detected[members - 1].sum()),  # a count here; a fraction after aggregation
            "dice": 2 * both / max(1, int(p.sum() + t.sum())),
        }
    out["size_strata"] = strata
    out["truth_empty"] = not target.any()
    return out


def aggregate(per_image: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over images (Dice, IoU, sensitivity: over images with foreground; strata: pooled detection
    fraction, Dice mean over images that have them)."""
    if not per_image:
        return {**{key: None for key in PIXEL_METRICS},
                "size_strata": {name: {"count": 0, "detected": None, "dice": None} for name, *_ in STRATA},
                "images": 0}
    with_foreground = [m for m in per_image if not m.get("truth_empty")]
    out: dict[str, Any] = {}
    for key in PIXEL_METRICS:
        rows = with_foreground if key in FOREGROUND_METRICS else per_image
        out[key] = float(np.mean([m[key] for m in rows])) if rows else 0.0
    strata = {}
    for name, *_ in STRATA:
        rows = [m["size_strata"][name] for m in per_image]
        count = sum(r["count"] for r in rows)
        dices = [r["dice"] for r in rows if r["count"]]
        strata[name] = {
            "count": count,
            "detected": sum(r["detected"] for r in rows) / count if count else None,
            "dice": float(np.mean(dices)) if dices else None,
        }
    out["size_strata"] = strata
    out["images"] = len(per_image)
    out["empty_truth_images"] = len(per_image) - len(with_foreground)
    return out


def segmentation_quality(predictions: Sequence[Any], targets: Sequence[Any],
                         fovs: Sequence[Any | None] | None = None) -> dict[str, Any]:
    """``aggregate`` of ``image_metrics`` over paired binary masks (FOVs optional, per image)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    fovs = list(fovs) if fovs is not None else [None] * len(targets)
    return aggregate([image_metrics(p, t, f) for p, t, f in zip(predictions, targets, fovs)])
