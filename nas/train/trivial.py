"""What a model must beat: the Dice of predictors that ignore the image (one label everywhere).

A Dice means little alone: on ISBI 2012 the masks are ~78 % foreground, so predicting foreground
everywhere already scores ~0.87. Each constant predictor is scored by the very functions that score
the models (``dice_scores`` + ``foreground_mean`` for binary masks, ``mean_class_dice`` for label
maps), so its number sits on the same scale as every model's Dice: per image, inside the FOV, the
mean over the images whose truth has the class (an empty truth is left out, as for the models).

Binary: ``all-foreground`` and ``all-background`` (0 on every scored image). K classes: background
everywhere, and each foreground class everywhere: its mean class Dice (the other classes score 0),
and ``per_class`` the Dice of that class alone when it is predicted everywhere.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from nas.data.loading import SegmentationData
from nas.train.metrics import foreground_mean, has_foreground
from nas.train.multiclass import class_dice_per_image, mean_class_dice
from nas.train.threshold import dice_scores

VERSION = 1
FOREGROUND, BACKGROUND = "all-foreground", "all-background"


def constant_name(class_names: Sequence[str], value: int) -> str:
    """``all-foreground`` / ``all-background`` for binary masks, ``all-<class>`` for label maps."""
    if len(class_names) == 2:
        return FOREGROUND if value else BACKGROUND
    return BACKGROUND if value == 0 else f"all-{class_names[value]}"


def _constant(mask: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full_like(mask, value, dtype=torch.float32)


def constant_dice(masks: Sequence[torch.Tensor], fovs: Sequence[torch.Tensor],
                  class_names: Sequence[str]) -> dict[str, Any]:
    """The Dice of each constant predictor on ``masks`` (each (1, *S); ``fovs`` empty or one per mask).

    ``constants``: name -> mean Dice (binary: the models' Dice; K classes: the mean class Dice);
    ``best`` / ``dice``: the highest one (ties: the first); K classes also ``per_class``.
    """
    count = len(class_names)
    fovs = list(fovs)
    constants: dict[str, float] = {}
    per_class: dict[str, float | None] = {}
    if count == 2:
        for value, logit in ((1, 1.0), (0, -1.0)):  # logit > 0 is foreground, as for a model at 0.5
            scores = dice_scores([_constant(m, logit) for m in masks], masks, fovs)
            constants[constant_name(class_names, value)] = foreground_mean(scores, masks, fovs)
    else:
        for value in range(count):
            guesses = [_constant(m, float(value)) for m in masks]
            constants[constant_name(class_names, value)] = mean_class_dice(guesses, masks, count, fovs)
            if value:
                own = [row[value - 1] for row in class_dice_per_image(guesses, masks, count, fovs)
                       if row[value - 1] is not None]
                per_class[class_names[value]] = float(sum(own) / len(own)) if own else None
    best = max(constants, key=lambda name: constants[name])  # dicts keep order: ties go to the first
    scored = sum(has_foreground(m, fovs[i] if fovs else None) for i, m in enumerate(masks))
    out: dict[str, Any] = {"images": len(masks), "scored_images": scored, "num_classes": count,
                           "constants": constants, "best": best, "dice": constants[best]}
    if per_class:
        out["per_class"] = per_class
    return out


def trivial_baseline(data: SegmentationData, split: str) -> dict[str, Any] | None:
    """``constant_dice`` of one split of ``data`` (``"val"`` or ``"test"``); None when it has no images."""
    _, masks, fovs = data.split(split)
    if not masks:
        return None
    return {"split": split, **constant_dice(masks, fovs, data.class_names)}


def trivial_baselines(data: SegmentationData) -> dict[str, Any]:
    """Both splits' blocks, as ``trivial.json`` stores them: ``{"version", "splits": {"val", "test"?}}``."""
    splits = {split: block for split in ("val", "test") if (block := trivial_baseline(data, split))}
    return {"version": VERSION, "splits": splits}
