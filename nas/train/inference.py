"""Sliding-window inference with Gaussian blending, for images of any size (nnU-Net style).

Images larger than the training patch are cut into overlapping ``patch_size`` windows; each
window's logits are weighted by a Gaussian (sigma = patch / 8) so window borders, where the model
sees the least context, count least, and the weighted sum is divided by the summed weights.
Every window has exactly ``patch_size`` (smaller images are zero-padded after normalization, i.e.
with the mean intensity), so a fixed-shape export such as a static ONNX model works too.

Memory bound (beyond the caller's raw image): the float32 CPU output ``B * out * H * W * 4`` bytes and
one batch of windows on ``device`` (``batch_size * (C + out) * P * P * 4`` bytes plus the model's
activations for that batch). The blending denominator is separable (a grid of windows, a separable
Gaussian), so it is two vectors, not a full-resolution map; normalization is applied per window, so
no normalized full-resolution copy is made either.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Union

import torch
import torch.nn.functional as F
from torch import nn

from nas.data.normalization import Normalization

# normalized windows (N, C, P, P) -> logits (N, out, P, P); an nn.Module or e.g. an ONNX session wrapper
Predictor = Callable[[torch.Tensor], torch.Tensor]
PatchSize = Union[int, tuple[int, int]]
SIGMA_SCALE = 1.0 / 8.0
MAX_OVERLAP = 0.9


def _pair(patch_size: PatchSize) -> tuple[int, int]:
    pair = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"patch_size must be a positive int or (height, width), got {patch_size!r}")
    return pair


def _gaussian_1d(size: int, sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """``(size,)`` float32 Gaussian centred on the window, max 1; its minimum exp(-8) is never 0."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    sigma = max(size * sigma_scale, 1e-3)
    return torch.exp(-0.5 * (coords / sigma) ** 2).float()


def gaussian_importance(patch_size: PatchSize) -> torch.Tensor:
    """``(P_h, P_w)`` window weight: the outer product of two 1D Gaussians (sigma = side / 8), max 1."""
    patch_h, patch_w = _pair(patch_size)
    return torch.outer(_gaussian_1d(patch_h), _gaussian_1d(patch_w))


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spaced window origins covering ``[0, size)``: first at 0, last at ``size - patch``.

    The step is at most ``patch * (1 - overlap)``; for ``size <= patch`` there is one window at 0.
    """
    if size <= patch:
        return [0]
    target_step = max(1, int(patch * (1.0 - overlap)))
    count = math.ceil((size - patch) / target_step) + 1
    step = (size - patch) / (count - 1)
    return [int(round(i * step)) for i in range(count)]


def axis_weights(size: int, patch: int, overlap: float) -> torch.Tensor:
    """``(size,)`` float32 sum of the 1D Gaussians of the windows along one axis.

    Windows form a grid and the weight is separable, so the full blending denominator is
    ``outer(axis_weights(H), axis_weights(W))`` and never has to be stored at full resolution.
    """
    gaussian = _gaussian_1d(patch)
    total = torch.zeros(max(size, patch))
    for start in window_starts(size, patch, overlap):
        total[start:start + patch] += gaussian
    return total[:size]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _windows(batch: int, height: int, width: int, patch: tuple[int, int],
             overlap: float) -> Iterator[tuple[int, int, int]]:
    for index in range(batch):
        for top in window_starts(height, patch[0], overlap):
            for left in window_starts(width, patch[1], overlap):
                yield index, top, left


def sliding_window_logits(
    predictor: Predictor,
    image: torch.Tensor,
    *,
    normalization: Normalization,
    patch_size: PatchSize,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Blended logits ``(B, out, H, W)`` float32 on CPU for a raw ``(C, H, W)`` or ``(B, C, H, W)`` image in [0, 1].

    ``predictor`` is an ``nn.Module`` (it must be in eval mode; run under ``torch.no_grad``; ``device``
    defaults to its parameters' device) or any callable mapping normalized windows to logits
    (``device`` defaults to CPU). ``overlap`` is the fraction of a window shared with its neighbour.
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)  # (1, C, H, W)
    if image.dim() != 4:
        raise ValueError(f"image must be (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
    if not 0.0 <= overlap <= MAX_OVERLAP:
        raise ValueError(f"overlap must be in [0, {MAX_OVERLAP}], got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    patch = _pair(patch_size)
    batch, channels, height, width = image.shape
    if channels != len(normalization.mean):
        raise ValueError(f"image has {channels} channel(s), the normalization has {len(normalization.mean)}")
    if isinstance(predictor, nn.Module):
        device = torch.device(device) if device is not None else _model_device(predictor)
        if predictor.training:
            raise ValueError("the model is in training mode; call model.eval() first (BatchNorm statistics)")
    else:
        device = torch.device(device or "cpu")

    gaussian = gaussian_importance(patch).to(device)  # (P_h, P_w)
    output: torch.Tensor | None = None  # (B, out, H, W), allocated once the out channels are known
    windows = list(_windows(batch, height, width, patch, overlap))
    with torch.no_grad():  # not inference_mode: the result is a normal tensor callers may modify
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            crops = []
            for index, top, left in chunk:
                crop = image[index, :, top:top + patch[0], left:left + patch[1]]  # (C, h, w), h <= P_h
                crop = normalization.apply(crop.to(device=device, dtype=torch.float32))
                crops.append(F.pad(crop, (0, patch[1] - crop.shape[-1], 0, patch[0] - crop.shape[-2])))
            logits = predictor(torch.stack(crops))  # (N, out, P_h, P_w)
            if logits.dim() != 4 or tuple(logits.shape[-2:]) != patch or logits.shape[0] != len(chunk):
                raise ValueError(f"predictor returned shape {tuple(logits.shape)} for {len(chunk)} "
                                 f"window(s) of {patch[0]}x{patch[1]}")
            weighted = (logits.float() * gaussian).cpu()  # (N, out, P_h, P_w)
            if output is None:
                output = torch.zeros(batch, logits.shape[1], height, width)  # (B, out, H, W)
            for (index, top, left), window in zip(chunk, weighted):
                h, w = min(patch[0], height - top), min(patch[1], width - left)
                output[index, :, top:top + h, left:left + w] += window[:, :h, :w]
    output /= axis_weights(height, patch[0], overlap).view(-1, 1)  # (B, out, H, W) / (H, 1), in place
    output /= axis_weights(width, patch[1], overlap)  # / (W,)
    return output
