"""Fine-tuning a pruned model, optionally distilled from its unpruned parent.

Without a teacher this is ``nas.training.train_model`` itself. With one, ``train_model`` has no hook
for an extra loss term, so a short loop here reuses its pieces (patch iterator, Dice + focal loss,
warm-up/cosine schedule, validation Dice, best-epoch weights): loss = task loss + ``weight`` x
distillation loss on the logits. That loop runs in fp32 (no AMP, channels_last or checkpointing).
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from nas.data import SegmentationData
from nas.patches import iterate_train_batches
from nas.training import (EpochCallback, TrainConfig, TrainingError, TrainResult, dice_focal_loss,
                          evaluate_dice, resolve_device, train_model, warmup_cosine)

DISTILL_LOSSES = ("mse", "kl")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse",
                      temperature: float = 2.0) -> torch.Tensor:
    """MSE between logits, or the per-pixel binary KL(teacher || student) at ``temperature`` (x T^2)."""
    student, teacher = student.float(), teacher.float()  # (B, 1, *P) each
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "kl":
        target = torch.sigmoid(teacher / temperature)  # (B, 1, *P)
        cross = F.binary_cross_entropy_with_logits(student / temperature, target)
        entropy = F.binary_cross_entropy_with_logits(teacher / temperature, target)
        return (cross - entropy) * temperature**2
    raise ValueError(f"unknown distillation loss {kind!r}; choose one of {', '.join(DISTILL_LOSSES)}")


def finetune(model: nn.Module, data: SegmentationData, config: TrainConfig, *, teacher: nn.Module | None = None,
             distill_weight: float = 1.0, distill_loss: str = "mse",
             on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train ``model`` in place for ``config.epochs``; returns the curve and the best epoch's weights."""
    if teacher is None:
        return train_model(model, data, config, on_epoch=on_epoch)
    if distill_loss not in DISTILL_LOSSES:
        raise ValueError(f"unknown distillation loss {distill_loss!r}; choose one of {', '.join(DISTILL_LOSSES)}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model.to(device)
    teacher = teacher.to(device).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil((config.patches_per_epoch or len(data.train_images)) / config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, config.warmup_fraction))
    deep = callable(getattr(model, "forward_with_aux", None)) and config.aux_weight > 0
    with_fov = bool(data.train_fovs)
    best_dice, best_epoch, best_state = -1.0, 0, None
    epoch_dice, epoch_loss = [], []
    started, images_seen, train_seconds = time.perf_counter(), 0, 0.0
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        epoch_start = time.perf_counter()
        for batch in iterate_train_batches(
            data, patch_size=config.patch_size, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
            patches_per_epoch=config.patches_per_epoch, foreground_fraction=config.foreground_fraction,
            brightness=config.brightness, contrast=config.contrast, elastic=config.elastic, with_fov=with_fov,
        ):
            x = data.normalization.apply(batch[0].to(device), spatial_dims=data.spatial_dims)  # (B, C, *P)
            y = batch[1].to(device)  # (B, 1, *P)
            fov = batch[2].to(device) if with_fov else None
            with torch.no_grad():
                target = teacher(x)  # (B, 1, *P)
            logits, aux = model.forward_with_aux(x) if deep else (model(x), [])
            loss = dice_focal_loss(logits, y, config.focal_gamma, config.focal_weight, fov)
            for extra in aux:
                loss = loss + config.aux_weight * dice_focal_loss(extra, y, config.focal_gamma,
                                                                  config.focal_weight, fov)
            loss = loss + distill_weight * distillation_loss(logits, target, distill_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler.last_epoch < total_steps - 1:
                scheduler.step()
            losses.append(loss.detach())
            images_seen += x.shape[0]
        train_seconds += time.perf_counter() - epoch_start
        mean_loss = float(torch.stack(losses).mean()) if losses else 0.0
        if not math.isfinite(mean_loss):
            raise TrainingError(f"loss became {mean_loss} at epoch {epoch}")
        scores = evaluate_dice(model, data, device, config=config)
        dice = float(sum(scores) / len(scores)) if scores else 0.0
        epoch_dice.append(dice)
        epoch_loss.append(mean_loss)
        if dice > best_dice:
            best_dice, best_epoch = dice, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, mean_loss, dice)
    if best_state is None:
        raise ValueError("epochs must be >= 1")
    return TrainResult(best_dice=best_dice, best_epoch=best_epoch, epoch_dice=epoch_dice, epoch_loss=epoch_loss,
                       state_dict=copy.copy(best_state), seconds=time.perf_counter() - started,
                       images_per_second=images_seen / max(train_seconds, 1e-9), device=str(device))
