"""One trial without Optuna: ``Suggest`` -> spec -> costs -> trained model -> checkpoint + metrics.

The Optuna adapter (``nas.optuna_study``) and any other driver call ``run_trial`` with something
that has the three ``suggest_*`` methods; everything here is plain PyTorch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from search_spaces import SearchSpace, Suggest

from .checkpoint import save_checkpoint
from .costs import Costs, measure_costs
from .data import SegmentationData
from .training import TrainConfig, TrainResult, evaluate_quality, resolve_device, train_model


@dataclass(frozen=True)
class TrialSettings:
    image_size: int  # input side for costs (MACs, latency) and the training patch side
    train: TrainConfig
    latency_warmup: int = 3
    latency_repeats: int = 10


@dataclass
class TrialOutcome:
    spec: Any
    costs: Costs
    train: TrainResult
    model: nn.Module  # best-epoch weights loaded, eval mode
    quality: dict[str, Any] = field(default_factory=dict)  # {"val": {...}, "test": {...}} (nas.metrics)

    def metrics(self) -> dict[str, Any]:
        """Everything measured, JSON-safe (NaN/inf -> None): stored on the trial and in ``metrics.json``."""
        return json_safe({
            "dice": self.train.best_dice,
            "dice_definition": "foreground, per image, mean over validation images, best epoch",
            "best_epoch": self.train.best_epoch,
            "epoch_dice": self.train.epoch_dice,
            "epoch_loss": self.train.epoch_loss,
            **self.costs.to_dict(),
            "train_seconds": self.train.seconds,
            "train_images_per_second": self.train.images_per_second,
            "train_device": self.train.device,
            "train_peak_memory_bytes": self.train.peak_memory_bytes,
            "epochs_run": len(self.train.epoch_dice),
            "stopped_early": self.train.stopped_early,
            "quality": self.quality,
        })


def json_safe(value: Any) -> Any:
    """A copy with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def evaluate_spec(spec: Any, space: SearchSpace, data: SegmentationData, settings: TrialSettings,
                  on_epoch: Callable[[int, float, float], None] | None = None) -> TrialOutcome:
    """Build, cost and train one architecture; costs come first since they need no training."""
    torch.manual_seed(settings.train.seed)
    model = space.build_model(spec, data.in_channels, 1)
    device = resolve_device(settings.train.device)
    shape = (1, data.in_channels, settings.image_size, settings.image_size)
    costs = measure_costs(model.to(device), shape, device,
                          warmup=settings.latency_warmup, repeats=settings.latency_repeats)
    result = train_model(model, data, settings.train, on_epoch=on_epoch)
    model.load_state_dict(result.state_dict)
    model.eval()
    quality = {"val": evaluate_quality(model, data, device, "val", settings.train)}
    if data.test_images:
        quality["test"] = evaluate_quality(model, data, device, "test", settings.train)
    return TrialOutcome(spec=spec, costs=costs, train=result, model=model, quality=quality)


def train_and_save(spec: Any, space: SearchSpace, data: SegmentationData, settings: TrialSettings,
                   folder: Path, *, extra: dict[str, Any] | None = None,
                   on_epoch: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
    """Evaluate ``spec`` and write its best-epoch checkpoint to ``folder``; returns its metrics."""
    started = time.perf_counter()
    outcome = evaluate_spec(spec, space, data, settings, on_epoch=on_epoch)
    metrics = {**outcome.metrics(), **(extra or {}), "seconds": time.perf_counter() - started}
    save_checkpoint(folder, outcome.model, spec, space=space.name, in_channels=data.in_channels,
                    out_channels=1, normalization=data.normalization, metrics=metrics)
    return metrics


def run_trial(suggest: Suggest, number: int, space: SearchSpace, data: SegmentationData,
              settings: TrialSettings, run_dir: Path,
              on_spec: Callable[[Any], None] | None = None,
              on_epoch: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
    """Sample, evaluate and checkpoint trial ``number``; returns the attributes to store on it."""
    started = time.perf_counter()
    spec = space.sample_spec(suggest)
    if on_spec is not None:
        on_spec(spec)
    checkpoint = Path("trials") / f"trial_{number:04d}"
    metrics = train_and_save(spec, space, data, settings, run_dir / checkpoint, extra={"trial": number},
                             on_epoch=on_epoch)
    metrics["seconds"] = time.perf_counter() - started
    return {"spec": spec.to_dict(), "metrics": metrics, "checkpoint": checkpoint.as_posix()}
