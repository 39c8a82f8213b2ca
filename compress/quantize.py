"""fp32, fp16 and static INT8 ONNX models of one checkpoint, each measured: file size, CPU latency, Dice.

* fp32: ``nas.deploy.export.export_onnx`` (parity-checked against PyTorch) -> ``model.onnx``.
* fp16: the fp32 graph converted by ONNX Runtime's ``float16`` tool with fp32 inputs/outputs kept
  (``keep_io_types``) -> ``model.fp16.onnx``; meant for GPUs, measured on CPU like the others.
* int8: ONNX Runtime ``quantize_static``, QDQ format, per-channel int8 weights, uint8 activations,
  MinMax calibration on normalized training patches -> ``model.int8.onnx``. Every conv is
  quantized, transposed ones included: measured on the benchmark's parent they agree with fp32 on as
  many pixels as when left in float (99.86 %, Dice unchanged), and in float they held a quarter
  of the int8 file. ``keep_transposed_float=True`` leaves them in float where they do not.
  The quantizer names every Q/DQ node and tensor after the layer it wraps (about 12 % of a small
  model's file); ``compact_names`` renames them to short ids (graph input/output names kept).

No ``torch.ao.quantization`` (deprecated for removal). Latency is the median batch-1 ONNX Runtime
run at the export size with as many intra-op threads as torch uses, after warm-up.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.costs.measure import measure_latency
from nas.data.loading import SegmentationData
from nas.deploy.export import INPUT_NAME, export_onnx, record_onnx
from nas.io import atomic_write
from nas.data.patches import iterate_train_batches
from nas.train.metrics import foreground_mean
from nas.train.multiclass import mean_class_dice
from nas.train.trainer import TrainConfig, dice_per_image, predict_masks

FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@dataclass
class Precision:
    """One ONNX model; ``error`` says why a measurement is missing (e.g. no fp16 kernel on CPU)."""

    precision: str
    path: str
    size_bytes: int
    latency_ms: float | None = None
    dice: float | None = None
    agreement_with_fp32: float | None = None  # share of validation pixels with the fp32 ONNX mask
    error: str | None = None


class OrtPredictor(nn.Module):
    """An ONNX Runtime session as a module: normalized ``(B, C, *S)`` -> logits, for ``nas.train.trainer``'s evaluation."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {INPUT_NAME: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))  # (B, out, *S)


def session(path: str | Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def calibration_batches(data: SegmentationData, patch_size: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` normalized training patches, each ``(1, C, P, P)`` float32 (the patch iterator's crops)."""
    out: list[np.ndarray] = []
    epoch = 1
    while len(out) < count:
        for images, _ in iterate_train_batches(data, patch_size=patch_size, batch_size=1, seed=seed + 7919,
                                               epoch=epoch, patches_per_epoch=count):
            x = data.normalization.apply(images, spatial_dims=data.spatial_dims)  # (1, C, P, P)
            out.append(x.numpy().astype(np.float32))
        epoch += 1
    return out[:count]


def compact_names(model: Any) -> Any:
    """Short ids for every node and inner tensor name (weights included), no ``value_info``; same graph."""
    graph = model.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names):x}")

    for init in graph.initializer:
        init.name = short(init.name)
    for index, node in enumerate(graph.node):
        node.name = f"n{index:x}"
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    return model


def quantize_int8(fp32_path: Path, int8_path: Path, batches: list[np.ndarray], *,
                  keep_transposed_float: bool = False) -> list[str]:
    """Static QDQ quantization; returns the names of the nodes left in float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {INPUT_NAME: item}

    graph = onnx.load(str(fp32_path)).graph
    excluded = [n.name for n in graph.node if n.op_type == "ConvTranspose"] if keep_transposed_float else []

    def write(tmp: str) -> None:
        quantize_static(str(fp32_path), tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded)
        onnx.save(compact_names(onnx.load(tmp)), tmp)

    quiet = logging.getLogger()  # quantize_static logs a pre-processing hint on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        atomic_write(int8_path, write)
    finally:
        quiet.setLevel(level)
    return excluded


def convert_fp16(fp32_path: Path, fp16_path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    atomic_write(fp16_path, lambda tmp: onnx.save(converted, tmp))


def ort_latency(run: Any, shape: tuple[int, ...], warmup: int = 3, repeats: int = 20) -> float:
    x = np.zeros(shape, dtype=np.float32)
    for _ in range(warmup):
        run.run(None, {INPUT_NAME: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run.run(None, {INPUT_NAME: x})
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _dice(predictions: list[torch.Tensor], data: SegmentationData) -> float:
    """The trainer's validation Dice of these predictions (K classes: label maps, the class mean)."""
    _, masks, fovs = data.split("val")
    if data.num_classes > 2:
        return mean_class_dice(predictions, masks, data.num_classes, fovs)
    scores = []
    for index, prediction in enumerate(predictions):
        truth = masks[index] > 0.5
        if fovs:
            inside = fovs[index] > 0.5
            prediction, truth = prediction & inside, truth & inside
        scores.append(float(dice_per_image(prediction[None], truth[None])[0]))
    return foreground_mean(scores, masks, fovs)  # the trainer's mean: images with foreground


def export_precisions(model: nn.Module, folder: str | Path, data: SegmentationData, *, input_size: int,
                      calibration_patches: int = 32, seed: int = 0, keep_transposed_float: bool = False,
                      latency_repeats: int = 20, config: TrainConfig | None = None) -> dict[str, Any]:
    """Write ``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx`` into ``folder`` and measure each.

    Returns ``{"pytorch_fp32_latency_ms", "input_shape", "float_nodes", "precisions": {name: Precision}}``
    (JSON-safe via ``asdict``). Dice is on the validation split, as in training.
    """
    folder = Path(folder)
    model = model.cpu().float().eval()
    config = config or TrainConfig(patch_size=input_size)
    shape = (1, data.in_channels, *(input_size,) * data.spatial_dims)
    paths = {name: folder / file for name, file in FILES.items()}
    exported = export_onnx(model, paths["fp32"], input_size=input_size, in_channels=data.in_channels,
                           spatial_dims=data.spatial_dims)
    if (folder / "metrics.json").is_file():  # a checkpoint folder: its metrics.json vouches for model.onnx
        record_onnx(folder, exported)
    batches = calibration_batches(data, input_size, calibration_patches, seed)
    float_nodes = quantize_int8(paths["fp32"], paths["int8"], batches, keep_transposed_float=keep_transposed_float)
    precisions: dict[str, Precision] = {}
    try:
        convert_fp16(paths["fp32"], paths["fp16"])
    except Exception as error:  # the converter refusing an op: say so, keep the other two
        precisions["fp16"] = Precision("fp16", FILES["fp16"], 0, error=f"conversion failed: {error}")
    reference = None
    for name in ("fp32", "int8", "fp16"):
        if name in precisions:
            continue
        entry = Precision(name, FILES[name], paths[name].stat().st_size)
        precisions[name] = entry
        try:
            run = session(paths[name])
            entry.latency_ms = ort_latency(run, shape, repeats=latency_repeats)
            masks = predict_masks(OrtPredictor(run), data, torch.device("cpu"), config=config)
        except Exception as error:  # e.g. an fp16 op without a CPU kernel
            entry.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            continue
        entry.dice = _dice(masks, data)
        if reference is None:
            reference = masks
        same = sum(int((a == b).sum()) for a, b in zip(masks, reference))
        entry.agreement_with_fp32 = same / max(1, sum(m.numel() for m in reference))
    return {
        "input_shape": list(shape),
        "pytorch_fp32_latency_ms": measure_latency(model, shape, warmup=3, repeats=latency_repeats),
        "float_nodes": float_nodes,
        "precisions": {name: asdict(entry) for name, entry in precisions.items()},
    }
