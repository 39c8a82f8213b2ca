"""What an architecture's weights take, counted from its spec without allocating a single weight.

A spec from someone else can ask for any width: ``encoder_widths [1000000, 1000000]`` is 10^13
parameters, and building it for real would be killed for memory before any check ran. The model
is built on the ``meta`` device instead (shapes only, as ``nas.costs.measure`` counts MACs), so
its parameters and the bytes of its state dict (what ``model.safetensors`` holds) are known in
milliseconds; ``footprint_problem`` then says, in one line, when that would not fit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from nas.costs.measure import count_params

MAX_PARAMS = 2**31  # no segmentation model of this project comes near; a spec asking for more is refused


@dataclass(frozen=True)
class Footprint:
    """``params`` (trainable or not), ``state_bytes`` (every tensor of the state dict: weights and
    buffers, at their dtypes) and ``tensors`` (how many the state dict holds)."""

    params: int
    state_bytes: int
    tensors: int


def spec_footprint(space: Any, spec: Any, in_channels: int, out_channels: int) -> Footprint:
    """The footprint of ``space.build_model(spec, in_channels, out_channels)``, built on the meta device.

    Raises what building raises (``ValueError``, ``RuntimeError``, ``TypeError``) for a spec that
    validates but cannot be built."""
    with torch.device("meta"):
        model = space.build_model(spec, in_channels, out_channels)
    state = model.state_dict()
    return Footprint(params=count_params(model), tensors=len(state),
                     state_bytes=sum(t.numel() * t.element_size() for t in state.values()))


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def footprint_problem(footprint: Footprint, *, copies: int = 2) -> str | None:
    """Why these weights must not be allocated (None when they may): more than ``MAX_PARAMS``
    parameters, or ``copies`` copies of the state (loading holds the file's tensors and the model's;
    training adds gradients and Adam's two moments: 4) larger than this machine's memory."""
    gib = 2**30
    if footprint.params > MAX_PARAMS:
        return (f"the architecture has {footprint.params:,} parameters ({footprint.state_bytes / gib:,.0f} GiB of "
                f"weights); at most {MAX_PARAMS:,} (2^31) are accepted")
    memory = physical_memory()
    if memory is not None and copies * footprint.state_bytes > memory:
        return (f"the architecture's {footprint.params:,} parameters need {copies} x "
                f"{footprint.state_bytes / gib:.1f} GiB, more than this machine's {memory / gib:.1f} GiB of memory")
    return None
