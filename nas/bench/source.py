"""Where a replayed trial's curve comes from: the table row of its spec, else the surrogate's prediction.

Costs of an architecture the table lacks are counted exactly (MACs and parameters from the built model,
once per spec); its curve, test Dice and seconds come from the surrogate (``nas.bench.surrogate``); its
set-up and scoring seconds are the table's medians per MAC.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import pandas as pd

from nas.bench.replay import Curve
from nas.bench.table import spec_key
from nas.costs.measure import count_macs, count_params


def curve_from_row(row: Any) -> Curve:
    """A table row (a frame row or a dict) as a replay ``Curve``."""
    get = row.get if isinstance(row, dict) else row.__getitem__
    costs = {"macs": int(get("macs")), "flops": int(get("flops")), "params": int(get("param_count")),
             "latency_ms": float(get("latency_ms"))}
    memory = get("train_memory_mb")
    if memory is not None and not (isinstance(memory, float) and math.isnan(memory)):
        costs["train_memory_mb"] = float(memory)
    test = get("final_test_dice")
    return Curve(val_dice=tuple(float(v) for v in get("val_dice")), epoch_s=tuple(float(v) for v in get("epoch_cpu_s")),
                 costs=costs, final_test_dice=float(test) if test is not None else math.nan,
                 setup_s=float(get("setup_cpu_s")), finish_s=float(get("finish_cpu_s")),
                 loss=tuple(float(v) for v in get("loss")), source="table")


class TableSource:
    """``spec -> Curve``: the seed-``seed`` row of the spec when the table has it, else the surrogate's.

    ``predict(spec, macs, params)`` returns ``final_test_dice``, ``val_dice`` and ``epoch_cpu_s`` (lists per
    epoch), as ``nas.bench.surrogate.Surrogate.predict_one``; None: an architecture the table lacks is an
    error (a tabular-only replay)."""

    def __init__(self, frame: pd.DataFrame, space: Any, in_channels: int, image_size: int, seed: int = 0,
                 predict: Callable[[Any, int, int], dict[str, Any]] | None = None,
                 costs: Callable[[Any], tuple[int, int]] | None = None) -> None:
        rows = frame[frame["seed"] == seed]
        self.rows = {key: curve_from_row(row) for key, (_, row) in zip(rows["spec_key"], rows.iterrows())}
        self.space, self.in_channels, self.image_size, self.predict = space, in_channels, image_size, predict
        self.costs = costs or self._counted  # (macs, params) of an unseen spec: nas.bench.costs predicts them fast
        per_mac = [(c.setup_s / c.costs["macs"], c.finish_s / c.costs["macs"]) for c in self.rows.values()]
        self.setup_per_mac = _median([p[0] for p in per_mac])
        self.finish_per_mac = _median([p[1] for p in per_mac])
        self.predicted: dict[str, Curve] = {}
        self.hits = self.misses = 0

    def __call__(self, spec: Any) -> Curve:
        key = spec_key(spec)
        if key in self.rows:
            self.hits += 1
            return self.rows[key]
        self.misses += 1
        if key not in self.predicted:
            if self.predict is None:
                raise KeyError(f"the table lacks this architecture and the replay has no surrogate: {key[:120]}")
            self.predicted[key] = self._predicted(spec, key)
        return self.predicted[key]

    def macs(self, spec: Any) -> int:
        """The MACs a replayed trial of ``spec`` will report: the table's, else the cost model's."""
        row = self.rows.get(spec_key(spec))
        return row.costs["macs"] if row is not None else int(self.costs(spec)[0])

    def _counted(self, spec: Any) -> tuple[int, int]:
        model = self.space.build_model(spec, self.in_channels, 1)
        shape = (1, self.in_channels, *(self.image_size,) * getattr(spec, "spatial_dims", 2))
        return count_macs(model, shape), count_params(model)

    def _predicted(self, spec: Any, key: str) -> Curve:
        macs, params = self.costs(spec)
        out = self.predict(spec, macs, params)
        costs = {"macs": macs, "flops": 2 * macs, "params": params,
                 "latency_ms": float(out["latency_ms"]) if "latency_ms" in out else math.nan}
        return Curve(val_dice=tuple(float(v) for v in out["val_dice"]),
                     epoch_s=tuple(float(v) for v in out["epoch_cpu_s"]), costs=costs,
                     final_test_dice=float(out["final_test_dice"]), setup_s=self.setup_per_mac * macs,
                     finish_s=self.finish_per_mac * macs, source="surrogate")


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if math.isfinite(v))
    return values[len(values) // 2] if values else 0.0
