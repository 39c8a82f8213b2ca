"""K-class (label map) loss and quality: the binary conventions of ``nas.train.metrics``, per class.

Every foreground class c (labels 1..K-1; background 0 is excluded from Dice and IoU) is scored as a
binary problem, ``prediction == c`` against ``truth == c`` inside the FOV, with ``nas.train.metrics``
(so Dice, IoU, HD95 and the size-stratified detection mean exactly what they mean for one class).
A class's mean is over the images whose truth has it (``foreground_mean``); the model's ``dice``
and ``miou`` are the means of those over the foreground classes that appear in the split (a class
absent from it has ``None``). The confusion matrix counts pixels, rows truth, columns prediction.
Formulas, with worked numbers: docs/multiclass.md.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nas.train.metrics import PIXEL_METRICS, STRATA, aggregate, image_metrics


def dice_focal_loss_classes(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                            focal_weight: float = 1.0, weight: torch.Tensor | None = None,
                            class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft Dice over the foreground classes (per image and class, background excluded) + focal loss
    over all K classes. ``logits`` (B, K, *S), ``target`` (B, 1, *S) label values, ``weight`` the FOV
    (B, 1, *S) in {0, 1}; ``class_weights`` (K,) scales each pixel's focal term by its true class."""
    logits = logits.float()
    classes = logits.shape[1]
    labels = target[:, 0].long().clamp(0, classes - 1)  # (B, *S)
    log_prob = F.log_softmax(logits, dim=1)  # (B, K, *S)
    prob = log_prob.exp()
    one_hot = F.one_hot(labels, classes).movedim(-1, 1).float()  # (B, K, *S)
    log_p_t = log_prob.gather(1, labels[:, None])  # (B, 1, *S)
    focal_map = -(1 - log_p_t.exp()) ** gamma * log_p_t
    if class_weights is not None:
        if class_weights.numel() != classes:
            raise ValueError(f"{class_weights.numel()} class weights for {classes} classes")
        focal_map = focal_map * class_weights.to(focal_map)[labels][:, None]
    if weight is not None:
        prob, one_hot, focal_map = prob * weight, one_hot * weight, focal_map * weight
        focal = focal_map.sum() / weight.sum().clamp_min(1.0)
    else:
        focal = focal_map.mean()
    dims = tuple(range(2, logits.dim()))
    intersection = (prob * one_hot).sum(dims)[:, 1:]  # (B, K-1)
    denominator = (prob.sum(dims) + one_hot.sum(dims))[:, 1:]
    soft_dice = (2 * intersection + 1.0) / (denominator + 1.0)
    return (1 - soft_dice).mean() + focal_weight * focal


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _squeeze(array: np.ndarray) -> np.ndarray:
    return array[0] if array.ndim > 2 and array.shape[0] == 1 else array


def confusion_matrix(predictions: Sequence[Any], targets: Sequence[Any], num_classes: int,
                     fovs: Sequence[Any] | None = None) -> list[list[int]]:
    """K x K pixel counts summed over images: ``[truth][prediction]``, inside the FOVs when given."""
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    for index, (prediction, target) in enumerate(zip(predictions, targets)):
        truth, guess = _numpy(target).astype(np.int64).ravel(), _numpy(prediction).astype(np.int64).ravel()
        if fovs:
            inside = _numpy(fovs[index]).ravel() > 0.5
            truth, guess = truth[inside], guess[inside]
        counts += np.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).tolist()


def class_dice_per_image(predictions: Sequence[Any], targets: Sequence[Any], num_classes: int,
                         fovs: Sequence[Any] | None = None) -> list[list[float | None]]:
    """Per image, the hard Dice of each foreground class (``None`` where the truth lacks the class)."""
    out = []
    for index, (prediction, target) in enumerate(zip(predictions, targets)):
        truth, guess = _numpy(target).ravel(), _numpy(prediction).ravel()
        if fovs:
            inside = _numpy(fovs[index]).ravel() > 0.5
            truth, guess = truth[inside], guess[inside]
        row: list[float | None] = []
        for value in range(1, num_classes):
            t, p = truth == value, guess == value
            total = int(t.sum()) + int(p.sum())
            row.append(2.0 * int((t & p).sum()) / total if t.any() else None)
        out.append(row)
    return out


def mean_class_dice(predictions: Sequence[Any], targets: Sequence[Any], num_classes: int,
                    fovs: Sequence[Any] | None = None) -> float:
    """The K-class model's ``dice``: per class the mean over the images that have it, then the mean
    over the classes present in the split (0.0 when none is; the loader refuses such a split)."""
    rows = class_dice_per_image(predictions, targets, num_classes, fovs)
    means = [float(np.mean(scores)) for scores in
             ([row[c] for row in rows if row[c] is not None] for c in range(num_classes - 1)) if scores]
    return float(np.mean(means)) if means else 0.0


def image_class_dice(predictions: Sequence[Any], targets: Sequence[Any], num_classes: int,
                     fovs: Sequence[Any] | None = None) -> list[float | None]:
    """Per image, the mean Dice over the foreground classes its truth has (``None``: it has none)."""
    return [float(np.mean([s for s in row if s is not None])) if any(s is not None for s in row) else None
            for row in class_dice_per_image(predictions, targets, num_classes, fovs)]


def multiclass_quality(predictions: Sequence[Any], targets: Sequence[Any], class_names: Sequence[str],
                       fovs: Sequence[Any] | None = None) -> dict[str, Any]:
    """The quality block of a K-class split: ``per_class`` (each class's ``nas.train.metrics`` block),
    the class means of its pixel metrics (``dice``, ``iou``, ..., ``hd95``; ``miou`` = ``iou``), pooled
    size strata, ``confusion`` and the image counts."""
    count = len(class_names)
    fovs = list(fovs) if fovs else None
    per_class: dict[str, Any] = {}
    for value in range(1, count):
        blocks = [image_metrics(_numpy(p) == value, _numpy(t) == value, None if fovs is None else fovs[i])
                  for i, (p, t) in enumerate(zip(predictions, targets))]
        present = any(not block["truth_empty"] for block in blocks)
        block = aggregate(blocks)
        if not present:  # a class absent from the split has no Dice, IoU or sensitivity
            block.update({key: None for key in ("dice", "iou", "sensitivity")})
        per_class[class_names[value]] = block
    out: dict[str, Any] = {}
    for key in PIXEL_METRICS:
        values = [block[key] for block in per_class.values() if block[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    out["miou"] = out["iou"]
    strata = {}
    for name, *_ in STRATA:
        rows = [block["size_strata"][name] for block in per_class.values()]
        total = sum(row["count"] for row in rows)
        found = sum(row["detected"] * row["count"] for row in rows if row["count"])
        dices = [row["dice"] for row in rows if row["dice"] is not None]
        strata[name] = {"count": total, "detected": found / total if total else None,
                        "dice": float(np.mean(dices)) if dices else None}
    out["size_strata"] = strata
    out["images"] = len(targets)
    out["empty_truth_images"] = sum(1 for t in targets if not (_numpy(t) > 0).any())
    out["per_class"] = per_class
    out["confusion"] = confusion_matrix(predictions, targets, count, fovs)
    return out
