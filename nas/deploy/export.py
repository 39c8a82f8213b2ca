"""Exports of a checkpoint for deployment: ONNX, TorchScript, safetensors; each checked against PyTorch.

Both ONNX (legacy TorchScript-based exporter) and TorchScript record one trace, so Python control
flow in ``forward`` (e.g. "pad only when the size is not a multiple of 2^(depth-1)") is frozen at
the traced size. An export therefore claims dynamic height/width only after its outputs match
PyTorch at the export size *and* at an odd probe size. It traces first at an odd size (where such
padding branches are taken, with pad amounts computed from the input's shape), then at the requested
size, and if both fail the check the spatial size is fixed (``nas-predict`` feeds fixed-size windows
anyway). The batch axis is always dynamic. Inputs are normalized images, as
for the PyTorch model; the normalization is in ``spec.json`` and the model card. Besides the logits,
each check compares the labels both give through ``nas.train.labels.labels_from_logits`` (logit > 0
for one channel, the argmax over K class channels): a near tie between two classes can flip an
argmax on fp32 noise, so at least ``LABEL_AGREEMENT`` of the pixels must agree.

An ONNX export written as a checkpoint folder's own ``model.onnx`` is recorded in its
``metrics.json`` (``onnx``: the file's SHA-256, the weights' SHA-256 it was exported from, the
parity checks), and ``checked_onnx`` refuses a ``model.onnx`` that does not match: a swapped file
would otherwise run another model silently.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from search_spaces import get_space

from nas.deploy.checkpoint import (METRICS_FILE, WEIGHTS_FILE, CheckpointError, file_sha256, load_checkpoint,
                                   read_checkpoint_info, verify_weights)
from nas.io import atomic_write, atomic_write_json
from nas.train.labels import labels_from_logits

FORMATS = ("onnx", "torchscript", "safetensors")
DEFAULT_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "safetensors": WEIGHTS_FILE}
DEFAULT_OPSET = 17
TOLERANCE = 1e-3  # max abs logit difference over max(1, max |logit|): fp32 noise of deep instance-norm nets ~2e-4
LABEL_AGREEMENT = 0.999  # share of pixels whose label (logit > 0, or argmax) matches PyTorch's
INPUT_NAME, OUTPUT_NAME = "image", "logits"
SPATIAL_AXES = ("depth", "height", "width")
_PROBE_OFFSETS = (4, 6, 2)  # added to each side (then made odd) for the second parity check
Source = Union[str, os.PathLike, nn.Module]
ONNX_RECORD = "onnx"  # metrics.json key: {"file", "sha256", "weights_sha256", "spatial", "checks"}


class ExportError(RuntimeError):
    """An export that failed or does not match PyTorch; the message is one line."""


@dataclass
class ExportResult:
    """What was written and how well it matches PyTorch.

    ``checks``: input shape -> max |exported - PyTorch| / max(1, max |PyTorch logit|) on a random input;
    ``labels``: input shape -> share of pixels whose label (``labels_from_logits``) matches PyTorch's.
    """

    path: Path
    format: str
    input_size: tuple[int, ...]  # spatial: (H, W), or (D, H, W) for a volume model
    dynamic_spatial: bool
    checks: dict[tuple[int, ...], float] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""
    labels: dict[tuple[int, ...], float] = field(default_factory=dict)

    def summary(self) -> str:
        if self.format == "safetensors":
            return f"wrote {self.path} (safetensors; {self.note})"
        text = f"wrote {self.path} ({self.format}; batch dynamic, spatial {self.spatial()}; {self.seconds:.2f} s)"
        if self.checks:
            text += f"; {self.checks_text()}"
        return text + (f"; {self.note}" if self.note else "")

    def spatial(self) -> str:
        return "dynamic" if self.dynamic_spatial else f"fixed {_text(self.input_size)}"

    def checks_text(self) -> str:
        checks = ", ".join(f"{'x'.join(map(str, shape))}: {diff:.2e}" for shape, diff in self.checks.items())
        text = f"max |logit difference| / max(1, max |logit|) vs PyTorch per input shape: {checks}"
        if self.labels:
            text += f"; labels (logit > 0, or the argmax of K classes) agree on {100 * min(self.labels.values()):.2f} %"
        return text


def _text(size: Sequence[int]) -> str:
    return "x".join(str(s) for s in size)


def spatial_size(input_size: int | Sequence[int], dims: int = 2) -> tuple[int, ...]:
    """``S`` -> ``(S,) * dims``; a sequence must have one positive side per spatial dimension."""
    size = (input_size,) * dims if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    if len(size) != dims or min(size) < 1:
        raise ValueError(f"input_size must be a positive int or {dims} sides, got {input_size!r}")
    return size


def checkpoint_spatial_dims(space_name: str) -> int:
    """2 for images, 3 for volumes: declared by the search space (2 when a space does not say)."""
    return int(getattr(get_space(space_name), "spatial_dims", 2))


def resolve_model(source: Source, input_size: int | Sequence[int] | None = None, in_channels: int | None = None,
                  spatial_dims: int = 2) -> tuple[nn.Module, int, tuple[int, ...]]:
    """``(eval CPU float32 model, in_channels, spatial input size)`` from a checkpoint folder or a model.

    ``input_size`` defaults to the size a checkpoint's costs were measured at, else 64 per side.
    """
    if isinstance(source, nn.Module):
        channels = in_channels if in_channels is not None else getattr(source, "in_channels", None)
        if channels is None:
            raise ValueError("in_channels is needed to export a model that does not have an in_channels attribute")
        size = spatial_size(64 if input_size is None else input_size, spatial_dims)
        return source.cpu().float().eval(), int(channels), size
    model, _ = load_checkpoint(source, "cpu")
    info = read_checkpoint_info(source)
    dims = checkpoint_spatial_dims(info.space)
    size = default_input_size(info.metrics, dims) if input_size is None else spatial_size(input_size, dims)
    return model.float().eval(), info.in_channels, size


def _odd(size: int) -> int:
    return size + 1 if size % 2 == 0 else size


def _probe_shapes(size: tuple[int, ...], channels: int) -> list[tuple[int, ...]]:
    """The export size at batch 1, and odd sides (not a multiple of any 2^k) at batch 2."""
    probe = tuple(_odd(side + offset) for side, offset in zip(size, _PROBE_OFFSETS[-len(size):]))
    return [(1, channels, *size), (2, channels, *probe)]


def _max_diff(run: Any, model: nn.Module, shape: tuple[int, ...], seed: int) -> tuple[float, float | None]:
    """Max |exported - PyTorch| on a seeded standard-normal input (normalized images are ~N(0, 1)),
    and the share of pixels where both give the same label (``labels_from_logits``; None for a bare
    model with 2 output channels, which no segmentation head has)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = model(x).numpy()
    try:
        got = np.asarray(run(x))
    except Exception as error:  # a runtime refusing the shape (e.g. a frozen pad) is a failed check
        raise ExportError(f"exported model fails at input {shape}: {str(error).splitlines()[0][:200]}") from None
    if got.shape != expected.shape:
        raise ExportError(f"exported model returns {got.shape} at input {shape}, PyTorch {expected.shape}")
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max()) / scale
    if expected.shape[1] == 2:
        return diff, None
    dims = len(shape) - 2
    same = labels_from_logits(got.astype(np.float32), spatial_dims=dims) == labels_from_logits(expected, spatial_dims=dims)
    return diff, float(same.mean())


def _verify(run: Any, model: nn.Module, shapes: list[tuple[int, ...]], tolerance: float,
            labels: dict | None = None) -> dict:
    """Shape -> relative logit difference; ``labels`` (when given) collects the label agreement."""
    checks = {}
    for seed, shape in enumerate(shapes):
        diff, agree = _max_diff(run, model, shape, seed)
        if not diff <= tolerance:
            raise ExportError(f"exported model differs from PyTorch at input {shape}: "
                              f"max relative |logit difference| {diff:.3g} > {tolerance:g}")
        if agree is not None and agree < LABEL_AGREEMENT:
            raise ExportError(f"exported model's labels differ from PyTorch's at input {shape}: "
                              f"{100 * agree:.2f} % of pixels agree (< {100 * LABEL_AGREEMENT:g} %)")
        checks[shape] = diff
        if labels is not None and agree is not None:
            labels[shape] = agree
    return checks


def _trace_and_verify(write, load, model: nn.Module, channels: int, size: tuple[int, ...],
                      path: Path, fmt: str, tolerance: float) -> ExportResult:
    """Trace at an odd size, else at ``size``, with dynamic H/W; else fixed H/W at ``size``.

    An odd size first: a "pad to a multiple" branch is then in the graph (with pad amounts computed
    from the input's shape), so the common case needs one trace, not two.
    """
    started = time.perf_counter()
    dynamic_shapes = _probe_shapes(size, channels)
    odd = tuple(_odd(side) for side in size)
    attempts = [(odd, True)] + ([(size, True)] if odd != size else []) + [(size, False)]
    failures = []
    for trace_size, dynamic in attempts:
        shapes = dynamic_shapes if dynamic else [(1, channels, *size), (2, channels, *size)]
        checks: dict = {}
        labels: dict = {}

        def save(tmp: str) -> None:
            # the tracer's warnings are about the very branches _verify checks: keep the CLI readable
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    write(tmp, torch.zeros(1, channels, *trace_size), dynamic)
                except Exception as error:  # an op the exporter cannot convert: one line, not a traceback
                    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                    raise ExportError(f"{fmt} export at {_text(trace_size)} failed: {first}") from None
            checks.update(_verify(load(tmp), model, shapes, tolerance, labels))

        try:
            atomic_write(path, save)  # the file appears only once its checks passed
        except ExportError as error:
            failures.append(str(error))
            continue
        note = "" if dynamic else f"spatial size fixed because the dynamic traces failed: {failures[-1]}"
        if dynamic and trace_size != size:
            note = f"traced at {_text(trace_size)} (odd, so size-dependent padding is in the graph)"
        return ExportResult(path, fmt, size, dynamic, checks, time.perf_counter() - started, note, labels)
    raise ExportError(failures[-1])


def export_onnx(source: Source, path: str | os.PathLike, *, input_size: int | Sequence[int] | None = None,
                in_channels: int | None = None, spatial_dims: int = 2, opset: int = DEFAULT_OPSET,
                tolerance: float = TOLERANCE) -> ExportResult:
    """Write an ONNX model checked with onnxruntime: input ``image`` normalized (B, C, [D,] H, W), output ``logits``.

    ``in_channels`` and ``spatial_dims`` are only needed for a bare model; a checkpoint folder has them.
    """
    import onnxruntime as ort

    model, channels, size = resolve_model(source, input_size, in_channels, spatial_dims)
    dims = len(size)

    def write(tmp: str, example: torch.Tensor, dynamic: bool) -> None:
        axes = {0: "batch", **({2 + i: name for i, name in enumerate(SPATIAL_AXES[-dims:])} if dynamic else {})}
        torch.onnx.export(model, (example,), tmp, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})

    def load(tmp: str):
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a refused probe shape is reported by _verify, not logged
        session = ort.InferenceSession(tmp, options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0]

    result = _trace_and_verify(write, load, model, channels, size, Path(path), "onnx", tolerance)
    if not isinstance(source, nn.Module) and result.path.resolve() == (Path(source) / DEFAULT_FILES["onnx"]).resolve():
        record_onnx(Path(source), result)
    return result


def record_onnx(folder: Path, result: ExportResult) -> None:
    """Remember in ``metrics.json`` which ``model.onnx`` was exported from which weights (after the
    file is written: a crash in between leaves an old record, which ``checked_onnx`` refuses)."""
    path = folder / METRICS_FILE
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    metrics[ONNX_RECORD] = {"file": result.path.name, "sha256": file_sha256(result.path),
                            "weights_sha256": metrics.get("weights_sha256"), "spatial": result.spatial(),
                            "checks": result.checks_text()}
    atomic_write_json(path, metrics)


def checked_onnx(folder: str | os.PathLike) -> Path:
    """The folder's ``model.onnx``, refused (``CheckpointError``) unless ``metrics.json`` vouches for it."""
    folder = Path(folder)
    path = folder / DEFAULT_FILES["onnx"]
    again = f"re-export it: nas-export --checkpoint {folder} --format onnx"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (run nas-export --checkpoint {folder} --format onnx)")
    info = read_checkpoint_info(folder)
    verify_weights(folder, info)  # the threshold and normalization it is used with are the weights' own
    metrics = info.metrics
    record = metrics.get(ONNX_RECORD)
    if not isinstance(record, dict) or not record.get("sha256"):
        raise CheckpointError(f"{path}: metrics.json records no hash for it (exported by an older version or "
                              f"copied in), so it may be another model; {again}")
    most = 2 * (info.footprint.state_bytes if info.footprint else 0) + (16 << 20)
    if path.stat().st_size > most:  # checked before hashing it
        raise CheckpointError(f"{path}: {path.stat().st_size:,} bytes, far more than this architecture's weights "
                              f"({most:,} at most): another model; {again}")
    if file_sha256(path) != record["sha256"]:
        raise CheckpointError(f"{path}: content hash does not match metrics.json (swapped or changed since "
                              f"its export); {again}")
    if record.get("weights_sha256") != metrics.get("weights_sha256"):
        raise CheckpointError(f"{path}: exported from other weights than {folder / WEIGHTS_FILE}; {again}")
    return path


def export_torchscript(source: Source, path: str | os.PathLike, *, input_size: int | Sequence[int] | None = None,
                       in_channels: int | None = None, spatial_dims: int = 2,
                       tolerance: float = TOLERANCE) -> ExportResult:
    """Write a ``torch.jit.trace`` module (load with ``torch.jit.load``), checked against the eager model."""
    model, channels, size = resolve_model(source, input_size, in_channels, spatial_dims)

    def write(tmp: str, example: torch.Tensor, dynamic: bool) -> None:
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), tmp)

    def load(tmp: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still works on 2.13
            traced = torch.jit.load(tmp, map_location="cpu")
        def run(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return traced(x).numpy()
        return run

    return _trace_and_verify(write, load, model, channels, size, Path(path), "torchscript", tolerance)


def export_safetensors(folder: str | os.PathLike, path: str | os.PathLike) -> ExportResult:
    """Copy the checkpoint's weights (already safetensors, hash-checked by loading them first)."""
    started = time.perf_counter()
    folder, path = Path(folder), Path(path)
    load_checkpoint(folder, "cpu")  # refuses a corrupt or mismatched file before copying it
    source = folder / WEIGHTS_FILE
    if path.resolve() != source.resolve():
        atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))
    return ExportResult(path, "safetensors", (), True, {}, time.perf_counter() - started,
                        note="weights only: rebuild the architecture from spec.json")


def export_checkpoint(folder: str | os.PathLike, fmt: str, *, output: str | os.PathLike | None = None,
                      input_size: int | Sequence[int] | None = None) -> ExportResult:
    """The ``nas-export`` entry point: ``fmt`` in ``FORMATS``; ``output`` defaults to the folder's file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder = Path(folder)
    read_checkpoint_info(folder)  # CheckpointError early, before any tracing
    path = Path(output) if output is not None else folder / DEFAULT_FILES[fmt]
    if fmt == "onnx":
        return export_onnx(folder, path, input_size=input_size)
    if fmt == "torchscript":
        return export_torchscript(folder, path, input_size=input_size)
    return export_safetensors(folder, path)


def default_input_size(metrics: dict[str, Any], dims: int = 2) -> tuple[int, ...]:
    """The size the costs were measured at (``input_shape`` in metrics.json), else 64 per side."""
    shape = metrics.get("input_shape")
    if isinstance(shape, list) and len(shape) == 2 + dims and all(isinstance(s, int) and s > 0 for s in shape):
        return tuple(shape[2:])
    return (64,) * dims


__all__ = ["CheckpointError", "ExportError", "ExportResult", "FORMATS", "checked_onnx", "export_checkpoint",
           "export_onnx", "export_safetensors", "export_torchscript"]
