"""Training one candidate: Adam on Dice + focal loss, validation Dice each epoch, best-epoch weights.

Engine options (``TrainConfig``): AMP on CUDA (bf16, or fp16 with a grad scaler), bf16 autocast on
CPU, channels_last, gradient checkpointing of encoder/decoder stages, warm-up + cosine LR, early
stopping on validation Dice, deep supervision when the model has ``forward_with_aux``, FOV-masked
loss. Losses stay on the device during an epoch (one host sync per epoch).

Dice is measured on the foreground class, per image, then averaged over the validation images that
have foreground (``nas.train.metrics.foreground_mean``): an image with nothing to find would score 1
for predicting nothing, and enough of them would make a model that predicts nothing the best.
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nas.data.loading import SegmentationData
from nas.data.patches import epoch_patches, iterate_train_batches
from nas.train.labels import labels_from_logits
from nas.train.metrics import foreground_mean, segmentation_quality
from nas.train.multiclass import dice_focal_loss_classes, image_class_dice, mean_class_dice, multiclass_quality
from nas.train.threshold import HALF, dice_per_image, dice_scores, logit  # noqa: F401 (dice_per_image: re-exported)


class TrainingError(RuntimeError):
    """A candidate could not be trained (NaN loss, ...); the search records it as failed."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-3
    patch_size: int = 64
    patches_per_epoch: int | None = None  # default: the training images' area once (nas.data.patches.epoch_patches)
    focal_gamma: float = 2.0
    focal_weight: float = 1.0
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = True  # autocast on CUDA (bf16 where supported, else fp16 with a grad scaler)
    cpu_bf16: bool = False  # bf16 autocast for training forwards on CPU too (validation stays fp32)
    channels_last: bool = False  # NHWC (NDHWC for volumes) memory format for model and batches
    grad_checkpointing: bool = False  # recompute model.encoder / model.decoder stages in backward
    warmup_fraction: float = 0.15  # linear warm-up from lr / 25, then cosine decay to ~0
    early_stop_patience: int | None = None  # stop after this many epochs without a better val Dice
    aux_weight: float = 0.1  # weight of each deep-supervision loss (models with forward_with_aux)
    foreground_fraction: float = 0.0  # share of patches centred on a foreground pixel
    brightness: float = 0.0  # +- shift of raw [0, 1] intensities per patch
    contrast: float = 0.0  # +- relative gain about the patch mean
    elastic: float = 0.0  # max elastic displacement in px (0: off)
    deterministic: bool = False  # CUDA: deterministic cuDNN kernels instead of benchmarked ones
    sliding_window_above: int = 1024  # validate images with a side above this by sliding windows
    sliding_window_overlap: float = 0.5
    class_weights: tuple[float, ...] | None = None  # label maps: per-class weight of the focal term (K values)


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
    peak_memory_bytes: int | None = None  # torch.cuda.max_memory_allocated; None on CPU
    stopped_early: bool = False  # early stopping ended training before config.epochs


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
                    focal_weight: float = 1.0, weight: torch.Tensor | None = None,
                    class_weights: Any = None) -> torch.Tensor:
    """Soft Dice (per image, foreground) + focal loss; both favour thin and small structures.

    ``weight`` (same shape, {0, 1}): pixels outside the FOV count for nothing in either term. Logits
    with K > 1 channels (a label-map model) go to ``nas.train.multiclass.dice_focal_loss_classes``
    (with ``class_weights``, K values; the binary loss takes none).
    """
    if logits.shape[1] > 1:
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        return dice_focal_loss_classes(logits, target, gamma, focal_weight, weight, weights)
    if class_weights is not None:
        raise ValueError("class weights need a label-map model (K >= 3 output channels)")
    logits = logits.float()
    prob = torch.sigmoid(logits)  # (B, 1, *S)
    dims = tuple(range(1, logits.dim()))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal_map = (1 - p_t) ** gamma * bce  # (B, 1, *S)
    if weight is not None:
        prob, target, focal_map = prob * weight, target * weight, focal_map * weight
        focal = focal_map.sum() / weight.sum().clamp_min(1.0)
    else:
        focal = focal_map.mean()
    intersection = (prob * target).sum(dims)
    denominator = prob.sum(dims) + target.sum(dims)
    soft_dice = (2 * intersection + 1.0) / (denominator + 1.0)  # (B,)
    return (1 - soft_dice).mean() + focal_weight * focal


@torch.inference_mode()
def predict_logits(model: nn.Module, image: torch.Tensor, data: SegmentationData,
                   device: torch.device, config: TrainConfig | None = None) -> torch.Tensor:
    """Logits (B, 1, *S) on ``device`` for a batch of raw [0, 1] images (B, C, *S), normalized as in
    training; 2-D images with a side above ``config.sliding_window_above`` go through sliding
    windows of ``config.patch_size`` (``nas.train.inference``), so memory stays bounded."""
    config = config or TrainConfig()
    spatial = image.dim() - 2
    if spatial == 2 and max(image.shape[-2:]) > config.sliding_window_above:
        from nas.train.inference import sliding_window_logits

        logits = sliding_window_logits(model, image, normalization=data.normalization,
                                       patch_size=config.patch_size, overlap=config.sliding_window_overlap,
                                       batch_size=max(1, config.batch_size), device=device)
        return logits.to(device)
    x = data.normalization.apply(image.to(device), spatial_dims=spatial)
    with _autocast(device, enabled=True):
        return model(x).float()


def split_logits(model: nn.Module, data: SegmentationData, device: torch.device, split: str = "val",
                 batch_size: int = 16, config: TrainConfig | None = None) -> list[torch.Tensor]:
    """Logits (1, *S) float32 on CPU for every image of ``split``, full images batched by size."""
    images = data.split(split)[0]
    was_training = model.training
    model.eval()
    out: list[torch.Tensor | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            logits = predict_logits(model, torch.stack([images[i] for i in chunk]), data, device, config)
            for i, image_logits in zip(chunk, logits.float().cpu()):
                out[i] = image_logits  # (1, *S)
    model.train(was_training)
    return out  # type: ignore[return-value]


def predict_masks(model: nn.Module, data: SegmentationData, device: torch.device, split: str = "val",
                  batch_size: int = 16, config: TrainConfig | None = None) -> list[torch.Tensor]:
    """Binary predictions (1, *S) bool on CPU (probability above 0.5) for every image of ``split``;
    label maps (1, *S) int64 (argmax) for a K-class model."""
    return [logits > 0 if logits.shape[0] == 1 else labels_from_logits(logits, spatial_dims=logits.dim() - 1)
            for logits in split_logits(model, data, device, split, batch_size, config)]


def evaluate_dice(model: nn.Module, data: SegmentationData, device: torch.device,
                  batch_size: int = 16, split: str = "val", config: TrainConfig | None = None) -> list[float]:
    """Dice per image of ``split`` on full images at 0.5, inside the FOV when the data has one (K
    classes: the mean over the foreground classes each image's truth has; 0.0 for one with none,
    which ``foreground_mean`` leaves out)."""
    _, masks, fovs = data.split(split)
    if data.num_classes > 2:
        labels = predict_masks(model, data, device, split, batch_size, config)
        return [score or 0.0 for score in image_class_dice(labels, masks, data.num_classes, fovs)]
    return dice_scores(split_logits(model, data, device, split, batch_size, config), masks, fovs)


def validation_dice(model: nn.Module, data: SegmentationData, device: torch.device,
                    config: TrainConfig | None = None) -> float:
    """The Dice a trial's epochs are ranked by: binary, the mean over the validation images with
    foreground; K classes, per class over the images that have it, then the mean over the classes."""
    _, masks, fovs = data.split("val")
    if data.num_classes > 2:
        return mean_class_dice(predict_masks(model, data, device, config=config), masks, data.num_classes, fovs)
    return foreground_mean(evaluate_dice(model, data, device, config=config), masks, fovs)


def evaluate_quality(model: nn.Module, data: SegmentationData, device: torch.device, split: str = "val",
                     config: TrainConfig | None = None, threshold: float = HALF,
                     logits: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """All of ``nas.train.metrics`` (Dice, IoU, ..., HD95, size strata) on ``split`` at ``threshold``,
    FOV-aware; ``logits`` (from ``split_logits``) saves predicting the split again. K classes: the
    argmax (no threshold) scored by ``nas.train.multiclass.multiclass_quality``."""
    _, masks, fovs = data.split(split)
    logits = logits if logits is not None else split_logits(model, data, device, split, config=config)
    labels = [labels_from_logits(l, threshold, spatial_dims=l.dim() - 1)[0] == 1 if data.num_classes == 2
              else labels_from_logits(l, spatial_dims=l.dim() - 1)[0] for l in logits]
    truths, inside = [m[0] for m in masks], [f[0] for f in fovs] if fovs else None
    if data.num_classes > 2:
        return multiclass_quality(labels, truths, data.class_names, inside)
    return segmentation_quality(labels, truths, inside)


def _autocast(device: torch.device, enabled: bool, cpu_bf16: bool = False):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def warmup_cosine(step: int, total: int, warmup_fraction: float) -> float:
    """LR multiplier: linear 1/25 -> 1 over the warm-up steps, then cosine 1 -> 0 (OneCycle-like)."""
    warmup = int(round(warmup_fraction * total))
    if step < warmup:
        return 0.04 + 0.96 * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@contextmanager
def gradient_checkpointing(model: nn.Module, enabled: bool = True):
    """Recompute each ``model.encoder`` / ``model.decoder`` stage in backward (memory for compute).

    Instance-level forward overrides, removed on exit: the state dict and class are untouched. A model
    without those ``ModuleList``s is refused, since silently not checkpointing would hide an OOM cause.
    """
    if not enabled:
        yield
        return
    stages = [m for name in ("encoder", "decoder") if isinstance(getattr(model, name, None), nn.ModuleList)
              for m in getattr(model, name)]
    if not stages:
        raise ValueError(f"gradient checkpointing needs model.encoder / model.decoder ModuleLists; "
                         f"{type(model).__name__} has neither")

    def wrap(stage: nn.Module):
        forward = stage.forward

        def checkpointed(*args, **kwargs):
            if stage.training and torch.is_grad_enabled():
                return checkpoint(forward, *args, use_reentrant=False, **kwargs)
            return forward(*args, **kwargs)
        return checkpointed

    for stage in stages:
        stage.forward = wrap(stage)
    try:
        yield
    finally:
        for stage in stages:
            del stage.forward


EpochCallback = Callable[[int, float, float], None]  # (epoch, train loss, val dice)


ExtraLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (normalized input, logits) -> loss


def _forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fov: torch.Tensor | None,
                  config: TrainConfig, deep: bool, extra_loss: ExtraLoss | None = None) -> torch.Tensor:
    """Main loss, plus ``aux_weight`` x each deep-supervision loss when the model provides them,
    plus ``extra_loss(x, logits)`` (e.g. distillation from a teacher) when given."""
    if deep:
        logits, aux = model.forward_with_aux(x)  # (B, 1, *P), [(B, 1, *P), ...]
    else:
        logits, aux = model(x), []  # (B, 1, *P)
    loss = dice_focal_loss(logits, y, config.focal_gamma, config.focal_weight, fov, config.class_weights)
    for extra in aux:
        loss = loss + config.aux_weight * dice_focal_loss(extra, y, config.focal_gamma, config.focal_weight, fov,
                                                          config.class_weights)
    if extra_loss is not None:
        loss = loss + extra_loss(x, logits)
    return loss


def train_model(model: nn.Module, data: SegmentationData, config: TrainConfig,
                on_epoch: EpochCallback | None = None, extra_loss: ExtraLoss | None = None) -> TrainResult:
    """Train in place and return the curve plus the best epoch's weights (on CPU)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
        torch.backends.cudnn.deterministic = config.deterministic
        torch.cuda.reset_peak_memory_stats(device)
    spatial = data.spatial_dims
    memory_format = (torch.channels_last if spatial == 2 else torch.channels_last_3d) \
        if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp = config.amp and device.type == "cuda"
    needs_scaler = use_amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
    patches = config.patches_per_epoch or epoch_patches(data, config.patch_size)
    steps_per_epoch = math.ceil(patches / config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, config.warmup_fraction))
    deep = callable(getattr(model, "forward_with_aux", None)) and config.aux_weight > 0
    with_fov = bool(data.train_fovs)

    best_dice, best_epoch, best_state = -1.0, 0, None
    epoch_dice: list[float] = []
    epoch_loss: list[float] = []
    started = time.perf_counter()
    train_seconds, train_images, stale = 0.0, 0, 0
    with gradient_checkpointing(model, config.grad_checkpointing):
        for epoch in range(1, config.epochs + 1):
            model.train()
            losses = []  # detached 0-d tensors: one host sync per epoch, not per step
            epoch_start = time.perf_counter()
            for batch in iterate_train_batches(
                data, patch_size=config.patch_size, batch_size=config.batch_size, seed=config.seed,
                epoch=epoch, patches_per_epoch=patches,
                foreground_fraction=config.foreground_fraction, brightness=config.brightness,
                contrast=config.contrast, elastic=config.elastic, with_fov=with_fov,
            ):
                images, masks = batch[0], batch[1]
                x = data.normalization.apply(images.to(device, non_blocking=True), spatial_dims=spatial)
                x = x.contiguous(memory_format=memory_format)  # (B, C, *P)
                y = masks.to(device, non_blocking=True)  # (B, 1, *P)
                fov = batch[2].to(device, non_blocking=True) if with_fov else None
                with _autocast(device, use_amp, config.cpu_bf16):
                    loss = _forward_loss(model, x, y, fov, config, deep, extra_loss)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if scheduler.last_epoch < total_steps - 1:
                    scheduler.step()
                losses.append(loss.detach())
                train_images += images.shape[0]
            mean_loss = float(torch.stack(losses).float().mean()) if losses else 0.0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - epoch_start
            if not math.isfinite(mean_loss):
                raise TrainingError(f"loss became {mean_loss} at epoch {epoch}")

            dice = validation_dice(model, data, device, config)  # empty truths cannot make it best
            epoch_dice.append(dice)
            epoch_loss.append(mean_loss)
            if dice > best_dice:
                best_dice, best_epoch, stale = dice, epoch, 0
                best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
            else:
                stale += 1
            if on_epoch is not None:
                on_epoch(epoch, mean_loss, dice)
            if config.early_stop_patience and stale >= config.early_stop_patience:
                break

    assert best_state is not None, "epochs must be >= 1"
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(
        best_dice=best_dice, best_epoch=best_epoch, epoch_dice=epoch_dice, epoch_loss=epoch_loss,
        state_dict=copy.copy(best_state), seconds=time.perf_counter() - started,
        images_per_second=train_images / max(train_seconds, 1e-9), device=str(device),
        peak_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        stopped_early=len(epoch_dice) < config.epochs,
    )
