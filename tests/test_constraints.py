"""Constraints before training: limits, violations and training-step memory on models of known cost."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.costs.constraints import (MB, Constraints, check, check_model, format_count, parse_count,
                             training_step_memory)
from nas.costs.measure import count_macs, count_params


def conv_model() -> nn.Module:
    """Conv2d(1 -> 4, 3x3, no bias): 36 params; at 8x8, 64 * 4 * 9 = 2304 MACs per image."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False))


@pytest.mark.parametrize("text, value", [
    ("500M", 500_000_000), ("2G", 2_000_000_000), ("1.5g", 1_500_000_000), ("750k", 750_000),
    ("1T", 10**12), ("123", 123), ("2e9", 2_000_000_000), (" 40 M ", 40_000_000),
])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "M", "5X", "-1G", "0", "1.5.2M", "0.1"])
def test_parse_count_refuses(text):
    with pytest.raises(ValueError):
        parse_count(text)


def test_format_count():
    assert format_count(1.2e9, "MAC") == "1.2 GMAC"
    assert format_count(5e8, "MAC") == "500 MMAC"
    assert format_count(36) == "36"


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="--max-latency-ms must be > 0"):
        Constraints(max_latency_ms=0)
    assert not Constraints() and Constraints(max_macs=1)
    assert Constraints(max_macs=5 * 10**8, max_params=10).to_dict() == {"max_params": 10, "max_macs": 5 * 10**8}


def test_violations_are_relative_and_name_the_flag():
    measured = {"params": 2_000_000, "macs": 1_200_000_000, "flops": 2_400_000_000, "latency_ms": 5.0}
    verdict = check(measured, Constraints(max_params=4_000_000, max_macs=500_000_000, max_latency_ms=10))
    assert not verdict.feasible
    assert verdict.violations == pytest.approx({"params": -0.5, "macs": 1.4, "latency_ms": -0.5})
    assert verdict.reason == "infeasible: 1.2 GMAC > --max-macs 500 MMAC"
    feasible = check(measured, Constraints(max_macs=2_000_000_000))
    assert feasible.feasible and feasible.violations == pytest.approx({"macs": -0.4})
    with pytest.raises(KeyError, match="--max-memory-mb"):
        check(measured, Constraints(max_memory_mb=1))


def test_check_model_measures_with_the_search_conventions():
    model = conv_model()
    verdict = check_model(model, Constraints(max_params=35, max_macs=2304), in_channels=1, image_size=8,
                          batch_size=2)
    assert verdict.measured["params"] == 36 == count_params(model)
    assert verdict.measured["macs"] == 2304 == count_macs(model, (1, 1, 8, 8))
    assert verdict.measured["flops"] == 2 * 2304
    assert verdict.violations["macs"] == 0 and verdict.violations["params"] == pytest.approx(1 / 35)
    assert verdict.reason == "infeasible: 36 params > --max-params 35 params"
    assert verdict.measured["macs_counter"] == "op counter"  # within the limit: the search's own count decides
    assert "latency_ms" not in verdict.measured and "train_memory_mb" not in verdict.measured  # not limited
    over = check_model(model, Constraints(max_macs=1000), in_channels=1, image_size=8, batch_size=2)
    assert over.measured["macs"] == 2304 and over.measured["macs_counter"].startswith("layer hooks")
    assert over.reason == "infeasible: 2.3 kMAC > --max-macs 1 kMAC"
    assert "macs" not in check_model(model, Constraints(max_params=99), in_channels=1, image_size=8,
                                     batch_size=1).measured


def test_training_step_memory_of_a_known_model():
    """Saved for backward: the input (2*1*8*8 floats; the weight is a parameter, not counted),
    plus the output (2*4*8*8 floats); state: 36 params x (weight, grad, 2 Adam moments)."""
    memory = training_step_memory(conv_model(), (2, 1, 8, 8))
    assert memory["activation_bytes"] == (2 * 1 * 64 + 2 * 4 * 64) * 4
    assert memory["state_bytes"] == 36 * 4 * 4
    assert memory["train_memory_mb"] == pytest.approx((2560 + 576) / MB)


def test_training_step_memory_scales_with_the_batch_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    before = model[1].running_mean.clone()
    one = training_step_memory(model, (1, 1, 16, 16))["activation_bytes"]
    two = training_step_memory(model, (2, 1, 16, 16))["activation_bytes"]
    # Activations scale with the batch; BN's saved per-channel statistics (a few floats) do not.
    assert 0 <= 2 * one - two <= 4 * 4 * 4 and one > 16 * 16 * 4 * 4
    assert torch.equal(model[1].running_mean, before) and model.training


def test_latency_and_memory_limits():
    verdict = check_model(conv_model(), Constraints(max_latency_ms=1e6, max_memory_mb=1e-6), in_channels=1,
                          image_size=8, batch_size=2)
    assert verdict.measured["latency_ms"] > 0 and verdict.violations["latency_ms"] < 0
    assert verdict.violations["train_memory_mb"] > 0 and "--max-memory-mb" in verdict.reason
    assert verdict.measured["train_memory_batch"] == 2
