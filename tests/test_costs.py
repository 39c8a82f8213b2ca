"""nas.costs.measure: fvcore MACs == layer-hook MACs == a hand count from the ResUNet spec; costs plumbing."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from nas.costs.measure import (Costs, count_macs, count_macs_by_hooks, count_params, describe_device,
                       measure_costs, measure_latency)
from search_spaces import RandomSuggest, get_space
from search_spaces.resunet import ResUNetSpec


def hand_macs(spec: ResUNetSpec, in_ch: int, out_ch: int, height: int, width: int) -> int:
    """The ResUNet's MACs in plain arithmetic (H and W must be multiples of 2^(depth-1))."""
    factor = 2 ** (spec.depth - 1)
    assert height % factor == 0 and width % factor == 0

    def conv(cin: int, cout: int, k: int, h: int, w: int) -> int:
        return h * w * cin * cout * k * k

    def stage(cin: int, cout: int, h: int, w: int) -> int:
        total = 0
        for i in range(spec.blocks_per_stage):
            block_in = cin if i == 0 else cout
            total += conv(block_in, cout, 3, h, w) + conv(cout, cout, 3, h, w)
            if block_in != cout:
                total += conv(block_in, cout, 1, h, w)  # projection shortcut
        return total  # dilation keeps the size (padding = dilation): same MACs

    def size(level: int) -> tuple[int, int]:
        return height // 2**level, width // 2**level

    enc, dec = spec.encoder_widths, spec.decoder_widths
    total, previous = 0, in_ch
    for level, w_out in enumerate(enc):
        total += stage(previous, w_out, *size(level))
        previous = w_out
    for level in reversed(range(spec.depth - 1)):
        h_in, w_in = size(level + 1)
        total += h_in * w_in * previous * enc[level] * 2 * 2  # transposed 2x2/2, input-sized
        if spec.skip_attention == "se":
            hidden = max(1, enc[level] // spec.se_reduction)
            total += enc[level] * hidden + hidden * enc[level]  # 1x1 convs on the pooled 1x1 map
        total += stage(enc[level], dec[level], *size(level))
        previous = dec[level]
    return total + conv(previous, out_ch, 1, height, width)  # head


SPECS = [
    ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 16)),
    ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 16), skip_attention="se",
                bridge_dilation=2),
    ResUNetSpec(encoder_widths=(6, 12, 20, 24), decoder_widths=(5, 12, 16), blocks_per_stage=2,
                skip_attention="se", se_reduction=16, bridge_dilation=4),
    ResUNetSpec(encoder_widths=(8, 12, 12, 24, 24), decoder_widths=(8, 12, 12, 24),
                bridge_dilation=4, skip_attention="se"),  # depth 5, dil4, se, identity shortcuts
    ResUNetSpec(encoder_widths=(12, 16, 24), decoder_widths=(12, 16), blocks_per_stage=3),
]


def test_every_sampled_spec_counts_the_same_with_both_counters():
    """The whole space (every block, attention, up-sampling) is seen by fvcore and the hooks alike."""
    space = get_space("resunet")
    for seed in range(6):
        spec = space.sample_spec(RandomSuggest(seed))
        spec = ResUNetSpec.from_dict({**spec.to_dict(), "encoder_widths": [min(w, 8) for w in spec.encoder_widths],
                                      "decoder_widths": [min(w, 8) for w in spec.decoder_widths]})
        model = space.build_model(spec, 1, 1)
        shape = (1, 1, 2 * spec.downsampling_factor, 2 * spec.downsampling_factor)
        assert count_macs(model, shape) == count_macs_by_hooks(model, shape) > 0, spec.summary()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.summary())
@pytest.mark.parametrize("hw", [(32, 32), (64, 64), (32, 64)])
def test_resunet_macs_match_hand_count(spec, hw):
    model = get_space("resunet").build_model(spec, 3, 2)
    shape = (1, 3, *hw)
    expected = hand_macs(spec, 3, 2, *hw)
    assert count_macs_by_hooks(model, shape) == expected
    assert count_macs(model, shape) == expected


def test_sampled_specs_cover_se_and_dilation():
    assert any(s.skip_attention == "se" for s in SPECS)
    assert any(s.bridge_dilation > 1 for s in SPECS)


@pytest.mark.parametrize("hw", [(30, 45), (33, 17)])
def test_non_multiple_size_counters_agree(hw):
    model = get_space("resunet").build_model(SPECS[1], 1, 1)
    shape = (1, 1, *hw)
    assert count_macs(model, shape) == count_macs_by_hooks(model, shape) > 0


def test_transposed_conv_counted_at_input_size():
    up = nn.ConvTranspose2d(8, 4, 2, stride=2)
    assert count_macs(up, (1, 8, 16, 16)) == 16 * 16 * 8 * 4 * 4 == 32768
    assert count_macs_by_hooks(up, (1, 8, 16, 16)) == 32768


def test_grouped_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(8 * 25, 10))
    expected = 25 * 8 * 2 * 9 + 10 * 200
    assert count_macs(model, (1, 4, 5, 5)) == count_macs_by_hooks(model, (1, 4, 5, 5)) == expected


def test_measure_costs_fields_and_caller_model_untouched():
    model = get_space("resunet").build_model(SPECS[1], 1, 1)
    model.train()
    model.skip_gates[0].eval()  # a mixed-mode model must come back exactly as it was
    modes = {name: m.training for name, m in model.named_modules()}
    costs = measure_costs(model, (1, 1, 32, 32), warmup=1, repeats=3)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert costs.macs == hand_macs(SPECS[1], 1, 1, 32, 32)
    assert costs.flops == 2 * costs.macs
    assert costs.params == sum(p.numel() for p in model.parameters()) == count_params(model)
    assert math.isfinite(costs.latency_ms) and costs.latency_ms > 0
    assert costs.latency_device == describe_device("cpu") and costs.latency_device.startswith("cpu (")
    assert costs.input_shape == (1, 1, 32, 32)
    data = json.loads(json.dumps(costs.to_dict()))
    assert data["input_shape"] == [1, 1, 32, 32] and data["macs"] == costs.macs
    assert Costs(**{**data, "input_shape": tuple(data["input_shape"])}) == costs


def test_measure_latency_restores_eval_mode_too():
    model = nn.Conv2d(1, 2, 3).eval()
    assert measure_latency(model, (1, 1, 8, 8), warmup=0, repeats=1) > 0
    assert not model.training


class _Swish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - never trained here
        return grad


class _OddOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        return _Swish.apply(torch.sin(self.conv(x))).logaddexp(x.mean())


def test_unknown_ops_do_not_break_or_warn():
    model = _OddOps()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        costs = measure_costs(model, (1, 2, 8, 8), warmup=0, repeats=2)
    assert costs.macs == 8 * 8 * 4 * 2 * 9
    assert costs.latency_ms > 0


def test_disagreement_warns_with_both_numbers():
    class Functional(nn.Module):  # a conv the hooks cannot see
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4, 2, 3, 3))

        def forward(self, x):
            return nn.functional.conv2d(x, self.weight, padding=1)

    with pytest.warns(UserWarning, match=r"op counter 4608 vs layer hooks 0"):
        costs = measure_costs(Functional(), (1, 2, 8, 8), warmup=0, repeats=1)
    assert costs.macs == 8 * 8 * 4 * 2 * 9 == 4608


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_stays_on_cuda():
    model = nn.Conv2d(1, 2, 3).cuda()
    costs = measure_costs(model, (1, 1, 16, 16), device="cuda", warmup=1, repeats=2)
    assert next(model.parameters()).is_cuda and costs.latency_device.startswith("cuda:")
    assert costs.macs == 14 * 14 * 2 * 9
