"""Presets: the published baselines, their exact costs, and the model contract on each of them."""
from __future__ import annotations

import pytest
import torch

from nas.costs.measure import count_macs, count_params
from search_spaces import get_space
from search_spaces.presets import Preset, get_preset, list_presets
from search_spaces.resunet import build_model
from test_search_space import ModelContract, pytest_generate_tests  # noqa: F401 - parametrizes

def test_list_and_unknown_preset():
    assert list_presets() == ["mobile-resunet", "resunet-standard", "unet-16", "unet-64"]
    with pytest.raises(ValueError, match="unknown preset 'unet-7'.*resunet-standard"):
        get_preset("unet-7")
    preset = get_preset("unet-16")
    assert isinstance(preset, Preset) and preset.space == "resunet" and preset.description


# (params, MACs) at 256 x 256, batch 1, for the preset's own input channels and for one channel.
# The published figures (8.22 M / 45.2 GMAC / 90.5 GFLOP; 31.0 M / 48.2 GMAC) are the RGB ones.
EXPECTED = {
    "resunet-standard": {3: (8_219_585, 45_227_180_032), 1: (8_218_305, 45_143_293_952)},
    "unet-64": {3: (31_037_633, 48_167_387_136), 1: (31_036_481, 48_091_889_664)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_costs_are_reproduced(name):
    preset = get_preset(name)
    assert preset.in_channels == 3
    for in_ch, (params, macs) in EXPECTED[name].items():
        model = build_model(preset.spec, in_ch, 1)
        assert count_params(model) == params
        assert count_macs(model, (1, in_ch, 256, 256)) == macs
    params, macs = EXPECTED[name][3]
    if name == "resunet-standard":
        assert (round(params / 1e6, 2), round(macs / 1e9, 1), round(2 * macs / 1e9, 1)) == (8.22, 45.2, 90.5)
        # without the projection shortcuts (1x1 conv + norm) it is the paper's 7.8 M
        model = build_model(preset.spec, 3, 1)
        shortcuts = sum(p.numel() for n, p in model.named_parameters() if ".shortcut." in n)
        assert (params - shortcuts, round((params - shortcuts) / 1e6, 1)) == (7_786_497, 7.8)
    else:
        assert (round(params / 1e6, 1), round(macs / 1e9, 1)) == (31.0, 48.2)


def test_resunet_standard_is_the_paper_design():
    model = build_model(get_preset("resunet-standard").spec, 3, 1)
    assert [stage[0].conv1.stride[0] for stage in model.encoder] == [1, 2, 2, 2]
    assert [stage[0].conv2.out_channels for stage in model.encoder] == [64, 128, 256, 512]
    assert [stage[0].conv2.out_channels for stage in model.decoder] == [256, 128, 64]
    assert [stage[0].conv1.in_channels for stage in model.decoder] == [768, 384, 192]
    assert all(not isinstance(stage[0].shortcut, torch.nn.Identity) for stage in model.encoder)
    assert model.head.kernel_size == (1, 1)


class TestPresets(ModelContract):
    """Every preset passes the same contract as every sampled space member (at 32-64 px)."""

    cases = tuple(list_presets())
    reload_cases = cases
    prune_cases = cases
    onnx_cases = cases

    def case(self, name):
        preset = get_preset(name)
        assert get_space(preset.space)  # registered
        return preset.space, preset.spec, preset.in_channels
