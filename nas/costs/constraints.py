"""Constraints checked before any training: an architecture over a limit costs milliseconds, not an epoch.

No Optuna here: ``Constraints`` holds the limits, ``check_model`` measures only what they need and
returns a ``Verdict`` with one violation value per limit, ``measured / limit - 1`` (> 0 means
violated; relative, so limits of different units weigh alike), the form Optuna's constrained
samplers expect. The adapter (``nas.engine.optuna_adapter.study``) only stores it on the trial.

Training-step memory (``train_memory_mb``), device-independent, for ONE step at ``(batch, C, S, S)``
(``(batch, C, S, S, S)`` for a 3D model):

* activations: the bytes of every tensor autograd saves for backward during a train-mode forward
  (each storage once, parameters excluded), plus the output;
* state: parameters + their gradients + Adam's two moment buffers (4 x the parameter bytes).

Not counted: the allocator's caching and fragmentation, cuDNN/GEMM workspaces, temporaries freed
during the forward, the loss's own small buffers, and autocast's half-precision copies (the
forward is measured in float32). A real CUDA peak is therefore somewhat higher. MB = 2**20 bytes.
The forward is ``model(x)``: deep-supervision heads (``forward_with_aux``) and gradient
checkpointing (which saves less) are not part of the figure.

The forward runs on the meta device (shapes, no data), so the figure costs no memory at any input
size; it equals, byte for byte, what a real CPU forward saves (tests/test_costs_meta.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nas.costs.measure import (
    count_macs,
    count_macs_by_hooks,
    count_params,
    describe_device,
    measure_latency,
    shapes_only_forward,
)

MB = 2**20
ADAM_STATE_PER_PARAM = 2  # exp_avg, exp_avg_sq
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str) -> int:
    """``'500M'`` -> 500_000_000; k, M, G, T are powers of 1000; plain and 1.5G / 2e9 forms too."""
    match = _COUNT.match(str(text))
    if not match:
        raise ValueError(f"expected a positive number with an optional k/M/G/T suffix (500M, 2G), got {text!r}")
    value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if not value >= 1:
        raise ValueError(f"expected a positive number, got {text!r}")
    return int(round(value))


def format_count(value: float, unit: str = "") -> str:
    """1.2e9, 'MAC' -> '1.2 GMAC': three significant digits, decimal prefixes."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


# key in the measured costs, flag, how a value is shown
_LIMITS = (
    ("params", "--max-params", lambda v: f"{format_count(v)} params"),
    ("macs", "--max-macs", lambda v: format_count(v, "MAC")),
    ("latency_ms", "--max-latency-ms", lambda v: f"{v:.3g} ms"),
    ("train_memory_mb", "--max-memory-mb", lambda v: f"{v:.4g} MB"),
)


@dataclass(frozen=True)
class Constraints:
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None

    def __post_init__(self) -> None:
        for name, limit in self.to_dict().items():
            if not limit > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {limit}")

    def limits(self) -> list[tuple[str, str, float]]:
        """``(measured key, flag, limit)`` for each limit that is set, in a fixed order."""
        values = (self.max_params, self.max_macs, self.max_latency_ms, self.max_memory_mb)
        return [(key, flag, limit) for (key, flag, _), limit in zip(_LIMITS, values) if limit is not None]

    def __bool__(self) -> bool:
        return bool(self.limits())

    def describe(self) -> list[str]:
        """``['--max-macs 500 MMAC', ...]`` for the limits that are set."""
        shown = {key: show for key, _, show in _LIMITS}
        return [f"{flag} {shown[key](limit)}" for key, flag, limit in self.limits()]

    def to_dict(self) -> dict[str, float]:
        """The limits that are set; part of the study config a resume must match."""
        values = {"max_params": self.max_params, "max_macs": self.max_macs,
                  "max_latency_ms": self.max_latency_ms, "max_memory_mb": self.max_memory_mb}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Verdict:
    measured: dict[str, Any]  # params, and macs / latency_ms / train_memory_mb when limited
    violations: dict[str, float]  # per limit: measured / limit - 1 (> 0 = violated)
    reasons: tuple[str, ...] = field(default=())  # one per violated limit

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations.values())

    @property
    def reason(self) -> str:
        """``'infeasible: 1.2 GMAC > --max-macs 500 MMAC'`` (every violated limit, '; '-joined)."""
        return "feasible" if self.feasible else "infeasible: " + "; ".join(self.reasons)


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during ``model(x)`` (parameters excluded), plus the output's."""
    params = {id(p.untyped_storage()) for p in model.parameters()}
    seen: dict[int, Any] = {}  # id -> storage, kept alive so an id is never reused mid-count

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()  # one Python object per storage: views share it
        if id(storage) not in params:
            seen.setdefault(id(storage), storage)
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pack(model(x))  # (B, out, *S)
    return sum(storage.nbytes() for storage in seen.values())


def training_step_memory(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Bytes of one training step (see the module docstring for what is and is not counted).

    The float32 train-mode forward runs on a meta-device copy (``shapes_only_forward``): sizes
    without data, so a 4K input is counted on any laptop and the caller's model (BN statistics,
    device) is untouched. The figure does not depend on the machine.
    """
    activation_bytes = shapes_only_forward(model, input_shape, _saved_bytes, train=True)
    param_bytes = sum(p.numel() * (4 if p.is_floating_point() else p.element_size()) for p in model.parameters())
    state_bytes = param_bytes * (2 + ADAM_STATE_PER_PARAM)  # weights, gradients, Adam moments
    return {"activation_bytes": activation_bytes, "state_bytes": state_bytes,
            "train_memory_mb": (activation_bytes + state_bytes) / MB}


def measure(model: nn.Module, constraints: Constraints, *, in_channels: int, image_size: int,
            batch_size: int, device: torch.device | str = "cpu", spatial_dims: int = 2,
            latency: Callable[[nn.Module, tuple[int, ...]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Params always (free); MACs, latency and memory only when limited.

    ``latency(model, shape)`` replaces the torch measurement (``{"latency_ms", "latency_device"}``),
    e.g. ONNX Runtime's with ``--latency-engine onnxruntime``.

    MACs and latency use the search's conventions (``nas.costs.measure``: batch 1 at ``image_size``
    on every one of the ``spatial_dims`` axes: a 3D model is measured on a cube); memory is one
    training step at ``batch_size``.
    """
    side = (image_size,) * spatial_dims
    shape = (1, in_channels, *side)
    measured: dict[str, Any] = {"params": count_params(model)}
    if constraints.max_macs is not None:
        # Layer hooks see only conv/linear modules, so they never exceed the op counter's count and
        # are cheaper: over the limit by hooks is over it for sure. Otherwise the search's own
        # count (the op counter of nas.costs.measure.count_macs) decides.
        macs, counter = count_macs_by_hooks(model, shape), "layer hooks (standard layers)"
        if macs <= constraints.max_macs:
            macs, counter = count_macs(model, shape), "op counter"
        measured.update({"macs": macs, "flops": 2 * macs, "macs_counter": counter})
    if constraints.max_latency_ms is not None and latency is not None:
        measured.update(latency(model, shape))
    elif constraints.max_latency_ms is not None:
        measured["latency_ms"] = measure_latency(model, shape, device)
        measured["latency_device"] = describe_device(device)
    if constraints.max_memory_mb is not None:
        measured.update(training_step_memory(model, (batch_size, in_channels, *side)))
        measured["train_memory_batch"] = batch_size
    return measured


def check(measured: dict[str, Any], constraints: Constraints) -> Verdict:
    """Compare measured costs with the limits; a limit whose cost was not measured is an error."""
    violations: dict[str, float] = {}
    reasons = []
    shown = {key: show for key, _, show in _LIMITS}
    for key, flag, limit in constraints.limits():
        if key not in measured:
            raise KeyError(f"{flag} needs {key!r}, which was not measured")
        value = float(measured[key])
        violations[key] = value / limit - 1.0
        if value > limit:
            reasons.append(f"{shown[key](value)} > {flag} {shown[key](limit)}")
    return Verdict(measured=dict(measured), violations=violations, reasons=tuple(reasons))


def check_model(model: nn.Module, constraints: Constraints, *, in_channels: int, image_size: int,
                batch_size: int, device: torch.device | str = "cpu", spatial_dims: int = 2,
                latency: Callable[[nn.Module, tuple[int, ...]], dict[str, Any]] | None = None) -> Verdict:
    measured = measure(model, constraints, in_channels=in_channels, image_size=image_size,
                       batch_size=batch_size, device=device, spatial_dims=spatial_dims, latency=latency)
    return check(measured, constraints)
