"""Counting on the meta device: the same numbers as a real forward, without the real forward's memory.

The references are the implementations nas.costs used before (a float32 train-mode forward on a CPU
copy for the memory, fvcore's traced graph for the MACs), kept verbatim here. Tolerance: none, the
byte and MAC counts must be equal.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from nas.costs.constraints import MB, training_step_memory
from nas.costs.measure import count_macs, count_macs_by_hooks, meta_copy
from search_spaces import RandomSuggest, get_space
from search_spaces.presets import get_preset
from search_spaces.resunet import ResUNetSpec


def old_training_step_memory(model: nn.Module, input_shape) -> dict[str, float]:
    """nas.costs.constraints.training_step_memory as of c148b54: a real CPU forward."""
    measured = copy.deepcopy(model).cpu().float().train()
    param_storages = {p.untyped_storage().data_ptr() for p in measured.parameters()}
    seen: set[int] = set()
    activation_bytes = 0

    def count(tensor: torch.Tensor) -> None:
        nonlocal activation_bytes
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in param_storages and pointer not in seen:
            seen.add(pointer)
            activation_bytes += storage.nbytes()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        count(tensor)
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        output = measured(torch.zeros(tuple(input_shape)))
        count(output)
    param_bytes = sum(p.numel() * p.element_size() for p in measured.parameters())
    state_bytes = param_bytes * 4
    return {"activation_bytes": activation_bytes, "state_bytes": state_bytes,
            "train_memory_mb": (activation_bytes + state_bytes) / MB}


def fvcore_macs(model: nn.Module, input_shape) -> int:
    """nas.costs.measure.count_macs as of c148b54: fvcore on a traced real forward."""
    from fvcore.nn import FlopCountAnalysis

    counted = copy.deepcopy(model).cpu().float().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(counted, torch.zeros(tuple(input_shape)))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_operator = analysis.by_operator()
    return int(sum(by_operator.get(name, 0) for name in ("conv", "linear", "matmul", "mm", "addmm", "bmm", "einsum")))


def _spec(**fields) -> ResUNetSpec:
    return ResUNetSpec(**{"encoder_widths": (8, 16, 24), "decoder_widths": (8, 16), **fields})


# (space, spec, in_channels, spatial side): presets, every attention kind and place, deep
# supervision, dropout, the norms, blocks, up-samplings, ASPP, multi-scale input, and 3D.
CASES = [
    ("resunet", get_preset("resunet-standard").spec, 3, 32),
    ("resunet", get_preset("unet-16").spec, 1, 32),
    ("resunet", get_preset("mobile-resunet").spec, 1, 32),
    ("resunet", _spec(skip_attention="se", deep_supervision=True, dropout=0.2), 2, 24),
    ("resunet", _spec(skip_attention="scse", attention_place="decoder", norm="group"), 1, 20),
    ("resunet", _spec(skip_attention="cbam", block="bottleneck", aspp=True, bridge_dilation=2), 1, 24),
    ("resunet", _spec(skip_attention="gate", skip_fusion="concat", upsample="pixel_shuffle",
                      multiscale_input=True, activation="gelu"), 1, 24),
    ("resunet", _spec(block="inverted", downsample="strided", norm="instance", activation="silu",
                      upsample="bilinear_conv", skip_gain=True), 1, 28),
    ("resunet3d", _spec(spatial_dims=3, skip_attention="se", deep_supervision=True), 1, 12),
    ("resunet3d", _spec(spatial_dims=3, block="plain", skip_fusion="concat", norm="group",
                        skip_attention="gate", dropout=0.1), 2, 10),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1].summary()}")
def test_memory_equals_the_real_forward(case):
    space, spec, channels, side = case
    model = get_space(space).build_model(spec, channels, 1)
    shape = (2, channels, *([side] * spec.spatial_dims))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the real forward
        assert training_step_memory(model, shape) == old_training_step_memory(model, shape)


@pytest.mark.parametrize("space, seeds, side", [("resunet", (1, 2), 32), ("resunet3d", (1, 2), 16)])
def test_memory_and_macs_equal_the_old_counts_on_sampled_specs(space, seeds, side):
    search_space = get_space(space)
    for seed in seeds:
        spec = search_space.sample_spec(RandomSuggest(seed))
        model = search_space.build_model(spec, 1, 1)
        shape = (1, 1, *([side + 1] * search_space.spatial_dims))  # not a multiple: the pad is counted too
        assert training_step_memory(model, shape) == old_training_step_memory(model, shape), spec.summary()
        assert count_macs(model, shape) == fvcore_macs(model, shape) > 0, spec.summary()


@pytest.mark.parametrize("case", CASES[:3] + CASES[-2:], ids=lambda c: f"{c[0]}-{c[1].summary()}")
def test_macs_equal_fvcore(case):
    space, spec, channels, side = case
    model = get_space(space).build_model(spec, channels, 1)
    shape = (1, channels, *([side] * spec.spatial_dims))
    assert count_macs(model, shape) == fvcore_macs(model, shape) == count_macs_by_hooks(model, shape)


def test_counts_at_sizes_no_machine_could_allocate():
    """65536^2 px: the old real forward would need terabytes; on the meta device it costs nothing."""
    model = get_space("resunet").build_model(get_preset("resunet-standard").spec, 3, 1)
    small, huge = (1, 3, 256, 256), (1, 3, 65536, 65536)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memory = training_step_memory(model, huge)
        macs = count_macs(model, huge)
        hook_macs = count_macs_by_hooks(model, huge)
    assert memory["train_memory_mb"] > 2**20  # over a TiB
    # Fully convolutional, every side divides by 8: MACs scale exactly with the pixel count, and
    # activations are a * pixels + c (c: norm statistics, saved once per channel) through 3 sizes.
    assert macs == hook_macs == count_macs(model, small) * 256**2
    one, four = (training_step_memory(model, (1, 3, s, s))["activation_bytes"] for s in (256, 512))
    assert (memory["activation_bytes"] - one) * 3 == (four - one) * (256**2 - 1)
    # 4K (3840 x 2160) at depth 4: both sides divide by 8 (no padding), as do 768 x 432 = 4K / 5.
    assert count_macs(model, (1, 3, 2160, 3840)) == count_macs(model, (1, 3, 432, 768)) * 25


def test_padding_breaks_pixel_scaling_but_not_the_count():
    """A side that does not divide by 2^(depth-1) is padded: counted at the padded size, exactly."""
    model = get_space("resunet").build_model(_spec(), 1, 1)  # factor 4
    assert count_macs(model, (1, 1, 33, 32)) == count_macs(model, (1, 1, 36, 32)) == fvcore_macs(model, (1, 1, 33, 32))
    assert count_macs(model, (1, 1, 33, 32)) != count_macs(model, (1, 1, 32, 32)) * 33 // 32


class _ValueBranch(nn.Module):
    """A forward that reads a tensor's value, which the meta device cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y * 2 if float(y.sum()) >= 0 else y


def test_a_model_the_meta_device_cannot_run_is_counted_for_real_with_a_warning():
    model = _ValueBranch()
    shape = (2, 1, 8, 8)
    with pytest.warns(UserWarning, match="meta device failed"):
        memory = training_step_memory(model, shape)
    assert memory == old_training_step_memory(model, shape)
    with pytest.warns(UserWarning, match="meta device failed"):
        assert count_macs(model, shape) == 2 * 64 * 4 * 9


def test_a_broken_model_fails_at_once_without_a_real_forward():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(5, 2, 3))  # 4 channels into a 5-channel conv
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the real forward would warn
        with pytest.raises(RuntimeError):
            training_step_memory(model, (1, 1, 65536, 65536))
        with pytest.raises(RuntimeError):
            count_macs(model, (1, 1, 65536, 65536))


def test_meta_copy_copies_no_weight_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).double()
    model[0].weight.requires_grad_(False)
    pointers = [t.data_ptr() for t in (*model.parameters(), *model.buffers())]
    clone = meta_copy(model)
    assert all(t.device.type == "meta" for t in (*clone.parameters(), *clone.buffers()))
    assert [p.dtype for p in clone.parameters()] == [torch.float32] * 4
    assert clone[1].num_batches_tracked.dtype == torch.long
    assert [p.requires_grad for p in clone.parameters()] == [False, True, True, True]
    assert [t.data_ptr() for t in (*model.parameters(), *model.buffers())] == pointers
    assert next(model.parameters()).dtype == torch.float64
