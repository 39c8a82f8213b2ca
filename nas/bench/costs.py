"""The costs of an architecture the table lacks, predicted in microseconds instead of counted in seconds.

A replay proposes tens of thousands of architectures the table has never seen, and counting one's MACs
(``nas.costs.measure.count_macs``, a forward on the meta device) takes 1-3 s on this machine's cores: more
than the whole replay may spend. So unseen architectures get their MACs and parameters from a regression
fitted on architectures counted exactly (the table's and ``cost_samples``, a larger set of uniform draws
that costs no training), on structural proxies (per-stage width^2 x area x blocks). Its error is measured
(``cross_validated_error``) and stated beside every replay result; the table's own rows keep their counted
costs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from nas.bench.load import encode_params, encode_row, spec_dict
from nas.bench.trees import boosted_rows

IMAGE_SIZE = 64
COUNT_COLUMNS = ("spec_key", "spec", "macs", "param_count")


def proxies(spec: Any, image_size: int = IMAGE_SIZE) -> tuple[float, float]:
    """(log10 MAC proxy, log10 parameter proxy): 3x3 convs of every stage's blocks, encoder and decoder."""
    s = spec_dict(spec)
    widths = [int(w) for w in s["encoder_widths"]]
    blocks = int(s.get("blocks_per_stage", 1))
    expansion = int(s.get("expansion", 4)) if s.get("block") == "inverted" else 1
    macs = params = 0.0
    for level, width in enumerate(widths):
        area = (image_size / 2 ** level) ** 2
        stages = 1 if level == len(widths) - 1 else 2  # the bridge has no decoder stage
        per_block = 9.0 * width * width * expansion
        macs += stages * blocks * per_block * area
        params += stages * blocks * per_block
    return math.log10(max(macs, 1.0)), math.log10(max(params, 1.0))


def features(frame: pd.DataFrame) -> pd.DataFrame:
    """``encode_params`` without the counted costs, plus the proxies."""
    stand_in = frame.assign(macs=1, param_count=1)
    out = encode_params(stand_in).drop(columns=["log10_macs", "log10_params"])
    prox = np.array([proxies(spec) for spec in frame["spec"]])
    out["proxy_macs"], out["proxy_params"] = prox[:, 0], prox[:, 1]
    return out


@dataclass
class CostModel:
    """log10 MACs and log10 parameters from the spec."""

    macs: Any
    params: Any
    columns: list[str]
    _rows: Any = field(default=None, init=False, repr=False, compare=False)  # one-row predictors, built once

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = features(frame).reindex(columns=self.columns, fill_value=0.0).to_numpy()
        return pd.DataFrame({"macs": np.round(10 ** self.macs.predict(x)).astype(np.int64),
                             "param_count": np.round(10 ** self.params.predict(x)).astype(np.int64)},
                            index=frame.index)

    def __call__(self, spec: Any) -> tuple[int, int]:
        """One spec's (MACs, parameters), without pandas (a replay asks one proposal at a time)."""
        row = encode_row(spec, 1, 1)
        row["proxy_macs"], row["proxy_params"] = proxies(spec)
        x = np.array([[row.get(column, 0.0) for column in self.columns]])
        if self._rows is None:  # the trees descended at once (nas.bench.trees), else sklearn's predict
            fast = [boosted_rows(model) for model in (self.macs, self.params)]
            self._rows = [m.predict if m is not None else (lambda x, model=model: model.predict(x)[0])
                          for m, model in zip(fast, (self.macs, self.params))]
        macs, params = (predict(x) for predict in self._rows)
        return int(round(10 ** macs)), int(round(10 ** params))


def _regressor(seed: int = 0) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.08, min_samples_leaf=5, random_state=seed)


def fit_cost_model(frame: pd.DataFrame, seed: int = 0) -> CostModel:
    """Fit on every architecture of ``frame`` (columns ``spec``, ``macs``, ``param_count``); one OpenMP
    thread, as the surrogate (two threads on a busy 2-core machine ran ten times slower)."""
    from threadpoolctl import threadpool_limits

    rows = frame.drop_duplicates("spec_key") if "spec_key" in frame else frame
    x = features(rows)
    with threadpool_limits(1):
        macs = _regressor(seed).fit(x.to_numpy(), np.log10(rows["macs"].astype(float)))
        params = _regressor(seed).fit(x.to_numpy(), np.log10(rows["param_count"].astype(float)))
    return CostModel(macs, params, list(x.columns))


def cross_validated_error(frame: pd.DataFrame, folds: int = 10, seed: int = 0) -> dict[str, float]:
    """Held-out relative error of the predicted MACs and parameters (median and 95th percentile, in %)."""
    from sklearn.model_selection import KFold

    rows = (frame.drop_duplicates("spec_key") if "spec_key" in frame else frame).reset_index(drop=True)
    predicted = pd.DataFrame(index=rows.index, columns=["macs", "param_count"], dtype=float)
    for train, test in KFold(min(folds, len(rows)), shuffle=True, random_state=seed).split(rows):
        model = fit_cost_model(rows.iloc[train], seed)
        predicted.iloc[test] = model.predict(rows.iloc[test]).to_numpy(dtype=float)
    out: dict[str, float] = {"architectures": float(len(rows))}
    for name in ("macs", "param_count"):
        error = np.abs(predicted[name].to_numpy(dtype=float) / rows[name].to_numpy(dtype=float) - 1.0) * 100
        out[f"{name}_median_error_pct"] = float(np.median(error))
        out[f"{name}_p95_error_pct"] = float(np.percentile(error, 95))
    return out


def cost_samples(path: Path, count: int, seed: int = 1, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Count the exact MACs and parameters of ``count`` uniform draws (a stream other than the table's),
    appended to ``path`` (parquet, atomic per call; a rerun counts only what is missing)."""
    import torch

    from nas.bench.table import sampled_entries, spec_key
    from nas.costs.measure import count_macs, count_params
    from search_spaces import get_space

    space = get_space("resunet")
    done = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=list(COUNT_COLUMNS))
    known = set(done["spec_key"])
    rows = []
    for entry in sampled_entries(space, count, IMAGE_SIZE, table_seed=seed):
        spec = space.spec_from_dict(entry.spec)
        key = spec_key(spec)
        if key in known:
            continue
        with torch.device("meta"):
            model = space.build_model(spec, 1, 1)
        rows.append({"spec_key": key, "spec": json.dumps(spec.to_dict()),
                     "macs": count_macs(model, (1, 1, IMAGE_SIZE, IMAGE_SIZE)), "param_count": count_params(model)})
        if len(rows) % 50 == 0:
            log(f"  counted {len(rows)}")
            done = _save(path, done, rows)
            rows = []
    return _save(path, done, rows)


def _save(path: Path, done: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    import os

    frame = pd.concat([done, pd.DataFrame(rows, columns=list(COUNT_COLUMNS))], ignore_index=True) if rows else done
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return frame
