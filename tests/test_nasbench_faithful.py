"""The faithfulness check's own arithmetic (benchmarks/nasbench_faithful.py): the seed noise it reads from
the table and the hypervolume interval that noise gives a live run."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from nasbench_faithful import noise_interval, seed_noise  # noqa: E402
from test_nasbench_load import fake_table  # noqa: E402

from nas.bench.replay import Event, front_hypervolume  # noqa: E402


def _events(points):
    return [Event(i, f"k{i}", 0.0, 0.0, True, macs, val, test) for i, (macs, val, test) in enumerate(points)]


def test_seed_noise_pairs_seeds_1_and_2_with_seed_0_of_the_same_architecture():
    frame = fake_table()
    noise = seed_noise(frame)
    assert noise.shape == (6, 2)  # 3 architectures with seeds 1 and 2
    row = frame[(frame.arch_id == "s0010")].set_index("seed")
    assert np.isclose(noise[2:4, 1], row.loc[[1, 2], "final_test_dice"] - row.loc[0, "final_test_dice"]).all()


def test_noise_interval_is_zero_without_noise_and_covers_the_spread_with_it():
    events = _events([(10**6, 0.6, 0.62), (10**7, 0.7, 0.71), (10**8, 0.8, 0.79)])
    assert noise_interval(events, np.zeros((4, 2)), draws=50) == (0.0, 0.0)
    low, high = noise_interval(events, np.array([[0.02, 0.02], [-0.02, -0.02]]), draws=400)
    assert low < 0 < high and abs(low + high) < 0.25 * (high - low)  # two trainings: symmetric
    base = front_hypervolume(events, float("inf"))
    assert abs(low) < base and high < base
