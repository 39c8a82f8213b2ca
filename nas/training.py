"""Training one candidate: Adam on Dice + focal loss, validation Dice each epoch, best-epoch weights.

Dice is measured on the foreground class, per image, then averaged over the validation images.
An image whose ground truth and prediction are both empty scores 1 (nothing to find, nothing found).
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import SegmentationData, iterate_train_batches


class TrainingError(RuntimeError):
    """A candidate could not be trained (NaN loss, ...); the search records it as failed."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-3
    patch_size: int = 64
    patches_per_epoch: int | None = None  # default: one patch per training image
    focal_gamma: float = 2.0
    focal_weight: float = 1.0
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = True  # autocast on CUDA (bf16 where supported); ignored on CPU


@dataclass
class TrainResult:
    best_dice: float
    best_epoch: int  # 1-based
    epoch_dice: list[float]
    epoch_loss: list[float]
    state_dict: dict[str, torch.Tensor] = field(repr=False)  # best epoch, on CPU
    seconds: float
    images_per_second: float  # training patches per second (forward + backward + step)
    device: str


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when there is one; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unsupported device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device


def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                    focal_weight: float = 1.0) -> torch.Tensor:
    """Soft Dice (per image, foreground) + focal loss; both favour thin and small structures."""
    logits = logits.float()
    prob = torch.sigmoid(logits)  # (B, 1, H, W)
    dims = tuple(range(1, logits.dim()))
    intersection = (prob * target).sum(dims)
    denominator = prob.sum(dims) + target.sum(dims)
    soft_dice = (2 * intersection + 1.0) / (denominator + 1.0)  # (B,)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = ((1 - p_t) ** gamma * bce).mean()
    return (1 - soft_dice).mean() + focal_weight * focal


def dice_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of binary masks (B, 1, H, W) -> (B,); empty vs empty counts as 1."""
    dims = tuple(range(1, prediction.dim()))
    prediction, target = prediction.float(), target.float()
    intersection = (prediction * target).sum(dims)
    total = prediction.sum(dims) + target.sum(dims)
    dice = 2 * intersection / total.clamp_min(1e-12)
    return torch.where(total == 0, torch.ones_like(dice), dice)


@torch.inference_mode()
def predict_logits(model: nn.Module, image: torch.Tensor, data: SegmentationData,
                   device: torch.device) -> torch.Tensor:
    """Logits for a batch of raw [0, 1] images (B, C, H, W), normalized as in training."""
    x = data.normalization.apply(image.to(device))
    with _autocast(device, enabled=True):
        return model(x).float()


def evaluate_dice(model: nn.Module, data: SegmentationData, device: torch.device,
                  batch_size: int = 16) -> list[float]:
    """Dice per validation image on full images (grouped by size into batches)."""
    was_training = model.training
    model.eval()
    scores: list[float] = [0.0] * len(data.val_images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(data.val_images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            images = torch.stack([data.val_images[i] for i in chunk])  # (b, C, H, W)
            masks = torch.stack([data.val_masks[i] for i in chunk]).to(device)  # (b, 1, H, W)
            logits = predict_logits(model, images, data, device)
            for i, score in zip(chunk, dice_per_image(logits > 0, masks > 0.5).tolist()):
                scores[i] = score
    model.train(was_training)
    return scores


def _autocast(device: torch.device, enabled: bool):
    if device.type != "cuda" or not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


EpochCallback = Callable[[int, float, float], None]  # (epoch, train loss, val dice)


def train_model(model: nn.Module, data: SegmentationData, config: TrainConfig,
                on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train in place and return the curve plus the best epoch's weights (on CPU)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp = config.amp and device.type == "cuda"
    needs_scaler = use_amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
    steps_per_epoch = math.ceil((config.patches_per_epoch or len(data.train_images)) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch), pct_start=0.15
    )

    best_dice, best_epoch, best_state = -1.0, 0, None
    epoch_dice: list[float] = []
    epoch_loss: list[float] = []
    started = time.perf_counter()
    train_seconds, train_images = 0.0, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        epoch_start = time.perf_counter()
        for images, masks in iterate_train_batches(
            data, patch_size=config.patch_size, batch_size=config.batch_size, seed=config.seed,
            epoch=epoch, patches_per_epoch=config.patches_per_epoch,
        ):
            x = data.normalization.apply(images.to(device))  # (B, C, P, P)
            y = masks.to(device)  # (B, 1, P, P)
            with _autocast(device, use_amp):
                logits = model(x)  # (B, 1, P, P)
            loss = dice_focal_loss(logits, y, config.focal_gamma, config.focal_weight)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler.last_epoch < scheduler.total_steps - 1:
                scheduler.step()
            losses.append(loss.item())
            train_images += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - epoch_start

        dice = float(sum(scores) / len(scores)) if (scores := evaluate_dice(model, data, device)) else 0.0
        mean_loss = float(sum(losses) / max(1, len(losses)))
        epoch_dice.append(dice)
        epoch_loss.append(mean_loss)
        if dice > best_dice:
            best_dice, best_epoch = dice, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, mean_loss, dice)

    assert best_state is not None, "epochs must be >= 1"
    return TrainResult(
        best_dice=best_dice, best_epoch=best_epoch, epoch_dice=epoch_dice, epoch_loss=epoch_loss,
        state_dict=copy.copy(best_state), seconds=time.perf_counter() - started,
        images_per_second=train_images / max(train_seconds, 1e-9), device=str(device),
    )
