"""Peak memory of one inference forward, counted on the meta device, and the memory this machine has free.

``inference_memory(model, shape)`` runs the eval-mode forward of ``nas.costs.measure.eval_forward``
(``torch.inference_mode``, float32) on a meta-device copy (``shapes_only_forward``: no data, so a 4K
input costs nothing to count) and follows every tensor an op creates (outputs that alias an input, a
view or an in-place op, are not new memory) until it is freed: the peak of the live bytes, the input
included, plus the weights. Not counted: convolution workspaces and the allocator's caching, so a real
peak is somewhat higher (``MARGIN`` covers it where the figure decides whether to run). ``nas-profile``
counts this before its real latency forward and skips that forward when it would not fit
``available_memory``.
"""
from __future__ import annotations

import os
import weakref
from typing import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nas.costs.measure import shapes_only_forward

MARGIN = 1.5  # real peak / counted peak allowed for (workspaces, allocator): 0.9-1.25 measured on CPU at 512 px


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensors created under it and still alive; ``peak`` is their maximum."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.live = self.peak = start

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        for ret, tensor in zip(func._schema.returns, outputs):
            if isinstance(tensor, torch.Tensor) and ret.alias_info is None:
                nbytes = tensor.numel() * tensor.element_size()
                self.live += nbytes
                weakref.finalize(tensor, self._free, nbytes)
        self.peak = max(self.peak, self.live)
        return out


def _peak_bytes(model: nn.Module, x: torch.Tensor) -> int:
    counter = _LiveBytes(x.numel() * x.element_size())
    with torch.inference_mode(), counter:
        model(x)
    return counter.peak


def inference_memory(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """``{"inference_activation_bytes", "inference_memory_mb"}`` of one float32 inference forward."""
    activation_bytes = shapes_only_forward(model, input_shape, _peak_bytes, train=False)
    weight_bytes = sum(t.numel() * 4 for t in (*model.parameters(), *model.buffers()))
    return {"inference_activation_bytes": activation_bytes,
            "inference_memory_mb": (activation_bytes + weight_bytes) / 2**20}


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes free for a new allocation on ``device``: a CUDA device's free memory, else the system's
    ``MemAvailable`` (``/proc/meminfo``; free pages elsewhere); None where nothing says."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None
