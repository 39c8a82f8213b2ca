"""Read a benchmark table: a pandas frame per task, its architecture encoding, and a Syne Tune blackbox.

``load_table`` is the one entry point for the stored data (parquet plus the build journal beside it, so a
table still being built is readable). ``encode_params`` turns any spec, space point or not (family members,
presets), into a fixed set of numeric columns for regression models. ``to_blackbox`` hands the same data to
Syne Tune (``BlackboxTabular``), so its schedulers and simulator backend run on the table unchanged, and
``with_surrogate`` answers the configurations the table lacks. Syne Tune stays optional: it is imported
only inside the functions that need it.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from search_spaces.resunet.spec import (ATTENTION_PLACES, BLOCKS, DILATIONS, DOWNSAMPLES, SKIP_ATTENTIONS,
                                        SKIP_FUSIONS, UPSAMPLES)
from search_spaces.resunet.ops import ACTIVATIONS, NORMS

ROOT = Path(__file__).resolve().parents[2]
TABLES = ROOT / "benchmarks" / "nasbench"
STAGES = 6  # stage widths padded with 0 to this many (the space's deepest); a deeper spec keeps its first 6
CATEGORIES: dict[str, tuple[Any, ...]] = {  # fixed levels, so every frame encodes to the same columns
    "block": BLOCKS, "downsample": DOWNSAMPLES, "skip_attention": SKIP_ATTENTIONS,
    "attention_place": ATTENTION_PLACES, "skip_fusion": SKIP_FUSIONS, "upsample": UPSAMPLES,
    "norm": NORMS, "activation": ACTIVATIONS,
}
FLAGS = ("hybrid_dilation", "aspp", "skip_gain", "multiscale_input", "deep_supervision")
INTS = ("depth", *(f"width_{i}" for i in range(STAGES)), "blocks_per_stage", "expansion")
EPOCH_LISTS = ("val_dice", "test_dice", "loss", "epoch_cpu_s", "epoch_wall_s")
CUMULATIVE = {"elapsed_cpu_s": "epoch_cpu_s", "elapsed_wall_s": "epoch_wall_s"}  # Syne Tune's time attribute
CONSTANTS = ("macs", "flops", "param_count", "latency_ms", "train_memory_mb")
OBJECTIVES = ("val_dice", "test_dice", "elapsed_cpu_s", "macs", "param_count")
FIDELITY = "epoch"


def load_table(task: str = "synthetic", root: Path | None = None) -> pd.DataFrame:
    """The task's rows, one per (arch_id, seed): ``<task>.parquet`` plus ``<task>.journal.jsonl`` beside it."""
    from nas.bench.build import read_rows  # pulls in torch and the engine: only when a table is read
    from nas.bench.table import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown benchmark task {task!r}; known: {', '.join(TASKS)}")
    folder = Path(root) if root is not None else TABLES
    table, journal = folder / f"{task}.parquet", folder / f"{task}.journal.jsonl"
    frame = read_rows(table, journal)
    if frame.empty:
        raise ValueError(f"no benchmark table for task {task!r}: neither {table} nor {journal} has rows")
    return frame


def spec_dict(spec: Any) -> dict[str, Any]:
    """A spec as a plain dict, from a ``ResUNetSpec``, a dict or its JSON text."""
    if hasattr(spec, "to_dict"):
        return spec.to_dict()
    return json.loads(spec) if isinstance(spec, str) else dict(spec)


def spec_fields(spec: Any) -> dict[str, Any]:
    """The architecture as flat raw fields (strings, bools, ints): what ``to_blackbox`` uses as its config."""
    s = spec_dict(spec)
    widths = list(s["encoder_widths"])[:STAGES]
    block = s.get("block", "basic")
    fields: dict[str, Any] = {"depth": len(s["encoder_widths"])}
    fields.update({f"width_{i}": int(widths[i]) if i < len(widths) else 0 for i in range(STAGES)})
    fields.update({
        "blocks_per_stage": int(s.get("blocks_per_stage", 1)), "block": block,
        "expansion": int(s.get("expansion", 4)) if block == "inverted" else 0,  # inert elsewhere
        "downsample": s.get("downsample", "maxpool"), "bridge_dilation": int(s.get("bridge_dilation", 1)),
        "skip_attention": s.get("skip_attention", "none"), "attention_place": s.get("attention_place", "skip"),
        "skip_fusion": s.get("skip_fusion", "add"), "upsample": s.get("upsample", "transposed"),
        "norm": s.get("norm", "batch"), "activation": s.get("activation", "relu"),
        "dropout": float(s.get("dropout", 0.0)),
    })
    fields.update({flag: bool(s.get(flag, False)) for flag in FLAGS})
    return fields


def raw_fields(frame: pd.DataFrame) -> pd.DataFrame:
    """``spec_fields`` of every row's ``spec`` column, indexed like ``frame``."""
    return pd.DataFrame([spec_fields(spec) for spec in frame["spec"]], index=frame.index)


def encode_row(spec: Any, macs: float, params: float) -> dict[str, float]:
    """One architecture's features (the columns of ``encode_params``, in its order), without pandas: a
    replay encodes every proposal alone, and a one-row frame costs a hundred times more."""
    raw = spec_fields(spec)
    out = {name: float(raw[name]) for name in (*INTS, "bridge_dilation", "dropout")}
    out.update({flag: float(raw[flag]) for flag in FLAGS})
    for name, levels in CATEGORIES.items():
        if raw[name] not in levels:
            raise ValueError(f"encode_params: {name} value(s) {[raw[name]]} not among {list(levels)}")
        out.update({f"{name}={level}": float(raw[name] == level) for level in levels})
    out["log10_macs"] = float(np.log10(max(float(macs), 1.0)))
    out["log10_params"] = float(np.log10(max(float(params), 1.0)))
    return out


def encode_params(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric features for models: ints and flags as numbers, categoricals one-hot (fixed levels),
    log10 of MACs and parameters. Works for any spec since it reads the spec, not the space's params."""
    rows = [encode_row(spec, macs, params) for spec, macs, params in
            zip(frame["spec"], frame["macs"], frame["param_count"])]
    return pd.DataFrame(rows, index=frame.index)


def _domain(values: Iterable[Any], allowed: Sequence[Any] | None = None) -> Any:
    from syne_tune.config_space import choice, randint

    values = sorted(set(values))
    if allowed is not None:
        return choice(list(allowed))
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values) and len(values) > 1:
        return randint(int(values[0]), int(values[-1]))
    return choice([v.item() if hasattr(v, "item") else v for v in values])


def configuration_space(raw: pd.DataFrame) -> dict[str, Any]:
    """Syne Tune domains over the spec fields: choice() for categoricals and flags (every level the spec
    allows, so a scheduler can reach what only presets use), randint() over the table's range for ints."""
    space: dict[str, Any] = {}
    for name in raw.columns:
        if name in CATEGORIES:
            space[name] = _domain(raw[name], CATEGORIES[name])
        elif name in FLAGS:
            space[name] = _domain(raw[name], (False, True))
        elif name == "bridge_dilation":
            space[name] = _domain(raw[name], DILATIONS)
        elif name == "dropout":
            space[name] = _domain(raw[name], sorted({0.0, 0.1, 0.2} | set(raw[name])))
        else:
            space[name] = _domain(raw[name])
    return space


def _syne_tune() -> Any:
    try:
        from syne_tune.blackbox_repository import blackbox_tabular
    except ImportError as error:
        raise ImportError(f"the Syne Tune blackbox needs syne-tune (pip install syne-tune): {error}") from None
    return blackbox_tabular


def _objective(rows: pd.DataFrame, name: str, epochs: int) -> np.ndarray:
    """(num_archs, epochs) values of one objective: per-epoch lists, their cumulative sums, or constants."""
    def curves(column: str) -> np.ndarray:
        return np.array([[float("nan") if v is None else float(v) for v in curve] for curve in rows[column]])

    if name in EPOCH_LISTS:
        return curves(name)
    if name in CUMULATIVE:
        return np.cumsum(curves(CUMULATIVE[name]), axis=1)
    if name in CONSTANTS or name in rows.columns:
        values = pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float)
        return np.repeat(values[:, None], epochs, axis=1)
    raise ValueError(f"unknown objective {name!r}; known: {', '.join((*EPOCH_LISTS, *CUMULATIVE, *CONSTANTS))}")


def to_blackbox(frame: pd.DataFrame, objectives: Sequence[str] = OBJECTIVES) -> Any:
    """The table as a Syne Tune ``BlackboxTabular``: one evaluation per architecture, its seed-0 run
    (num_seeds=1: Syne Tune draws a seed per trial at random, which would mix runs of different seeds into
    one replay; the extra seeds are the noise floor, read from the frame). Fidelity ``epoch`` 1..E; the
    time attribute is ``elapsed_cpu_s`` (one thread's cumulative CPU seconds). Architectures whose spec
    fields coincide keep the first row (samples before family and presets). ``blackbox.arch_ids`` names
    the rows."""
    tabular = _syne_tune()
    from syne_tune.config_space import randint

    rows = frame[frame["seed"] == 0]
    order = rows["kind"].map({"sample": 0}).fillna(1) if "kind" in rows else pd.Series(0, index=rows.index)
    rows = rows.assign(_order=order).sort_values(["_order", "arch_id"], kind="stable").drop(columns="_order")
    raw = raw_fields(rows)
    keep = ~raw.duplicated()
    rows, raw = rows[keep].reset_index(drop=True), raw[keep].reset_index(drop=True)
    if rows.empty:
        raise ValueError("to_blackbox: the frame has no seed-0 rows")
    epochs = max(len(curve) for curve in rows["val_dice"])
    if any(len(curve) != epochs for curve in rows["val_dice"]):
        raise ValueError(f"to_blackbox: every row needs {epochs} epochs of curves")
    evaluations = np.stack([_objective(rows, name, epochs) for name in objectives], axis=-1)[:, None]
    blackbox = tabular.BlackboxTabular(
        hyperparameters=raw, configuration_space=configuration_space(raw),
        fidelity_space={FIDELITY: randint(1, epochs)}, objectives_evaluations=evaluations,
        fidelity_values=np.arange(1, epochs + 1), objectives_names=list(objectives))
    blackbox.arch_ids = list(rows["arch_id"])
    return blackbox


def with_surrogate(blackbox: Any, surrogate: Any = None) -> Any:
    """``blackbox`` behind Syne Tune's ``add_surrogate``: any configuration is answered, whole curves at
    once (``predict_curves``; cumulative times fitted as per-epoch differences so they keep increasing).
    The default model is a random forest on standardized targets (multi-output, deterministic)."""
    _syne_tune()
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.preprocessing import StandardScaler
    from syne_tune.blackbox_repository.blackbox_surrogate import add_surrogate

    if surrogate is None:
        surrogate = TransformedTargetRegressor(
            RandomForestRegressor(n_estimators=200, random_state=0, n_jobs=1), transformer=StandardScaler())
    cumulative = [name for name in blackbox.objectives_names if name in CUMULATIVE]
    source = copy.copy(blackbox)  # pandas 3 hands out read-only arrays that Syne Tune 0.16 differences in place
    X, y = blackbox.hyperparameter_objectives_values(predict_curves=True)
    source.hyperparameter_objectives_values = lambda predict_curves=True: (X, _WritableFrame(y))
    answered = add_surrogate(source, surrogate=surrogate, predict_curves=True, fit_differences=cumulative or None)
    answered.__class__ = _curve_surrogate(type(answered))
    return answered


def _curve_surrogate(base: type) -> type:
    """``base`` answering one fidelity from its predicted curve: Syne Tune 0.16's curve mode zips the
    objective names with a (1, objectives) array there, which gives one key (whole-curve queries, what
    the simulator backend asks, are right)."""
    class CurveSurrogate(base):  # type: ignore[misc, valid-type]
        def _objective_function(self, configuration: dict, fidelity: dict | None = None,
                                seed: int | None = None) -> Any:
            curve = super()._objective_function(configuration, None, seed)
            if fidelity is None:
                return curve
            index = int(np.flatnonzero(self.fidelity_values == next(iter(fidelity.values())))[0])
            return dict(zip(self.objectives_names, curve[index]))

    return CurveSurrogate


class _WritableFrame(pd.DataFrame):
    """A frame whose ``to_numpy`` is a writable copy (pandas 3's copy-on-write views are read-only)."""

    def to_numpy(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.array(super().to_numpy(*args, **kwargs))

