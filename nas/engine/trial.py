"""One architecture without Optuna: spec -> costs -> trained model -> checkpoint + metrics.

The trial policy (``nas.engine.policy``) samples the spec and reaches ``train_and_save`` through
``SearchJob.train``; the finalist stage, the baselines and the benchmark table call it (or
``evaluate_spec``) directly. Everything here is plain PyTorch.
"""
from __future__ import annotations

import gc
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from search_spaces import SearchSpace

from nas.deploy.checkpoint import save_checkpoint
from nas.io import json_safe
from nas.costs.measure import Costs, measure_costs
from nas.data.loading import SegmentationData
from nas.costs.constraints import training_step_memory
from nas.results.outcome import FailureKind
from nas.results.trial_result import TrialResult
from nas.train.labels import labels_from_logits
from nas.train.multiclass import confusion_matrix, image_class_dice
from nas.train.threshold import ThresholdChoice, choose_threshold, dice_scores, with_foreground
from nas.train.trainer import (TrainConfig, TrainingError, TrainResult, evaluate_quality, resolve_device, split_logits,
                               train_model)

CostsCallback = Callable[[dict[str, Any]], None]
TrainFunction = Callable[..., "TrialResult | dict[str, Any]"]  # ``train_and_save``'s signature: (spec, space, data,
# settings, folder, *, extra, on_epoch, on_costs) -> what it measured; the trial policy calls ``SearchJob.train``
# (a stand-in, the replay's recorded curves, may return the flat metrics dict)


@dataclass(frozen=True)
class TrialSettings:
    image_size: int  # input side for costs (MACs, latency) and the training patch side
    train: TrainConfig
    latency_warmup: int = 3
    latency_repeats: int = 10
    latency_engine: str = "torch"  # or "onnxruntime": the exported model on ONNX Runtime's CPU (--latency-engine)
    measure_train_memory: bool = False  # the training-step memory estimate (an objective or a limit)


@dataclass
class TrialOutcome:
    spec: Any
    costs: Costs
    train: TrainResult
    model: nn.Module  # best-epoch weights loaded, eval mode
    quality: dict[str, Any] = field(default_factory=dict)  # {"val": {...}, "test": {...}} (nas.train.metrics)
    extra_costs: dict[str, Any] = field(default_factory=dict)  # training-step memory when measured
    threshold: ThresholdChoice | None = None  # chosen on validation (nas.train.threshold)
    per_image_dice: dict[str, list[float]] = field(default_factory=dict)  # split -> Dice at it, images with foreground
    classes: dict[str, Any] = field(default_factory=dict)  # num_classes, class_names, miou, per_class, confusion

    def metrics(self) -> dict[str, Any]:
        """Everything measured, JSON-safe (NaN/inf -> None): stored on the trial and in ``metrics.json``."""
        multiclass = self.classes.get("num_classes", 2) > 2
        return json_safe({
            "dice": self.train.best_dice,
            "dice_definition": ("foreground classes: per class the mean over the validation images that have it, "
                                "then the mean over the classes; best epoch, argmax" if multiclass else
                                "foreground, per image, mean over the validation images with foreground, best epoch, "
                                "probability > 0.5"),
            "best_epoch": self.train.best_epoch,
            **(self.threshold.metrics() if self.threshold is not None else {"threshold": None}),
            "epoch_dice": self.train.epoch_dice,
            "epoch_loss": self.train.epoch_loss,
            **self.costs.to_dict(),
            **self.extra_costs,
            "train_seconds": self.train.seconds,
            "train_images_per_second": self.train.images_per_second,
            "train_device": self.train.device,
            "device_name": device_name(self.train.device),
            "train_peak_memory_bytes": self.train.peak_memory_bytes,
            "epochs_run": len(self.train.epoch_dice),
            "stopped_early": self.train.stopped_early,
            "quality": self.quality,
            "per_image_dice": self.per_image_dice,
            **self.classes,
        })


def device_name(device: str | torch.device) -> str:
    """The card or CPU a trial ran on, for compute accounting (``cuda:0`` says too little)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"


def onnxruntime_latency(model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    """``latency_ms`` / ``latency_device`` of ``model`` exported to ONNX and run on ONNX Runtime's CPU
    (3 short interleaved rounds: the end-of-search pass re-measures the front properly)."""
    from nas.costs.latency import measure_onnx_latency
    from nas.deploy.export import export_onnx

    result = measure_onnx_latency(model, shape, export_onnx, rounds=3, repeats=3, warmup=1)
    return {"latency_ms": result.latency_ms, "latency_device": result.device}


def failure_reason(error: BaseException) -> str:
    """One line for a failed trial; running out of memory and NaN losses are named as such."""
    text = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of memory (CUDA): {text}"
    if isinstance(error, (RuntimeError, MemoryError)) and (
            "out of memory" in str(error).lower() or "can't allocate memory" in str(error).lower()
            or isinstance(error, MemoryError)):
        return f"out of memory: {text}"
    if isinstance(error, TrainingError):
        return f"diverged: {text}"
    return text


def failure_kind(error: BaseException) -> FailureKind:
    """The ``FailureKind`` of a failed trial's exception (the enum beside ``failure_reason``'s text)."""
    text = failure_reason(error)
    if text.startswith("out of memory"):
        return FailureKind.OUT_OF_MEMORY
    return FailureKind.DIVERGED if text.startswith("diverged") else FailureKind.ERROR


def release_memory() -> None:
    """After a failed trial: drop its tensors and give cached GPU memory back before the next one."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_spec(spec: Any, space: SearchSpace, data: SegmentationData, settings: TrialSettings,
                  on_epoch: Callable[[int, float, float], None] | None = None,
                  on_costs: CostsCallback | None = None) -> TrialOutcome:
    """Build, cost and train one architecture; costs come first since they need no training.

    ``on_costs`` sees the costs before any training (early stopping compares trials by them).
    """
    torch.manual_seed(settings.train.seed)
    model = space.build_model(spec, data.in_channels, 1)
    device = resolve_device(settings.train.device)
    side = (settings.image_size,) * data.spatial_dims  # (H, W) or (D, H, W): a 3D model takes volumes
    shape = (1, data.in_channels, *side)
    costs = measure_costs(model.to(device), shape, device,
                          warmup=settings.latency_warmup, repeats=settings.latency_repeats)
    if settings.latency_engine == "onnxruntime":  # the latency objective is the deployed runtime's
        costs = replace(costs, **onnxruntime_latency(model, shape))
    extra_costs: dict[str, Any] = {}
    if settings.measure_train_memory:
        batch = (settings.train.batch_size, data.in_channels, *side)
        extra_costs = {**training_step_memory(model, batch), "train_memory_batch": settings.train.batch_size}
    if on_costs is not None:
        on_costs({**costs.to_dict(), **extra_costs})
    result = train_model(model, data, settings.train, on_epoch=on_epoch)
    model.load_state_dict(result.state_dict)
    model.eval()
    quality, choice, per_image, confusion = measure_quality(model, data, device, settings.train)
    return TrialOutcome(spec=spec, costs=costs, train=result, model=model, quality=quality,
                        extra_costs=extra_costs, threshold=choice, per_image_dice=per_image,
                        classes=class_metrics(quality["val"], confusion, data))


def class_metrics(val: dict[str, Any], confusion: list[list[int]], data: SegmentationData) -> dict[str, Any]:
    """The label-map keys of a model's metrics, from its validation quality block (binary too:
    ``miou`` is the foreground IoU, ``per_class`` has the one foreground class, the confusion 2 x 2)."""
    blocks = val["per_class"] if data.num_classes > 2 else {data.class_names[1]: val}
    per_class = {name: {key: block.get(key) for key in ("dice", "iou", "size_strata")} for name, block in blocks.items()}
    return {"miou": val.get("iou"), "per_class": per_class, "confusion": confusion,
            "num_classes": data.num_classes, "class_names": list(data.class_names),
            "class_colours": [list(colour) for colour in data.class_colours]}  # nas-predict and report overlays


def assess(model: nn.Module, data: SegmentationData, device: torch.device, config: TrainConfig
           ) -> tuple[dict[str, Any], ThresholdChoice | None, dict[str, list[float]]]:
    """Quality of trained weights: the threshold is chosen on validation only, then both splits are
    measured at it; test images never influence the threshold (nor anything else chosen). K classes:
    no threshold (argmax), so the choice is None."""
    return measure_quality(model, data, device, config)[:3]


def measure_quality(model: nn.Module, data: SegmentationData, device: torch.device, config: TrainConfig):
    """``assess`` plus the validation confusion matrix (pixels, rows truth, columns prediction)."""
    val_logits = split_logits(model, data, device, "val", config=config)
    _, masks, fovs = data.split("val")
    if data.num_classes > 2:
        return _assess_classes(model, data, device, config, val_logits)
    choice = choose_threshold(val_logits, masks, fovs)
    quality = {"val": evaluate_quality(model, data, device, "val", config, choice.threshold, val_logits)}
    confusion = confusion_matrix(
        [labels_from_logits(l, choice.threshold, spatial_dims=l.dim() - 1) for l in val_logits], masks, 2, fovs)
    per_image = {"val": with_foreground(dice_scores(val_logits, masks, fovs, choice.threshold), masks, fovs)}
    if data.test_images:
        test_logits = split_logits(model, data, device, "test", config=config)
        quality["test"] = evaluate_quality(model, data, device, "test", config, choice.threshold, test_logits)
        _, test_masks, test_fovs = data.split("test")
        per_image["test"] = with_foreground(dice_scores(test_logits, test_masks, test_fovs, choice.threshold),
                                            test_masks, test_fovs)
    return quality, choice, per_image, confusion


def _assess_classes(model, data, device, config, val_logits):
    """``assess`` for a K-class model: every split scored on its argmax label maps."""
    quality, per_image = {}, {}
    for split in ("val", "test") if data.test_images else ("val",):
        logits = val_logits if split == "val" else split_logits(model, data, device, split, config=config)
        quality[split] = evaluate_quality(model, data, device, split, config, logits=logits)
        _, masks, fovs = data.split(split)
        labels = [labels_from_logits(l, spatial_dims=l.dim() - 1) for l in logits]
        per_image[split] = [s for s in image_class_dice(labels, masks, data.num_classes, fovs) if s is not None]
    return quality, None, per_image, quality["val"]["confusion"]


def fit_spec(spec: Any, data: SegmentationData) -> Any:
    """``spec`` with the data's class count (fixed by the data, never sampled; like the input channels)."""
    if getattr(spec, "num_classes", 2) == data.num_classes:
        return spec
    return replace(spec, num_classes=data.num_classes)


def train_and_save(spec: Any, space: SearchSpace, data: SegmentationData, settings: TrialSettings,
                   folder: Path, *, extra: dict[str, Any] | None = None,
                   on_epoch: Callable[[int, float, float], None] | None = None,
                   on_costs: CostsCallback | None = None) -> TrialResult:
    """Evaluate ``spec`` and write its best-epoch checkpoint to ``folder``; returns what it measured
    (``extra`` joins it as provenance), the result whose ``to_dict`` is the checkpoint's metrics."""
    started = time.perf_counter()
    spec = fit_spec(spec, data)
    outcome = evaluate_spec(spec, space, data, settings, on_epoch=on_epoch, on_costs=on_costs)
    result = TrialResult.from_dict({**outcome.metrics(), **(extra or {}), "seconds": time.perf_counter() - started})
    save_checkpoint(folder, outcome.model, spec, space=space.name, in_channels=data.in_channels,
                    out_channels=getattr(spec, "out_channels", 1), normalization=data.normalization,
                    metrics=result.to_dict())
    return result

