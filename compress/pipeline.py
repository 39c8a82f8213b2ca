"""One parent checkpoint -> pruned, fine-tuned (optionally distilled), gated and quantized variants.

Each kept variant is an ordinary checkpoint (``spec.json`` + ``model.safetensors`` + ``metrics.json``)
under ``<out>/<parent>_<importance>_r<ratio>/`` with ``metrics["kind"] = "compressed"`` and
``metrics["parent_trial"]``; a variant that loses more than ``max_dice_drop`` Dice points is listed
in the index with ``kept: false`` and not written. Dice drops are in points (100 x Dice). The Dice is
the trainer's ``validation_dice``: binary, the foreground Dice over the images with foreground; a
K-class model's is the mean over the foreground classes (docs/multiclass.md), so the gate is on it.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from nas.deploy.checkpoint import METRICS_FILE, load_checkpoint, read_checkpoint_info, save_checkpoint
from nas.costs.measure import measure_costs
from nas.data.loading import SegmentationData
from nas.io import atomic_write_json, json_safe
from nas.data.patches import iterate_train_batches
from nas.train.trainer import TrainConfig, dice_focal_loss, validation_dice

from compress.finetune import finetune
from compress.prune import prune_channels
from compress.quantize import export_precisions


@dataclass(frozen=True)
class CompressOptions:
    ratios: tuple[float, ...] = (0.5,)
    importances: tuple[str, ...] = ("magnitude",)
    ratio_of: str = "macs"
    global_pruning: bool = False
    iterative_steps: int = 1
    round_to: int = 8
    finetune_epochs: int = 2
    distill: bool = False
    distill_weight: float = 1.0
    distill_loss: str = "mse"
    max_dice_drop: float | None = None  # Dice points; None keeps every variant
    quantize: bool = True
    image_size: int = 64
    train: TrainConfig = TrainConfig()


DICE_DEFINITIONS = {False: "foreground, per image, mean over the validation images with foreground",
                    True: "foreground classes: per class the mean over the validation images that have it, "
                          "then the mean over the classes; argmax"}


CLASS_KEYS = ("num_classes", "class_names", "class_colours")  # what nas-predict and the card name the labels by


def mean_dice(model: torch.nn.Module, data: SegmentationData, config: TrainConfig) -> float:
    """The Dice the trainer ranks epochs by (binary: images with foreground; K classes: class mean)."""
    return validation_dice(model, data, torch.device("cpu"), config)


def taylor_loss(data: SegmentationData, config: TrainConfig, batches: int = 2) -> Callable:
    """Task loss on a few fixed training batches: the gradients taylor importance reads."""
    fixed = []
    for batch in iterate_train_batches(data, patch_size=config.patch_size, batch_size=config.batch_size,
                                       seed=config.seed, epoch=0, patches_per_epoch=batches * config.batch_size):
        fixed.append((data.normalization.apply(batch[0], spatial_dims=data.spatial_dims), batch[1]))

    def loss(model: torch.nn.Module) -> torch.Tensor:
        return sum(dice_focal_loss(model(x), y, config.focal_gamma, config.focal_weight) for x, y in fixed)
    return loss


def variant_name(parent: str, importance: str, ratio: float) -> str:
    return f"{parent}_{importance}_r{ratio:g}"


def parent_trial(folder: Path, metrics: dict[str, Any]) -> int | None:
    if isinstance(metrics.get("trial"), int):
        return metrics["trial"]
    match = re.search(r"(\d+)$", folder.name)
    return int(match.group(1)) if match else None


def _relative(path: Path, run_dir: str | Path | None) -> str:
    """``path`` relative to the run (as the trial table stores checkpoints), else absolute."""
    try:
        return path.resolve().relative_to(Path(run_dir).resolve()).as_posix() if run_dir else str(path)
    except ValueError:
        return str(path.resolve())


def compress_checkpoint(folder: str | Path, data: SegmentationData, out_dir: str | Path, options: CompressOptions,
                        *, run_dir: str | Path | None = None,
                        log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every (importance, ratio) variant of one checkpoint; returns the index entries (see ``compress.index``)."""
    folder, out_dir = Path(folder), Path(out_dir)
    info = read_checkpoint_info(folder)
    parent, spec = load_checkpoint(folder)
    config = replace(options.train, epochs=max(1, options.finetune_epochs), patch_size=options.image_size,
                     device="cpu")
    shape = (1, info.in_channels, *(options.image_size,) * data.spatial_dims)
    example = torch.zeros(shape)
    parent_dice = mean_dice(parent, data, config)
    parent_macs = measure_costs(parent, shape, repeats=1).macs
    trial = parent_trial(folder, info.metrics)
    log(f"{folder.name}: dice {parent_dice:.4f}, {parent_macs / 1e6:.2f} MMAC")
    entries = []
    for importance in options.importances:
        loss_fn = taylor_loss(data, config) if importance == "taylor" else None
        for ratio in options.ratios:
            started = time.perf_counter()
            name = variant_name(folder.name, importance, ratio)
            model, new_spec = prune_channels(
                parent, spec, importance=importance, ratio=ratio, ratio_of=options.ratio_of,
                global_pruning=options.global_pruning, iterative_steps=options.iterative_steps,
                round_to=options.round_to, example_input=example, loss_fn=loss_fn, seed=config.seed)
            pruned_dice = mean_dice(model.eval(), data, config)
            result = None
            if options.finetune_epochs > 0:
                result = finetune(model, data, config, teacher=parent if options.distill else None,
                                  distill_weight=options.distill_weight, distill_loss=options.distill_loss)
                if result.best_dice >= pruned_dice:
                    model.load_state_dict(result.state_dict)
            model.eval()
            costs = measure_costs(model, shape)
            dice = mean_dice(model, data, config)
            drop = 100.0 * (parent_dice - dice)
            kept = options.max_dice_drop is None or drop <= options.max_dice_drop
            metrics = json_safe({
                "kind": "compressed", "parent_trial": trial, "parent_checkpoint": folder.name,
                "importance": importance, "ratio": ratio, "ratio_of": options.ratio_of,
                "global_pruning": options.global_pruning, "iterative_steps": options.iterative_steps,
                "round_to": options.round_to, "finetune_epochs": options.finetune_epochs,
                "distill": options.distill, "distill_loss": options.distill_loss if options.distill else None,
                "dice": dice,
                "dice_definition": DICE_DEFINITIONS[data.num_classes > 2],
                "dice_before_finetune": pruned_dice, "parent_dice": parent_dice, "dice_drop_points": drop,
                "parent_macs": parent_macs, "macs_reduction": 1 - costs.macs / parent_macs,
                "epoch_dice": result.epoch_dice if result else [],
                "best_epoch": result.best_epoch if result else None,
                **costs.to_dict(), "seconds": time.perf_counter() - started,
                **{key: info.metrics[key] for key in CLASS_KEYS if key in info.metrics},  # the parent's classes
            })
            entry = {"name": name, "parent": folder.name, "kept": kept, "spec": new_spec.to_dict(),
                     "checkpoint": None, "metrics": metrics}
            verdict = "kept" if kept else f"rejected (drop > {options.max_dice_drop:g} points)"
            log(f"  {name}: dice {dice:.4f} ({drop:+.2f} points), MACs -{100 * metrics['macs_reduction']:.1f} %"
                f" -> {verdict}")
            if kept:
                target = out_dir / name
                save_checkpoint(target, model, new_spec, space=info.space, in_channels=info.in_channels,
                                out_channels=info.out_channels, normalization=info.normalization, metrics=metrics)
                if options.quantize:
                    metrics["quantization"] = json_safe(export_precisions(
                        model, target, data, input_size=options.image_size, seed=config.seed, config=config))
                    stored = read_checkpoint_info(target).metrics  # keeps weights_sha256
                    atomic_write_json(target / METRICS_FILE, {**stored, "quantization": metrics["quantization"]})
                entry["checkpoint"] = _relative(target, run_dir)
            entries.append(entry)
    return entries
