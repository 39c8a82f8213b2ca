"""nas.costs.latency: interleaved robust re-measurement, the noisy flag, and ONNX Runtime latency.

Statistics are checked with a fake clock that the models themselves advance, so they do not
depend on this machine's load; the real-clock tests only ask for positive, finite numbers.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from nas.costs.latency import (
    NOISY_SPREAD,
    interleaved_rounds,
    measure_latencies,
    measure_onnx_latency,
    robust_statistic,
)
from nas.costs.measure import describe_device
from nas.deploy.export import export_onnx


class Ticking(nn.Module):
    """Each forward advances the shared fake clock by the next of ``durations_ms`` (then the last one)."""

    def __init__(self, clock: list[float], durations_ms) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.clock, self.durations, self.calls = clock, list(durations_ms), 0

    def forward(self, x):
        self.clock[0] += self.durations[min(self.calls, len(self.durations) - 1)] / 1000
        self.calls += 1
        return self.conv(x)


def test_one_result_per_model_in_order_json_safe_with_threads_and_device():
    models = {"b": nn.Conv2d(1, 2, 3), "a": nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())}
    results = measure_latencies(models, (1, 1, 16, 16), rounds=3, repeats=2, warmup=1)
    assert list(results) == ["b", "a"]
    for name, result in results.items():
        assert result.name == name and result.engine == "torch" and result.rounds == 3 and result.repeats == 2
        assert math.isfinite(result.latency_ms) and result.latency_ms > 0 and len(result.round_medians_ms) == 3
        assert result.threads == torch.get_num_threads() and result.device == describe_device("cpu")
        data = json.loads(json.dumps(result.to_dict()))
        assert data["input_shape"] == [1, 1, 16, 16] and data["noisy_threshold"] == NOISY_SPREAD
    assert models["b"].training  # the caller's modules keep their mode


def test_an_outlier_is_ignored_and_a_noisy_model_is_flagged():
    clock = [0.0]
    warmup, rounds, repeats = 1, 5, 3
    visit = 1 + repeats  # one re-warming forward, then the timed ones
    # "steady" takes 2 ms, except one forward of 1082 ms in round 2 (the recorded number);
    # "noisy" takes 2 ms in even rounds and 9 ms in odd ones.
    steady = [2.0] * (warmup + 2 * visit + 2) + [1082.0] + [2.0] * 100
    noisy = [2.0] * warmup + [d for r in range(rounds) for d in [2.0 if r % 2 == 0 else 9.0] * visit]
    models = {"steady": Ticking(clock, steady), "noisy": Ticking(clock, noisy)}
    results = measure_latencies(models, (1, 1, 4, 4), rounds=rounds, repeats=repeats, warmup=warmup,
                                clock=lambda: clock[0])
    assert results["steady"].latency_ms == pytest.approx(2.0)
    assert max(results["steady"].round_medians_ms) == pytest.approx(2.0)  # not even its round moved
    assert results["steady"].spread == pytest.approx(0.0) and not results["steady"].noisy
    assert results["noisy"].round_medians_ms == pytest.approx((2.0, 9.0, 2.0, 9.0, 2.0))
    assert results["noisy"].latency_ms == pytest.approx(2.0)
    assert results["noisy"].spread == pytest.approx(3.5) and results["noisy"].noisy


def test_rounds_interleave_and_rotate():
    order = []
    runners = {name: (lambda name=name: order.append(name)) for name in "abc"}
    interleaved_rounds(runners, rounds=3, repeats=1, warmup=0)
    visits = order[::2]  # each visit: one re-warming run, one timed run
    assert visits == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_robust_statistic():
    assert robust_statistic([1.0, 1.0, 1.0, 1.0, 100.0]) == (1.0, 0.0)
    assert robust_statistic([1.0, 2.0, 3.0]) == (2.0, pytest.approx(0.5))
    with pytest.raises(ValueError, match="at least 3 rounds"):
        robust_statistic([1.0, 2.0])


@pytest.mark.parametrize("kwargs, message", [
    ({"engine": "tensorrt"}, "unknown latency engine"),
    ({"engine": "onnxruntime"}, "needs export="),
    ({"rounds": 2}, "rounds >= 3"),
    ({"noisy_spread": 0}, "noisy_spread must be > 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latencies({"m": nn.Conv2d(1, 1, 1)}, (1, 1, 4, 4), **kwargs)


def test_onnx_runtime_latency_of_an_exported_model():
    from search_spaces import get_space
    from search_spaces.resunet import ResUNetSpec

    model = get_space("resunet").build_model(ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,)), 1, 1)
    model.train()
    result = measure_onnx_latency(model, (1, 1, 32, 32), export_onnx, rounds=3, repeats=2, warmup=1, threads=1)
    assert result.engine == "onnxruntime" and result.threads == 1 and "onnxruntime" in result.device
    assert math.isfinite(result.latency_ms) and result.latency_ms > 0
    assert model.training  # the exporter got a copy


def test_onnx_engine_interleaves_several_models():
    models = {"one": nn.Conv2d(2, 3, 3, padding=1), "two": nn.Conv2d(2, 3, 1)}
    results = measure_latencies(models, (1, 2, 16, 16), engine="onnxruntime", export=export_onnx, rounds=3,
                                repeats=1, warmup=0)
    assert list(results) == ["one", "two"] and all(r.latency_ms > 0 for r in results.values())
