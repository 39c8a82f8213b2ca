"""benchmarks/multiclass.py's reading of stored results: the small stratum of a TEST quality block (missing
blocks give None, not a crash), the best detection at or under MAC levels, and the seed spread."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "multiclass.py"
_spec = importlib.util.spec_from_file_location("bench_multiclass", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_small_stratum_reads_the_test_block_not_validation():
    splits = {"val": {"size_strata": {"small": {"dice": 0.9, "detected": 1.0, "count": 3}}},
              "test": {"dice": 0.7, "size_strata": {"small": {"dice": 0.25, "detected": 0.5, "count": 4},
                                                    "large": {"dice": 0.8, "detected": 1.0, "count": 2}}}}
    assert bench.small_stratum(splits) == {"dice": 0.25, "detected": 0.5, "count": 4}
    assert bench.small_stratum(splits, "val")["dice"] == 0.9
    empty = {"dice": None, "detected": None, "count": None}
    assert bench.small_stratum(None) == empty
    assert bench.small_stratum({"val": {}}) == empty  # an older run without a test split


def test_best_under_each_mac_level():
    points = [(1_000_000, 0.2), (3_000_000, 0.6), (8_000_000, 0.4), (9_000_000, None)]
    assert bench.best_under(points, [500_000, 1_000_000, 5_000_000, 10_000_000]) == [None, 0.2, 0.6, 0.6]


def test_spread_over_seeds_skips_misses():
    assert bench.spread([None, None]) == "n/a"
    assert bench.spread([0.5]) == "0.500 ± 0.000 (0.500..0.500)"
    assert bench.spread([0.2, None, 0.4]) == "0.300 ± 0.141 (0.200..0.400)"


def test_shared_architectures_between_arms():
    a = {"specs": ['{"depth": 3}', '{"depth": 4}']}
    b = {"specs": ['{"depth": 4}', '{"depth": 5}']}
    assert bench.shared(a, b) == 1
    assert bench.shared(a, a) == 2
