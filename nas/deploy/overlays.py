"""Prediction overlays of exported models on a few validation images, as PNG bytes for the report.

Rebuilds the validation split from the study's search config (same data source, image size and
seed, so the same split), loads each ``best/*`` checkpoint without pickles and draws one grid per
model: rows are images; columns are image, ground truth, prediction and the errors coloured. A
volume is predicted whole (cubic sliding windows) and drawn as its middle slice; its Dice is the
volume's.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from nas.deploy.checkpoint import load_checkpoint, read_checkpoint_info
from nas.data.loading import SegmentationData, load_data
from nas.train.threshold import dice_per_image, logit

TILE = 192  # px: small images are enlarged (nearest) to this side, large ones shrunk to it
GAP = 4
TP, FP, FN = (255, 255, 255), (230, 50, 50), (0, 200, 255)  # white, red, cyan
BACKGROUND_DIM = 0.35  # the image shows faintly under the error colours


def validation_data(config: Mapping[str, Any]) -> SegmentationData:
    """The run's data split, rebuilt from ``study.user_attrs["search_config"]`` (data, image_size, seed)."""
    return load_data(str(config["data"]), image_size=int(config["image_size"]), seed=int(config["seed"]))


def pick_images(data: SegmentationData, n_images: int) -> list[int]:
    """Evenly spaced validation indices: deterministic and spread over the set."""
    count = len(data.val_images)
    if count == 0 or n_images < 1:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, min(n_images, count))})


def _sliding_window() -> Any:
    try:
        from nas.train.inference import sliding_window_logits
    except ImportError:
        return None
    return sliding_window_logits


def _predict(model: torch.nn.Module, image: torch.Tensor, info: Any, patch: int) -> torch.Tensor:
    """Binary mask ``(1, H, W)`` for a raw ``(C, H, W)`` image: sliding window when available, else full image."""
    sliding_window_logits = _sliding_window()
    if image.dim() == 4:  # a volume (C, D, H, W): cubic windows; the mask is (1, D, H, W)
        from nas.deploy.volume_predict import volume_logits

        logits = volume_logits(model, image, normalization=info.normalization, patch_size=patch)[None]
    elif sliding_window_logits is not None:
        logits = sliding_window_logits(model, image, normalization=info.normalization, patch_size=patch)
    else:
        with torch.inference_mode():
            logits = model(info.normalization.apply(image[None]))  # (1, 1, H, W)
    return (logits[0, :1] > logit(info.metrics.get("threshold", 0.5))).cpu()  # (1, H, W), at the stored threshold


def _rgb(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8 (grey repeated; extra channels dropped)."""
    array = image.detach().cpu().float().clamp(0, 1).numpy()
    array = np.repeat(array[:1], 3, axis=0) if array.shape[0] < 3 else array[:3]
    return (array.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def _tile(array: np.ndarray, smooth: bool) -> Image.Image:
    picture = Image.fromarray(array)
    scale = TILE / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 or not smooth else Image.Resampling.BILINEAR
    return picture.resize(size, resample)


def overlay_row(image: torch.Tensor, truth: torch.Tensor, prediction: torch.Tensor) -> list[Image.Image]:
    """Four tiles for one image: image, ground truth, prediction, errors (TP white, FP red, FN cyan)."""
    rgb = _rgb(image)  # (H, W, 3)
    gt = truth[0].bool().numpy()  # (H, W)
    pred = prediction[0].bool().numpy()  # (H, W)
    errors = (rgb * BACKGROUND_DIM).astype(np.uint8)
    for mask, color in ((gt & pred, TP), (pred & ~gt, FP), (gt & ~pred, FN)):
        errors[mask] = color
    masks = [np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2) for m in (gt, pred)]
    return [_tile(rgb, True), _tile(masks[0], False), _tile(masks[1], False), _tile(errors, False)]


def grid_png(rows: Sequence[Sequence[Image.Image]]) -> bytes:
    width = max(sum(t.width for t in row) + GAP * (len(row) - 1) for row in rows)
    height = sum(max(t.height for t in row) for row in rows) + GAP * (len(rows) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for row in rows:
        x = 0
        for tile in row:
            canvas.paste(tile, (x, y))
            x += tile.width + GAP
        y += max(t.height for t in row) + GAP
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _trial_number(folder: Path, metrics: Mapping[str, Any]) -> int | None:
    if isinstance(metrics.get("trial"), int):
        return metrics["trial"]
    match = re.search(r"(\d+)$", folder.name)
    return int(match.group(1)) if match else None


def prediction_overlays(run_dir: str | Path, config: Mapping[str, Any], *, n_images: int = 3,
                        folders: Sequence[Path] | None = None, data: SegmentationData | None = None,
                        ) -> dict[int, dict[str, Any]]:
    """Trial number -> ``{"png": bytes, "images": stems, "dice": per-image Dice, "inference"}`` for each ``best/*`` model.

    A checkpoint that cannot be loaded gets ``{"error": text}`` instead, so one bad folder does not
    hide the others. Runs on CPU: a few images per model take well under a second at these sizes.
    """
    run_dir = Path(run_dir)
    folders = sorted((run_dir / "best").glob("trial_*")) if folders is None else list(folders)
    if not folders:
        return {}
    data = data if data is not None else validation_data(config)
    picked = pick_images(data, n_images)
    patch = int(config.get("image_size") or 64)
    method = (f"sliding window ({patch} px patches, Gaussian blending)" if _sliding_window() is not None
              else "whole image in one forward pass")
    out: dict[int, dict[str, Any]] = {}
    for folder in folders:
        try:
            info = read_checkpoint_info(folder)
            number = _trial_number(folder, info.metrics)
            model, _ = load_checkpoint(folder)
        except (ValueError, OSError) as error:
            number = _trial_number(folder, {})
            if number is not None:
                out[number] = {"error": f"{folder.name}: {error}"}
            continue
        if number is None:
            continue
        rows, dice = [], []
        for index in picked:
            image, truth = data.val_images[index], data.val_masks[index]  # (C, H, W), (1, H, W)
            prediction = _predict(model, image, info, patch)  # (1, H, W) bool
            dice.append(float(dice_per_image(prediction[None], truth[None] > 0.5)[0]))
            if image.dim() == 4:  # a volume: draw its middle slice
                middle = image.shape[1] // 2
                image, truth, prediction = image[:, middle], truth[:, middle], prediction[:, middle]
            rows.append(overlay_row(image, truth > 0.5, prediction))
        out[number] = {"png": grid_png(rows), "images": [data.val_names[i] for i in picked], "dice": dice,
                       "inference": method}
    return out
