"""The probability threshold a model is deployed with, chosen on validation images (never on test).

Thin, sparse foreground often segments best below or above 0.5; a model that is scored at 0.5 but
deployed at its best threshold (or the reverse) tells its user the wrong number. So every trained
model stores the grid threshold that maximises its mean validation Dice, with the Dice at 0.5 beside
it, and every consumer (``nas-predict``, the model card, the report) uses the stored one.

Dice is per image, foreground, inside the FOV (empty truth and prediction score 1), and the mean is
over the images with foreground (``nas.train.metrics.foreground_mean``); a pixel is foreground when
its probability is above the threshold (its logit above ``logit(threshold)``, so 0.5 is exactly
``logit > 0``, the training curve's rule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from nas.train.labels import HALF, logit  # noqa: F401 (re-exported: their historic home)
from nas.train.metrics import foreground_mean, has_foreground

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95
_TIE = 1e-12  # mean Dice values closer than this are a tie


def dice_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of binary masks (B, 1, *S) -> (B,); empty vs empty counts as 1."""
    dims = tuple(range(1, prediction.dim()))
    prediction, target = prediction.float(), target.float()
    intersection = (prediction * target).sum(dims)
    total = prediction.sum(dims) + target.sum(dims)
    dice = 2 * intersection / total.clamp_min(1e-12)
    return torch.where(total == 0, torch.ones_like(dice), dice)


def dice_scores(logits: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], fovs: Sequence[torch.Tensor],
                threshold: float = HALF) -> list[float]:
    """Dice per image of ``logits`` (each (1, *S)) against ``masks`` at ``threshold``, inside the FOVs."""
    return [curve[0] for curve in _dice_curves(logits, masks, fovs, (threshold,))]


def with_foreground(scores: Sequence[float], masks: Sequence[torch.Tensor],
                    fovs: Sequence[torch.Tensor]) -> list[float]:
    """The scores of the images whose truth has foreground (inside the FOV): the ones the mean Dice
    counts (``nas.train.metrics.foreground_mean``), so the same images in the same order for every model."""
    return [score for index, score in enumerate(scores) if has_foreground(masks[index], fovs[index] if fovs else None)]


def dice_curve(logits: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], fovs: Sequence[torch.Tensor],
               grid: Sequence[float] = THRESHOLDS) -> dict[float, float]:
    """Mean Dice at each threshold of ``grid``, over the images with foreground (as every mean Dice
    of ``nas.train.metrics``: an empty truth cannot reward predicting nothing)."""
    curves = _dice_curves(logits, masks, fovs, grid)
    return {float(t): foreground_mean([c[i] for c in curves], masks, fovs) for i, t in enumerate(grid)}


def _dice_curves(logits, masks, fovs, grid) -> list[list[float]]:
    """Per image, the Dice at each threshold of ``grid`` (one pass over the image per threshold)."""
    cuts = [logit(t) for t in grid]
    out = []
    for index, image_logits in enumerate(logits):
        values, truth = image_logits.float().flatten(), masks[index].flatten() > 0.5
        if fovs:
            inside = fovs[index].flatten() > 0.5
            values, truth = values[inside], truth[inside]
        positives = int(truth.sum())
        row = []
        for cut in cuts:
            predicted = values > cut
            total = int(predicted.sum()) + positives
            row.append(1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total)
        out.append(row)
    return out


def best_threshold(curve: Mapping[float, float]) -> float:
    """The threshold with the highest mean Dice; a tie goes to the one closest to 0.5 (then the lower)."""
    if not curve:
        return HALF
    top = max(curve.values())
    tied = [t for t, dice in curve.items() if dice >= top - _TIE]
    return min(tied, key=lambda t: (abs(t - HALF), t))


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # the probability threshold to deploy with
    dice: float  # mean validation Dice at it
    dice_at_half: float  # mean validation Dice at 0.5, beside it
    curve: Mapping[float, float]  # mean validation Dice at every grid threshold

    def metrics(self) -> dict[str, float]:
        """The keys stored beside a model's metrics (``metrics.json``, the trial's attributes)."""
        return {"threshold": self.threshold, "dice_at_threshold": self.dice, "dice_at_half": self.dice_at_half}


def choose_threshold(logits: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], fovs: Sequence[torch.Tensor],
                     grid: Sequence[float] = THRESHOLDS) -> ThresholdChoice:
    """The grid threshold maximising the mean Dice of ``logits`` (validation images) against ``masks``."""
    grid = tuple(sorted({float(t) for t in grid} | {HALF}))
    curve = dice_curve(logits, masks, fovs, grid)
    threshold = best_threshold(curve)
    return ThresholdChoice(threshold=threshold, dice=curve[threshold], dice_at_half=curve[HALF], curve=curve)
