"""Logits -> label map, the one rule for the binary and the K-class head (docs/multiclass.md).

A binary model (``num_classes == 2``) has one logit channel: a pixel is foreground (1) when its
probability is above the model's stored threshold, i.e. its logit above ``logit(threshold)`` (0.5
is exactly ``logit > 0``, the training curve's rule). A K-class model (K >= 3) has K channels, one
per class, background first: the label is the argmax, and no threshold applies. Every consumer
(validation, metrics, nas-predict, export checks, overlays) goes through ``labels_from_logits`` so
the two cases can never be decided two different ways.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

HALF = 0.5


def logit(probability: float) -> float:
    """The logit of a probability threshold (0 and 1 map to -inf and +inf)."""
    if probability <= 0.0:
        return -math.inf
    if probability >= 1.0:
        return math.inf
    return math.log(probability / (1.0 - probability))


def labels_from_logits(logits: Any, threshold: float | None = HALF, *, spatial_dims: int = 2) -> Any:
    """Label map of ``logits`` ``(C, *S)`` or ``(B, C, *S)`` as int64, the channel axis kept at size 1
    (the layout of the masks). ``spatial_dims`` (2 images, 3 volumes) tells the two apart.

    ``C == 1``: binary, 1 where the sigmoid probability is above ``threshold`` (``None``: 0.5).
    ``C >= 3``: argmax over the channels (labels 0..C-1); ``threshold`` is ignored. ``C == 2`` is
    refused: a 2-class problem has the 1-channel sigmoid head. A numpy array gives a numpy array
    (ONNX Runtime outputs), a tensor a tensor on the same device.
    """
    as_numpy = isinstance(logits, np.ndarray)
    tensor = torch.from_numpy(logits) if as_numpy else logits
    if tensor.dim() not in (spatial_dims + 1, spatial_dims + 2):
        raise ValueError(f"logits must be (C, *S) or (B, C, *S) with {spatial_dims} spatial axes, "
                         f"got shape {tuple(tensor.shape)}")
    axis = tensor.dim() - spatial_dims - 1
    channels = tensor.shape[axis]
    if channels == 1:
        labels = (tensor.float() > logit(HALF if threshold is None else float(threshold))).long()
    elif channels >= 3:
        labels = tensor.argmax(dim=axis, keepdim=True)
    else:
        raise ValueError("logits have 2 channels: a 2-class model has one sigmoid channel (num_classes 2 = "
                         "background + foreground), K >= 3 classes have K channels")
    return labels.cpu().numpy() if as_numpy else labels
