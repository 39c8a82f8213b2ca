"""Fine-tuning a pruned model, optionally distilled from its unpruned parent.

This is ``nas.train.trainer.train_model`` itself (same schedule, AMP, channels_last, checkpointing);
distillation enters through its ``extra_loss`` hook: loss = task loss + ``weight`` x distillation
loss between the student's and the frozen teacher's logits. A K-class model's ``kl`` is the KL
divergence between the teachers's and the student's softmax over the classes (Hinton et al.'s
temperature); the binary one stays the per-pixel sigmoid KL.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.data.loading import SegmentationData
from nas.train.trainer import EpochCallback, TrainConfig, TrainResult, resolve_device, train_model

DISTILL_LOSSES = ("mse", "kl")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse",
                      temperature: float = 2.0) -> torch.Tensor:
    """MSE between logits, or the per-pixel KL(teacher || student) at ``temperature`` (x T^2): over the
    K classes' softmax for K channels, of the sigmoid for one."""
    student, teacher = student.float(), teacher.float()  # (B, 1 or K, *P) each
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "kl" and student.shape[1] > 1:  # K classes: KL of the softmax over the channel axis, mean per pixel
        target = F.log_softmax(teacher / temperature, dim=1)
        divergence = F.kl_div(F.log_softmax(student / temperature, dim=1), target, log_target=True, reduction="none")
        return divergence.sum(dim=1).mean() * temperature**2
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
    teacher = teacher.to(resolve_device(config.device)).eval()

    def distill(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(x)  # (B, 1 or K, *P)
        return distill_weight * distillation_loss(logits, target, distill_loss)

    return train_model(model, data, config, on_epoch=on_epoch, extra_loss=distill)
