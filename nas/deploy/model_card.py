"""A short ``README.md`` model card in a checkpoint folder, and ``prepare_deployment`` (ONNX + card).

The card is what someone who receives only the folder reads: what the model is, what it costs,
how well it did, how to load it and how to run it on their images. Every number comes from
``spec.json`` / ``metrics.json`` (or is counted from the rebuilt model when metrics.json lacks it).
Every text from those files or the folder (names, devices, notes) goes through ``nas.io.markdown``,
so a class name with ``|`` or a newline cannot break a table and ``<script>`` stays text; the code
blocks quote the folder name as a Python string and a shell word.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from nas.deploy.checkpoint import METRICS_FILE, SPEC_FILE, WEIGHTS_FILE, load_checkpoint, read_checkpoint_info
from nas.deploy.export import (DEFAULT_FILES, ONNX_RECORD, ExportError, ExportResult, checkpoint_spatial_dims,
                               default_input_size, export_onnx)
from nas.deploy.overlays import class_palette, model_classes
from nas.io import atomic_write_text, markdown, printable
from nas.train.threshold import logit

CARD_FILE = "README.md"
_FILE_ROLES = {
    SPEC_FILE: "architecture (JSON), channels and input normalization",
    WEIGHTS_FILE: "weights (safetensors, no pickles); SHA-256 in metrics.json",
    METRICS_FILE: "validation and test metrics, the threshold, measured costs",
    DEFAULT_FILES["onnx"]: "ONNX export (input `image`: normalized (B, C, H, W); output `logits`)",
    DEFAULT_FILES["torchscript"]: "TorchScript export (`torch.jit.load`)",
    CARD_FILE: "this card",
}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return markdown(json.dumps(value))
    return markdown(value)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "not measured"


def _costs(folder: Path, info, metrics: dict[str, Any]) -> dict[str, Any]:
    """Costs from metrics.json; params and MACs counted here when a checkpoint lacks them."""
    costs = {k: metrics.get(k) for k in ("params", "macs", "flops", "latency_ms", "latency_device", "input_shape")}
    if costs["params"] is None or costs["macs"] is None:
        from nas.costs.measure import count_macs, count_params

        model, _ = load_checkpoint(folder, "cpu")
        size = default_input_size(metrics, checkpoint_spatial_dims(info.space))
        costs["input_shape"] = costs["input_shape"] or [1, info.in_channels, *size]
        costs["params"] = count_params(model)
        costs["macs"] = count_macs(model, costs["input_shape"])
        costs["flops"] = 2 * costs["macs"]
    return costs


def _split_rows(metrics: dict[str, Any]) -> list[str]:
    """Test first (held out: the claim), then validation, at the stored threshold."""
    quality, rows = metrics.get("quality") or {}, []
    at = f" at threshold {metrics['threshold']:g}" if isinstance(metrics.get("threshold"), (int, float)) else ""
    for split, label in (("test", "test Dice (held-out images)"), ("val", "validation Dice")):
        block = quality.get(split) if isinstance(quality.get(split), dict) else {}
        if isinstance(block.get("dice"), (int, float)):
            rows.append(f"| {label}{at} | {block['dice']:.4f} |")
    if "test" not in quality:
        rows.append("| test Dice | no test split: every number here is a validation number (optimistic) |")
    return rows


def _class_lines(metrics: dict[str, Any], count: int) -> list[str]:
    """A K-class model's classes: value, name, colour, validation Dice and IoU, then the mean IoU."""
    per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    lines = ["", "## Classes", "", "| value | class | colour (RGB) | validation Dice | validation IoU |",
             "|---|---|---|---|---|"]
    for value, (name, colour) in enumerate(class_palette(metrics, count)):
        block = per_class.get(name) if isinstance(per_class.get(name), dict) else {}
        scores = [f"{block[k]:.4f}" if isinstance(block.get(k), (int, float)) else ("-" if value == 0 else "n/a")
                  for k in ("dice", "iou")]
        lines.append(f"| {value} | {markdown(name)} | {', '.join(map(str, colour))} | {scores[0]} | {scores[1]} |")
    miou = metrics.get("miou")
    lines += ["", f"Mean IoU over the foreground classes (validation, argmax): "
                  f"{f'{miou:.4f}' if isinstance(miou, (int, float)) else 'not recorded'}. Background (0) is not "
                  "scored; `n/a`: the class is absent from the validation images."]
    return lines


def _finalized_lines(metrics: dict[str, Any]) -> list[str]:
    """Which seed of the finalist stage these weights are, and why."""
    final = metrics.get("finalized")
    if not isinstance(final, dict):
        return []
    ci = final.get("dice_ci") or [None, None]
    spread = (f"{final['dice_mean']:.4f} +- {final.get('dice_std') or 0:.4f}, 95 % CI [{ci[0]:.4f}, {ci[1]:.4f}]"
              if isinstance(final.get("dice_mean"), (int, float)) and None not in ci else "not computed")
    return ["", f"Finalised: retrained for {markdown(final.get('epochs'))} epochs with {markdown(final.get('seeds'))} "
                f"seeds; {markdown(final.get('split', 'test'))} Dice over the seeds {spread}. These are the weights "
                f"of seed {markdown(final.get('seed'))}: {markdown(final.get('why'))}."]


def _latency_rows(costs: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The latency row: the end-of-search re-measurement when there is one (with its spread), else
    the single measurement taken during the search."""
    again = metrics.get("latency_remeasured")
    if isinstance(again, dict) and isinstance(again.get("latency_ms"), (int, float)):
        noisy = "; **noisy**: re-measure on a quiet machine before trusting it" if again.get("noisy") else ""
        rows = [f"| latency (median of {markdown(again.get('rounds'))} interleaved rounds, batch 1) | "
                f"{again['latency_ms']:.3g} ms on {markdown(again.get('device'))} ({markdown(again.get('engine'))}), "
                f"spread {100 * float(again.get('spread') or 0):.0f} %{noisy} |"]
        if isinstance(metrics.get("latency_ms_search"), (int, float)):
            rows.append(f"| latency measured during the search | {metrics['latency_ms_search']:.3g} ms |")
        return rows
    latency = (f"{costs['latency_ms']:.3g} ms on {markdown(costs['latency_device'])}"
               if isinstance(costs["latency_ms"], (int, float)) else "not measured")
    return [f"| latency (median, batch 1) | {latency} |"]


def render_model_card(folder: str | os.PathLike, export: ExportResult | None = None,
                      export_error: str | None = None) -> str:
    """The card's Markdown text (see ``write_model_card``)."""
    folder = Path(folder)
    info = read_checkpoint_info(folder)
    metrics = info.metrics
    costs = _costs(folder, info, metrics)
    summary = info.spec.summary() if hasattr(info.spec, "summary") else ""
    name = folder.name
    count = model_classes(info)
    lines = [f"# {markdown(name)}: {info.space} segmentation model", ""]
    head = ("(foreground probability = sigmoid(logit))." if count == 2 else
            f"(one per class, {count} classes with the background; prediction = argmax over the channels).")
    lines += [f"A `{info.space}` network ({summary}) taking {info.in_channels}-channel images and "
              f"returning {info.out_channels} logit channel(s) at the input's height and width {head}", ""]

    lines += ["## Architecture", "", "| field | value |", "|---|---|"]
    lines += [f"| {key} | {_value(value)} |" for key, value in info.spec.to_dict().items()]

    shape = costs["input_shape"]
    known = isinstance(shape, list) and len(shape) >= 4
    at = f"batch 1, {'x'.join(map(str, shape[2:]))} px" if known else "unknown input"
    lines += ["", f"## Costs ({at})", "", "| cost | value |", "|---|---|",
              f"| parameters | {_count(costs['params'])} |",
              f"| MACs | {_count(costs['macs'])} |",
              f"| FLOPs (= 2 x MACs) | {_count(costs['flops'])} |", *_latency_rows(costs, metrics)]

    lines += ["", "## Metrics", ""]
    if isinstance(metrics.get("dice"), (int, float)):
        selected = "at 0.5" if count == 2 else "(mean over the foreground classes, argmax)"
        lines += ["| metric | value |", "|---|---|", *_split_rows(metrics),
                  f"| validation Dice {selected}, best epoch (what the search selected on) | {metrics['dice']:.4f} |"]
        for key, label in (("best_epoch", "best epoch"), ("trial", "trial"), ("train_seconds", "training seconds"),
                           ("train_device", "training device")):
            if key in metrics:
                lines.append(f"| {label} | {_value(metrics[key])} |")
        if "dice_definition" in metrics:
            lines += ["", f"Dice: {markdown(metrics['dice_definition'])}."]
        lines += _finalized_lines(metrics)
        lines += _class_lines(metrics, count) if count > 2 else []
    else:
        lines.append("No validation metrics recorded in metrics.json.")

    mean = ", ".join(f"{v:.6g}" for v in info.normalization.mean)
    std = ", ".join(f"{v:.6g}" for v in info.normalization.std)
    lines += ["", "## Input normalization", "",
              f"Images scaled to [0, 1] (8-bit / 255, 16-bit / 65535), then per channel "
              f"`(x - mean) / std` with mean = [{mean}], std = [{std}] (computed on the training split). "
              "`nas-predict` applies it; a raw ONNX or TorchScript caller must apply it too."]

    has_onnx = (folder / DEFAULT_FILES["onnx"]).is_file()
    quoted, word = repr(name), shlex.quote(printable(name))  # a Python string, a shell word: never out of the block
    decide = ("labels = logits.argmax(1, keepdim=True)  # the class index per pixel" if count > 2
              else "masks = logits.sigmoid() > info.threshold  # the threshold chosen on validation")
    lines += ["", "## Use", "", "```python", "import torch", "", "import nas", "",
              f"model, spec = nas.load_checkpoint({quoted})  # eval mode, weights hash-checked",
              f"info = nas.read_checkpoint_info({quoted})",
              "x = info.normalization.apply(images)  # numpy or tensor, (B, C, H, W) in [0, 1], any H, W",
              "with torch.inference_mode():", "    logits = model(x)", decide,
              "```", "", "Whole images of any size, with sliding-window inference (Gaussian-blended windows):", "",
              "```bash", f"nas-predict --checkpoint {word} --input IMAGES/ --out MASKS/ --overlay"
              + ("  # add --onnx to run model.onnx" if has_onnx else ""), "```"]
    threshold = metrics.get("threshold") if isinstance(metrics.get("threshold"), (int, float)) else None
    why = ("the threshold chosen on the validation images, stored in metrics.json; `nas-predict` uses it"
           if threshold is not None else "no threshold stored: the default")
    if count > 2:
        lines += ["", f"Prediction = argmax over the {count} logit channels: the label map's value is the class "
                      "index (no threshold; `nas-predict` refuses `--threshold`): apply the same to the ONNX or "
                      "TorchScript `logits`."]
    else:
        lines += ["", f"Foreground where sigmoid(logit) > {threshold or 0.5:g} ({why}; `--threshold` overrides), "
                      f"i.e. where logit > {logit(threshold or 0.5):.4g}: apply the same to the ONNX or TorchScript "
                      "`logits`."]
    record = metrics.get(ONNX_RECORD) if isinstance(metrics.get(ONNX_RECORD), dict) else None
    if export is not None:
        lines += ["", f"{markdown(export.path.name)} was checked against PyTorch with onnxruntime (batch dynamic, "
                      f"spatial size {export.spatial()}): {export.checks_text()}."]
    elif record is not None and has_onnx:
        lines += ["", f"{markdown(record.get('file'))} was checked against PyTorch with onnxruntime (batch dynamic, "
                      f"spatial size {markdown(record.get('spatial'))}): {markdown(record.get('checks'))}."]
    if record is not None and has_onnx:
        lines += ["", f"Its SHA-256 is recorded in metrics.json (`onnx.sha256`); `nas-predict --onnx` refuses "
                      "a `model.onnx` that does not match it."]
    if export_error is not None:
        lines += ["", f"No ONNX export: {markdown(export_error)}."]

    lines += ["", "## Files", "", "| file | what | bytes |", "|---|---|---|"]
    present = sorted({*(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), CARD_FILE})
    for file in present:
        size = "-" if file == CARD_FILE else f"{(folder / file).stat().st_size:,}"
        shown = f"`{file}`" if file in _FILE_ROLES else markdown(file)  # a name of ours, or text from the folder
        lines.append(f"| {shown} | {_FILE_ROLES.get(file, '')} | {size} |")

    lines += ["", f"Written with torch {torch.__version__}, Python {platform.python_version()}."]
    return "\n".join(lines) + "\n"


def write_model_card(folder: str | os.PathLike, export: ExportResult | None = None,
                     export_error: str | None = None) -> Path:
    """Write ``README.md`` into a checkpoint folder (atomically); ``export`` adds its parity line."""
    return atomic_write_text(Path(folder) / CARD_FILE, render_model_card(folder, export, export_error))


def prepare_deployment(folder: str | os.PathLike, *,
                       input_size: int | Sequence[int] | None = None) -> ExportResult | None:
    """Write ``model.onnx`` (parity-checked) and ``README.md`` into a checkpoint folder.

    Meant for every ``best/`` folder at the end of a run, so one architecture the exporter cannot
    handle must not end the run: then no ``model.onnx`` is written, the card says why, a warning is
    issued and ``None`` is returned. ``input_size`` defaults to the size the costs were measured at.
    """
    folder = Path(folder)
    try:
        result = export_onnx(folder, folder / DEFAULT_FILES["onnx"], input_size=input_size)
    except ExportError as error:
        write_model_card(folder, export_error=str(error))
        warnings.warn(f"{folder}: no ONNX export ({error})", stacklevel=2)
        return None
    write_model_card(folder, result)
    return result
