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

MACs are counted by torch's dispatch-level ``FlopCounterMode`` (every aten op, so functional
convs and matmuls are seen too) and cross-checked against an independent forward-hook count over
the standard layers; a disagreement is reported as a warning because it means an op one of them
cannot see, not that the model is broken. The counts equal fvcore's traced-graph count, which
this module used before (checked in tests/test_costs_meta.py).

Counting never allocates activations: both counters run a copy of the model on the ``meta``
device (shapes only, no data), so a 2048 px or 4K input costs no more memory than 64 px. A model
the meta device cannot run (an op without a meta kernel, a branch on a tensor's value) is counted
on a real float32 CPU copy instead, with a warning, since that needs the real memory.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

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


def meta_copy(model: nn.Module) -> nn.Module:
    """A float32 copy of ``model`` on the meta device, without copying a single weight.

    The deep copy is given meta stand-ins for every parameter and buffer up front, so a CUDA or
    large model is not duplicated in memory; only the module structure is copied.
    """
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
        stand_in = torch.empty_like(tensor, device="meta", dtype=dtype)
        memo[id(tensor)] = (nn.Parameter(stand_in, requires_grad=tensor.requires_grad)
                            if isinstance(tensor, nn.Parameter) else stand_in)
    return copy.deepcopy(model, memo)


def shapes_only_forward(model: nn.Module, input_shape: Sequence[int],
                        run: Callable[[nn.Module, torch.Tensor], Any], *, train: bool = False) -> Any:
    """``run(copy, zeros)`` on a meta-device copy in train or eval mode; the caller's model is untouched.

    Falls back to a float32 CPU copy (with a warning) for a model the meta device cannot run: an
    op without a meta kernel, or a branch on a tensor's value (errors that say "meta"). Errors of
    the model itself (a channel mismatch, a too-small input) are raised at once, before any real forward.
    """
    shape = _shape(input_shape)
    try:
        return run(meta_copy(model).train(train), torch.zeros(shape, device="meta"))
    except (RuntimeError, TypeError) as error:  # NotImplementedError is a RuntimeError
        if not isinstance(error, NotImplementedError) and "meta" not in str(error).lower():
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        warnings.warn(f"counting on the meta device failed ({reason}); counting on a real CPU copy, "
                      f"which needs the activations' memory at input {shape}", stacklevel=3)
    return run(copy.deepcopy(model).cpu().float().train(train), torch.zeros(shape))


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or frozen; buffers (BN running stats) are not parameters."""
    return sum(p.numel() for p in model.parameters())


def _flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    by_operator = counter.get_flop_counts().get("Global", {})
    # 2 FLOPs per multiply-accumulate, bias excluded; only the conv and (b/add)mm families, which
    # linear, matmul and einsum lower to (attention kernels are left out, as fvcore did).
    flops = sum(n for op, n in by_operator.items() if "conv" in str(op) or "mm" in str(op))
    return int(flops // 2)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of the conv/linear/matmul-family ops of one eval forward, counted without allocating."""
    return shapes_only_forward(model, input_shape, _flop_counter_macs)


def _hook_macs(model: nn.Module, x: torch.Tensor) -> int:
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

    for module in model.modules():
        if isinstance(module, (*_CONVS, *_TRANSPOSED_CONVS, nn.Linear)):
            module.register_forward_hook(hook)  # on a throw-away copy: no need to remove
    with torch.no_grad():
        model(x)
    return int(total)


def count_macs_by_hooks(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Independent analytic count: forward hooks on conv / transposed conv / linear layers."""
    return shapes_only_forward(model, input_shape, _hook_macs)


def count_macs_on_meta(model: nn.Module, input_shape: Sequence[int]) -> int:
    """The hook count of a model built on the meta device (``with torch.device("meta")``): no copy, no
    weights, no dispatch counter, so ranking dozens of candidate architectures (``nas.engine.strata``)
    costs about a model construction each. Hooks stay on ``model``: pass one built for counting."""
    return _hook_macs(model.eval(), torch.zeros(_shape(input_shape), device="meta"))


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


@contextlib.contextmanager
def eval_forward(model: nn.Module, input_shape: Sequence[int],
                 device: torch.device | str = "cpu") -> Iterator[Callable[[], None]]:
    """A zero-argument callable running one inference forward of ``model`` on ``device``, synced.

    If the model lives elsewhere, a copy is moved there so the caller's model stays put; the
    input is created on the device (and in the dtype) of the measured model. Every module's
    training flag is restored on exit (individually, so a frozen-BN submodule stays in eval).
    """
    shape = _shape(input_shape)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    measured = model if _model_device(model) == device else copy.deepcopy(model).to(device)
    dtype = next((p.dtype for p in measured.parameters() if p.is_floating_point()), torch.float32)
    modes = {m: m.training for m in measured.modules()}
    measured.eval()
    x = torch.zeros(shape, device=device, dtype=dtype)

    def forward() -> None:
        with torch.inference_mode():
            measured(x)
        _sync(device)

    try:
        yield forward
    finally:
        for module, training in modes.items():
            module.training = training


def measure_latency(model: nn.Module, input_shape: Sequence[int],
                    device: torch.device | str = "cpu", *, warmup: int = 3,
                    repeats: int = 10) -> float:
    """Median batch-1 forward time in ms on ``device`` (see ``eval_forward``); one model, one pass.

    Robust re-measurement of several models (interleaved rounds, spread, ONNX Runtime) is
    ``nas.costs.latency.measure_latencies``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    times = []
    with eval_forward(model, input_shape, device) as forward:
        for _ in range(warmup):
            forward()
        for _ in range(repeats):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def measure_costs(model: nn.Module, input_shape: Sequence[int], device: torch.device | str = "cpu",
                  *, warmup: int = 3, repeats: int = 10) -> Costs:
    """Params, MACs (cross-checked by hooks; a > 0.1 % gap warns) and latency."""
    shape = _shape(input_shape)
    macs = count_macs(model, shape)
    hook_macs = count_macs_by_hooks(model, shape)
    if abs(macs - hook_macs) > _MISMATCH_TOLERANCE * max(macs, hook_macs):
        warnings.warn(
            f"MAC counts disagree for input {shape}: op counter {macs} vs layer hooks {hook_macs}; "
            "the model probably uses an op only one of them sees (functional conv/matmul, or a "
            "layer type the hooks do not cover). Reporting the op counter's count.",
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
