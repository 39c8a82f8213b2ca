"""Prediction overlays of exported models on a few validation images, as PNG bytes for the report.

Draws on the validation split the caller rebuilds from the run's settings (``validation_data``: same
data source, image size and seed, so the same split), loads each ``best/*`` checkpoint without
pickles and draws one grid per model: rows are images; columns are image, ground truth, prediction
and the errors coloured. A volume is predicted whole (cubic sliding windows) and drawn as its middle
slice; its Dice is the volume's. A K-class model (label maps, docs/multiclass.md) draws truth and
prediction in the class colours stored in its ``metrics.json`` and scores each image by its
class-mean Dice.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from nas.deploy.checkpoint import load_checkpoint, read_checkpoint_info
from nas.data.labels import default_classes
from nas.data.loading import SegmentationData, load_data
from nas.train.labels import labels_from_logits
from nas.train.multiclass import image_class_dice
from nas.train.threshold import dice_per_image

TILE = 192  # px: small images are enlarged (nearest) to this side, large ones shrunk to it
GAP = 4
TP, FP, FN = (255, 255, 255), (230, 50, 50), (0, 200, 255)  # white, red, cyan
BACKGROUND_DIM = 0.35  # the image shows faintly under the error colours


def validation_data(source: str, *, image_size: int, seed: int, num_classes: int | None = None) -> SegmentationData:
    """The run's data split, rebuilt from its settings (data, image size, seed, and the class count a
    label-map search stored)."""
    return load_data(source, image_size=image_size, seed=seed, num_classes=num_classes)


def class_palette(metrics: Mapping[str, Any], count: int) -> list[tuple[str, tuple[int, int, int]]]:
    """``(name, (R, G, B))`` per label value of a model with ``count`` classes: the names and colours its
    ``metrics.json`` stored (``class_names`` / ``class_colours``), else the data's defaults."""
    default = default_classes(count)
    names, colours = metrics.get("class_names"), metrics.get("class_colours")
    names = names if isinstance(names, list) and len(names) == count else list(default.names)
    ok = isinstance(colours, list) and len(colours) == count and all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) for v in c) for c in colours)
    return [(str(n), tuple(c)) for n, c in zip(names, colours if ok else default.colours)]  # type: ignore[misc]


def model_classes(info: Any) -> int:
    """The class count of a checkpoint: 2 for a one-channel (sigmoid) head, else its channels."""
    return 2 if info.out_channels == 1 else int(info.out_channels)


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
    """Label map ``(1, H, W)`` int64 for a raw ``(C, H, W)`` image (binary: 0/1 at the stored threshold;
    K classes: argmax): sliding window when available, else full image."""
    sliding_window_logits = _sliding_window()
    if image.dim() == 4:  # a volume (C, D, H, W): cubic windows; the mask is (1, D, H, W)
        from nas.deploy.volume_predict import volume_logits

        logits = volume_logits(model, image, normalization=info.normalization, patch_size=patch)[None]
    elif sliding_window_logits is not None:
        logits = sliding_window_logits(model, image, normalization=info.normalization, patch_size=patch)
    else:
        with torch.inference_mode():
            logits = model(info.normalization.apply(image[None]))  # (1, 1, H, W)
    return labels_from_logits(logits[0].cpu(), info.metrics.get("threshold"), spatial_dims=image.dim() - 1)


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


def overlay_row(image: torch.Tensor, truth: torch.Tensor, prediction: torch.Tensor,
                colours: Sequence[tuple[int, int, int]] | None = None) -> list[Image.Image]:
    """Four tiles for one image: image, ground truth, prediction, errors (TP white, FP red, FN cyan).

    ``truth`` / ``prediction`` are label maps ``(1, H, W)``; with ``colours`` (K classes) the masks
    are drawn in the class colours and a pixel of the wrong foreground class counts as FP.
    """
    rgb = _rgb(image)  # (H, W, 3)
    gt, pred = truth[0].long().numpy(), prediction[0].long().numpy()  # (H, W) labels
    errors = (rgb * BACKGROUND_DIM).astype(np.uint8)
    right = (gt > 0) & (pred == gt)
    for mask, color in ((right, TP), ((pred > 0) & ~right, FP), ((gt > 0) & (pred == 0), FN)):
        errors[mask] = color
    palette = np.array(colours if colours is not None else [(0, 0, 0), (255, 255, 255)], dtype=np.uint8)
    masks = [palette[np.clip(m, 0, len(palette) - 1)] for m in (gt, pred)]  # (H, W, 3)
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


def prediction_overlays(run_dir: str | Path, load: Callable[[], SegmentationData], *, image_size: int | None = None,
                        n_images: int = 3, folders: Sequence[Path] | None = None) -> dict[int, dict[str, Any]]:
    """Trial number -> ``{"png": bytes, "images": stems, "dice": per-image Dice, "inference"}`` for each
    ``best/*`` model, plus ``"classes"`` (``[name, [R, G, B]]`` per label value) for a K-class model.

    ``load()`` gives the validation split (called only when there is a model to draw); ``image_size``
    is the search's patch side, the sliding window's (default 64).

    A checkpoint that cannot be loaded gets ``{"error": text}`` instead, so one bad folder does not
    hide the others. Runs on CPU: a few images per model take well under a second at these sizes.
    """
    run_dir = Path(run_dir)
    folders = sorted((run_dir / "best").glob("trial_*")) if folders is None else list(folders)
    if not folders:
        return {}
    data = load()
    picked = pick_images(data, n_images)
    patch = image_size or 64
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
        count = model_classes(info)
        palette = class_palette(info.metrics, count) if count > 2 else None
        rows, dice = [], []
        for index in picked:
            image, truth = data.val_images[index], data.val_masks[index].round().long()  # (C, H, W), (1, H, W)
            prediction = _predict(model, image, info, patch)  # (1, H, W) labels
            dice.append(float(dice_per_image(prediction[None] > 0, truth[None] > 0)[0]) if palette is None
                        else image_class_dice([prediction], [truth], count)[0])
            if image.dim() == 4:  # a volume: draw its middle slice
                middle = image.shape[1] // 2
                image, truth, prediction = image[:, middle], truth[:, middle], prediction[:, middle]
            rows.append(overlay_row(image, truth, prediction, [c for _, c in palette] if palette else None))
        out[number] = {"png": grid_png(rows), "images": [data.val_names[i] for i in picked], "dice": dice,
                       "inference": method}
        if palette:
            out[number]["classes"] = [[name, list(colour)] for name, colour in palette]
    return out
