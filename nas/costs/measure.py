"""Model costs: parameters, MACs/FLOPs and latency, with the conventions stated once here.

* **MACs** are multiply-accumulates of convolutions, transposed convolutions and linear/matmul
  layers (conv, linear, matmul, mm, addmm, bmm, einsum) for one forward pass at batch 1 and the
  stated ``input_shape`` ``(1, C, H, W)``. Norms, activations, pooling, additions, padding and the
  SE gating multiplication are not counted; neither are biases. A transposed conv costs
  ``in.numel() * out_ch/groups * prod(kernel)`` (every input pixel scatters one kernel), not an
  output-spatial formula, which over-counts a stride-2 up-sampling 4x.
* **FLOPs** are ``2 * MACs`` (one multiply + one add), nothing else.
* **Latency** is the median wall time (``time.perf_counter``) of a batch-1 forward pass after
  warm-up, under ``torch.inference_mode`` with the model in ``eval()``, CUDA-synchronised before
  every clock read on GPU.

MACs are counted with fvcore (the traced graph, so functional ops are seen too) and cross-checked
against an independent forward-hook count over the standard layers; a disagreement is reported
as a warning because it means an op one of them cannot see, not that the model is broken.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

# fvcore's by_operator() names whose counts are multiply-accumulates (aten:: prefix stripped).
_MAC_OPERATORS = ("conv", "linear", "matmul", "mm", "addmm", "bmm", "einsum")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_MISMATCH_TOLERANCE = 1e-3  # relative


@dataclass(frozen=True)
class Costs:
    """What one architecture costs at one input size; ``flops`` is always ``2 * macs``."""

    params: int
    macs: int
    flops: int
    latency_ms: float
    latency_device: str
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        """JSON-safe dict (``input_shape`` as a list)."""
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out


def _shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive ints, got {input_shape!r}")
    return shape


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    """Counting works on a float32 CPU copy, so the caller's model, device and mode are untouched."""
    return copy.deepcopy(model).cpu().float().eval()


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or frozen; buffers (BN running stats) are not parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs from fvcore's traced graph, summing only the conv/linear/matmul-family operators."""
    shape = _shape(input_shape)
    counted = _cpu_eval_copy(model)
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing a shape-dependent forward (padding, cropping) emits TracerWarnings; they say
        # the trace is input-size specific, which a count at one stated size is anyway. The
        # import itself warns that torch.jit.script is deprecated on recent torch.
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(counted, torch.zeros(shape))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_operator = analysis.by_operator()
    return int(sum(by_operator.get(name, 0) for name in _MAC_OPERATORS))


def count_macs_by_hooks(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Independent analytic count: forward hooks on conv / transposed conv / linear layers."""
    shape = _shape(input_shape)
    counted = _cpu_eval_copy(model)
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, _TRANSPOSED_CONVS):
            kernel = math.prod(module.kernel_size)
            total += inputs[0].numel() * (module.out_channels // module.groups) * kernel
        elif isinstance(module, _CONVS):
            kernel = math.prod(module.kernel_size)
            total += output.numel() * (module.in_channels // module.groups) * kernel
        else:  # nn.Linear
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in counted.modules()
               if isinstance(m, (*_CONVS, *_TRANSPOSED_CONVS, nn.Linear))]
    try:
        with torch.no_grad():
            counted(torch.zeros(shape))
    finally:
        for handle in handles:
            handle.remove()
    return int(total)


def describe_device(device: torch.device | str) -> str:
    """Human-readable device for reports: thread count on CPU, card name on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model: nn.Module, input_shape: Sequence[int],
                    device: torch.device | str = "cpu", *, warmup: int = 3,
                    repeats: int = 10) -> float:
    """Median batch-1 forward time in ms on ``device``.

    If the model lives elsewhere, a copy is moved there so the caller's model stays put; the
    input is created on the device the measured model is on. Every module's training flag is
    restored afterwards (individually, so a frozen-BN submodule stays in eval).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    shape = _shape(input_shape)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    measured = model if _model_device(model) == device else copy.deepcopy(model).to(device)
    dtype = next((p.dtype for p in measured.parameters() if p.is_floating_point()), torch.float32)
    modes = {m: m.training for m in measured.modules()}
    measured.eval()
    times = []
    try:
        with torch.inference_mode():
            x = torch.zeros(shape, device=device, dtype=dtype)
            for _ in range(warmup):
                measured(x)
            _sync(device)
            for _ in range(repeats):
                start = time.perf_counter()
                measured(x)
                _sync(device)
                times.append(time.perf_counter() - start)
    finally:
        for module, training in modes.items():
            module.training = training
    return 1000.0 * statistics.median(times)


def measure_costs(model: nn.Module, input_shape: Sequence[int], device: torch.device | str = "cpu",
                  *, warmup: int = 3, repeats: int = 10) -> Costs:
    """Params, fvcore MACs (cross-checked by hooks; a > 0.1 % gap warns) and latency."""
    shape = _shape(input_shape)
    macs = count_macs(model, shape)
    hook_macs = count_macs_by_hooks(model, shape)
    if abs(macs - hook_macs) > _MISMATCH_TOLERANCE * max(macs, hook_macs):
        warnings.warn(
            f"MAC counts disagree for input {shape}: fvcore {macs} vs layer hooks {hook_macs}; "
            "the model probably uses an op only one of them sees (functional conv/matmul, or a "
            "layer type the hooks do not cover). Reporting fvcore's count.",
            stacklevel=2,
        )
    latency = measure_latency(model, shape, device, warmup=warmup, repeats=repeats)
    return Costs(
        params=count_params(model),
        macs=macs,
        flops=2 * macs,
        latency_ms=float(latency),
        latency_device=describe_device(device),
        input_shape=shape,
    )
