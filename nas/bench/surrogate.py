"""A surrogate of the whole space, chosen by measurement: ``fit_surrogate(frame)``, ``cross_validate(frame)``.

The table holds a few hundred architectures of a space of millions; a replay that samples outside it needs a
model of the table. Every candidate regressor predicts, from ``encode_params``'s features, the final val and
test Dice, the val Dice curve and the log10 CPU seconds of each epoch (seconds span orders of magnitude, so
they are fitted in log space). They are compared the way NAS-Bench-301 reports its surrogates: Kendall tau
and R² of out-of-fold predictions on held-out architectures (k-fold), the final Dice, the val Dice at each
early-stopping rung and the seconds per epoch, beside the noise floor of the same numbers between training
seeds of one architecture. ``model="auto"`` fits the best by tau on final test Dice (ties: R²).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from sklearn.multioutput import MultiOutputRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from nas.bench.load import encode_params, encode_row, spec_dict

MODELS = ("gb", "hgb", "rf", "knn", "ridge")
RUNGS = (1, 3, 9)  # the default early-stopping rungs (epochs)
FINALS = ("final_val_dice", "final_test_dice")
THREADS = 1  # OpenMP/BLAS threads while fitting: HGB's OpenMP on a busy 2-core machine ran 10x slower with 2
IMAGE_SIZE, IN_CHANNELS = 64, 1  # the synthetic task's input: what MACs and params of a bare spec are counted at


class TargetCoder(BaseEstimator, TransformerMixin):
    """The 2 + 2E targets coded as 2 + E + 1 standardized numbers: the final Dice, the val curve, the mean
    log10 seconds per epoch (an epoch's offset from it is the training set's mean profile: the epochs of one
    run cost the same but for the first's warm-up, so E cost outputs would fit the same number E times).
    Standardized, no output dominates a shared tree's splits."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def _code(self, y: np.ndarray) -> np.ndarray:
        e = self.epochs
        return np.hstack([y[:, :2 + e], y[:, 2 + e:2 + 2 * e].mean(axis=1, keepdims=True)])

    def fit(self, y: np.ndarray, *_: Any) -> "TargetCoder":
        seconds = np.asarray(y, dtype=float)[:, 2 + self.epochs:]
        self.profile_ = (seconds - seconds.mean(axis=1, keepdims=True)).mean(axis=0)
        self.scaler_ = StandardScaler().fit(self._code(np.asarray(y, dtype=float)))
        return self

    def transform(self, y: np.ndarray) -> np.ndarray:
        return self.scaler_.transform(self._code(np.asarray(y, dtype=float)))

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        z = self.scaler_.inverse_transform(np.asarray(z, dtype=float).reshape(len(z), -1))
        return np.hstack([z[:, :-1], z[:, -1:] + self.profile_[None, :]])


def make_model(name: str, epochs: int, random_state: int = 0) -> Any:
    """A regressor of the coded targets (``TargetCoder``) that predicts the full 2 + 2E target row."""
    if name == "gb":
        base = MultiOutputRegressor(GradientBoostingRegressor(
            n_estimators=200, learning_rate=0.05, max_depth=3, subsample=0.8, random_state=random_state))
    elif name == "hgb":
        base = MultiOutputRegressor(HistGradientBoostingRegressor(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=8, l2_regularization=1.0,
            early_stopping=False, random_state=random_state))
    elif name == "rf":
        base = RandomForestRegressor(n_estimators=300, max_features=0.5, random_state=random_state, n_jobs=1)
    elif name == "knn":
        base = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=5, weights="distance"))
    elif name == "ridge":
        base = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    else:
        raise ValueError(f"unknown surrogate model {name!r}; known: {', '.join(MODELS)}")
    return TransformedTargetRegressor(base, transformer=TargetCoder(epochs), check_inverse=False)


def architectures(frame: pd.DataFrame, seeds: str = "zero") -> pd.DataFrame:
    """One row per architecture: its seed-0 run (``seeds="zero"``, what the blackbox replays) or the mean
    over its seeds (``"mean"``: curves averaged epoch by epoch). Rows without a final test Dice are left out."""
    frame = frame[pd.to_numeric(frame["final_test_dice"], errors="coerce").notna()]
    if seeds == "zero":
        return frame[frame["seed"] == 0].reset_index(drop=True)
    if seeds != "mean":
        raise ValueError(f"seeds must be 'zero' or 'mean', got {seeds!r}")
    rows = []
    for _, group in frame.groupby("arch_id", sort=False):
        row = group.iloc[0].copy()
        for name in ("val_dice", "epoch_cpu_s"):
            row[name] = list(np.mean(np.array(list(group[name]), dtype=float), axis=0))
        for name in FINALS:
            row[name] = float(group[name].astype(float).mean())
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def targets(rows: pd.DataFrame) -> tuple[np.ndarray, int]:
    """(n, 2 + 2E): final val and test Dice, val Dice at epochs 1..E, log10 CPU seconds of epochs 1..E."""
    curves = np.array(list(rows["val_dice"]), dtype=float)
    seconds = np.log10(np.clip(np.array(list(rows["epoch_cpu_s"]), dtype=float), 1e-3, None))
    finals = rows[list(FINALS)].astype(float).to_numpy()
    return np.hstack([finals, curves, seconds]), curves.shape[1]


@dataclass
class Surrogate:
    """A fitted model: ``predict(specs or frame)`` gives final Dice, the val curve and seconds per epoch."""

    model: str
    estimator: Any
    columns: list[str]
    epochs: int
    report: dict[str, Any] | None = field(default=None, repr=False)
    _rows: Any = field(default=None, init=False, repr=False, compare=False)  # nas.bench.trees.ForestRows, built once

    def predict(self, data: pd.DataFrame | Iterable[Any]) -> pd.DataFrame:
        frame = data if isinstance(data, pd.DataFrame) else spec_frame(data)
        features = encode_params(frame).reindex(columns=self.columns, fill_value=0.0)
        with threadpool_limits(THREADS):
            y = self.estimator.predict(features.to_numpy())
        return self._frame(y, frame.index)

    def predict_one(self, spec: Any, macs: float, params: float) -> dict[str, Any]:
        """``predict`` of one architecture, without building frames (a replay asks one at a time)."""
        row = encode_row(spec, macs, params)
        x = np.array([[row.get(column, 0.0) for column in self.columns]])
        y = self._predict_row(x)
        e = self.epochs
        dice = np.clip(y[:2 + e], 0.0, 1.0)
        return {"final_val_dice": float(dice[0]), "final_test_dice": float(dice[1]), "val_dice": list(dice[2:]),
                "epoch_cpu_s": list(10.0 ** y[2 + e:])}

    def _predict_row(self, x: np.ndarray) -> np.ndarray:
        """A random forest's trees descended all at once (``nas.bench.trees``): sklearn's per-call checks
        and one call per tree cost a hundred times the trees themselves for one row (the same numbers, bit
        for bit: tests/test_nasbench_load.py)."""
        forest = getattr(self.estimator, "regressor_", None)
        if not isinstance(forest, RandomForestRegressor):
            return self.estimator.predict(x)[0]
        if self._rows is None:
            from nas.bench.trees import ForestRows

            self._rows = ForestRows(forest)
        return self.estimator.transformer_.inverse_transform(self._rows.predict(x))[0]

    def _frame(self, y: np.ndarray, index: Any) -> pd.DataFrame:
        e = self.epochs
        dice = np.clip(y[:, :2 + e], 0.0, 1.0)
        seconds = 10.0 ** y[:, 2 + e:]
        return pd.DataFrame({"final_val_dice": dice[:, 0], "final_test_dice": dice[:, 1],
                             "val_dice": [list(r) for r in dice[:, 2:]],
                             "epoch_cpu_s": [list(r) for r in seconds]}, index=index)


def spec_frame(specs: Iterable[Any], image_size: int = IMAGE_SIZE, in_channels: int = IN_CHANNELS) -> pd.DataFrame:
    """Bare specs (``ResUNetSpec``, dicts or JSON) as a frame ``encode_params`` reads: MACs and parameters
    counted on the meta device at the table's input size (no training, no memory)."""
    from nas.costs.measure import count_macs, count_params
    from search_spaces import get_space

    space = get_space("resunet")
    rows = []
    for spec in specs:
        spec = spec if hasattr(spec, "to_dict") else space.spec_from_dict(spec_dict(spec))
        model = space.build_model(spec, in_channels, spec.out_channels)
        rows.append({"spec": spec.to_dict(), "macs": count_macs(model, (1, in_channels, image_size, image_size)),
                     "param_count": count_params(model)})
    return pd.DataFrame(rows)


def fit_surrogate(frame: pd.DataFrame, model: str = "auto", *, seeds: str = "zero",
                  report: dict[str, Any] | None = None, folds: int = 10, seed: int = 0) -> Surrogate:
    """Fit ``model`` (or, for ``"auto"``, the best of ``report`` or of a fresh ``cross_validate``) on every
    architecture of ``frame``."""
    if model == "auto":
        report = report or cross_validate(frame, folds=folds, seed=seed)
        model = report["best"]
    rows = architectures(frame, seeds)
    features = encode_params(rows)
    y, epochs = targets(rows)
    with threadpool_limits(THREADS):
        estimator = make_model(model, epochs, seed).fit(features.to_numpy(), y)
    return Surrogate(model, estimator, list(features.columns), epochs, report)


def _scores(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(measured) & np.isfinite(predicted)
    measured, predicted = measured[ok], predicted[ok]
    if len(measured) < 3:
        return {"kendall_tau": float("nan"), "r2": float("nan"), "mae": float("nan"), "n": int(len(measured))}
    tau = kendalltau(measured, predicted).statistic
    return {"kendall_tau": float(tau), "r2": float(r2_score(measured, predicted)),
            "mae": float(np.mean(np.abs(measured - predicted))), "n": int(len(measured))}


def target_views(y: np.ndarray, epochs: int, rungs: Sequence[int] = RUNGS) -> dict[str, np.ndarray]:
    """The reported targets out of a target matrix: finals, val Dice at each rung, mean log10 seconds per
    epoch; ``val_dice_curve`` is every (architecture, epoch) pair pooled."""
    views = {"final_val_dice": y[:, 0], "final_test_dice": y[:, 1]}
    views.update({f"val_dice@{r}": y[:, 1 + r] for r in rungs if r <= epochs})
    views["log10_epoch_cpu_s"] = np.log10(np.mean(10.0 ** y[:, 2 + epochs:], axis=1))
    views["val_dice_curve"] = y[:, 2:2 + epochs].ravel()
    return views


def noise_floor(frame: pd.DataFrame, rungs: Sequence[int] = RUNGS) -> dict[str, Any]:
    """Seed 0 as a "prediction" of seeds 1 and 2 of the same architectures: Kendall tau and R² per target,
    the mean over the two seeds (how far a number moves by the training seed alone)."""
    frame = frame[pd.to_numeric(frame["final_test_dice"], errors="coerce").notna()]
    zero = frame[frame["seed"] == 0].set_index("arch_id")
    out: dict[str, Any] = {"n_architectures": 0}
    per_seed = []
    for other in sorted(set(frame["seed"]) - {0}):
        rows = frame[frame["seed"] == other].set_index("arch_id")
        common = [a for a in rows.index if a in zero.index]
        if len(common) < 3:
            continue
        out["n_architectures"] = max(out["n_architectures"], len(common))
        y0, epochs = targets(zero.loc[common].reset_index())
        yk, _ = targets(rows.loc[common].reset_index())
        v0, vk = target_views(y0, epochs, rungs), target_views(yk, epochs, rungs)
        per_seed.append({name: _scores(vk[name], v0[name]) for name in v0})
    for name in (per_seed[0] if per_seed else {}):
        out[name] = {key: float(np.mean([s[name][key] for s in per_seed])) for key in ("kendall_tau", "r2", "mae")}
    others = frame[frame["seed"] != 0].groupby("arch_id")["final_test_dice"].mean()
    common = [a for a in others.index if a in zero.index]
    if len(common) >= 3:  # the ceiling of a perfect predictor of the mean, scored against one seed's run
        out["final_test_dice_ceiling"] = _scores(zero.loc[common, "final_test_dice"].astype(float).to_numpy(),
                                                 others.loc[common].astype(float).to_numpy())
    out["seeds_compared"] = len(per_seed)
    return out


def cross_validate(frame: pd.DataFrame, folds: int = 10, seed: int = 0, models: Sequence[str] = MODELS,
                   rungs: Sequence[int] = RUNGS) -> dict[str, Any]:
    """k-fold over architectures (seed-0 runs): per model and target, Kendall tau, R² and MAE of the pooled
    out-of-fold predictions, the same on the 3-seed architectures alone (``*_noise_set``, comparable with
    the noise floor), the noise floor, and ``best`` (tau on final test Dice, ties within 0.001: R²)."""
    rows = architectures(frame, "zero")
    features = encode_params(rows).to_numpy()
    y, epochs = targets(rows)
    if len(rows) < 4:
        raise ValueError(f"cross_validate needs at least 4 architectures with seed-0 rows, got {len(rows)}")
    splits = list(KFold(min(folds, len(rows)), shuffle=True, random_state=seed).split(features))
    multi = set(frame.loc[frame["seed"] != 0, "arch_id"])
    noise_set = rows["arch_id"].isin(multi).to_numpy()
    seed_mean = frame.groupby("arch_id")["final_test_dice"].mean()  # the noise set's less noisy target
    measured = target_views(y, epochs, rungs)
    report: dict[str, Any] = {
        "n_architectures": int(len(rows)), "by_kind": {str(k): int(v) for k, v in rows["kind"].value_counts().items()}
        if "kind" in rows else {}, "folds": len(splits), "seed": seed, "epochs": epochs,
        "rungs": [r for r in rungs if r <= epochs], "features": int(features.shape[1]), "models": {},
        "fit_seconds": {}}
    for name in models:
        started = time.process_time()
        predicted = np.full_like(y, np.nan)
        with threadpool_limits(THREADS):
            for train, test in splits:
                predicted[test] = make_model(name, epochs, seed).fit(features[train], y[train]).predict(features[test])
        report["fit_seconds"][name] = round(time.process_time() - started, 2)
        views = target_views(predicted, epochs, rungs)
        scores = {target: _scores(measured[target], views[target]) for target in measured}
        for target in measured:
            if target != "val_dice_curve":
                subset = _scores(measured[target][noise_set], views[target][noise_set])
                scores[target].update({"kendall_tau_noise_set": subset["kendall_tau"], "r2_noise_set": subset["r2"]})
        if noise_set.sum() >= 3:
            mean = seed_mean.loc[rows.loc[noise_set, "arch_id"]].astype(float).to_numpy()
            scores["final_test_dice"]["kendall_tau_vs_seed_mean"] = _scores(mean, views["final_test_dice"][noise_set])[
                "kendall_tau"]
        report["models"][name] = scores
    coder = TargetCoder(epochs).fit(y)
    coded = coder.inverse_transform(coder.transform(y))[:, 2 + epochs:]
    report["seconds_coding_r2"] = _scores(y[:, 2 + epochs:].ravel(), coded.ravel())["r2"]  # per epoch, log10
    report["noise_floor"] = noise_floor(frame, rungs)
    report["best"] = best_model(report)
    return report


def best_model(report: dict[str, Any], target: str = "final_test_dice") -> str:
    """Highest Kendall tau on ``target``; within 0.001 of it, the highest R²."""
    def score(name: str, key: str) -> float:
        value = report["models"][name][target][key]
        return value if np.isfinite(value) else -np.inf

    names = list(report["models"])
    top = max(score(name, "kendall_tau") for name in names)
    close = [name for name in names if score(name, "kendall_tau") >= top - 1e-3]
    return max(close, key=lambda name: score(name, "r2"))


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table: tau / R² per target and model, the noise floor beside them."""
    models = list(report["models"])
    noise = report["noise_floor"]
    head = ["target", f"noise floor (n={noise['n_architectures']})", *(
        f"{m}{' (best)' if m == report['best'] else ''}" for m in models)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(scores: dict[str, Any] | None) -> str:
        if not scores:
            return "-"
        return f"{scores['kendall_tau']:.3f} / {scores['r2']:.3f}"

    for target in report["models"][models[0]]:
        lines.append("| " + " | ".join([target, cell(noise.get(target)),
                                         *(cell(report["models"][m][target]) for m in models)]) + " |")
    lines.append("")
    lines.append(f"Kendall tau / R² of out-of-fold predictions, {report['folds']}-fold over "
                 f"{report['n_architectures']} architectures (seed-0 runs; {report['by_kind']}); seconds in "
                 f"log10. Noise floor: seed 0 vs seeds 1, 2 of the same architectures. Fit CPU seconds: "
                 f"{report['fit_seconds']}.")
    noise_row = [f"{m} {report['models'][m]['final_test_dice'].get('kendall_tau_noise_set', float('nan')):.3f}"
                 for m in models]
    lines.append(f"Final test Dice tau on the noise-floor architectures only: {', '.join(noise_row)}.")
    ceiling = noise.get("final_test_dice_ceiling")
    if ceiling:
        versus = [f"{m} {report['models'][m]['final_test_dice'].get('kendall_tau_vs_seed_mean', float('nan')):.3f}"
                  for m in models]
        lines.append(f"Against the mean over seeds of those architectures (a less noisy target): {', '.join(versus)}; "
                     f"the mean of seeds 1, 2 as a predictor of seed 0 (the ceiling a one-seed target leaves any "
                     f"predictor of the mean): tau {ceiling['kendall_tau']:.3f}.")
    lines.append(f"R² of the seconds coding alone (a run's mean and one shared epoch profile) on every "
                 f"epoch's log10 seconds: {report['seconds_coding_r2']:.4f}.")
    return "\n".join(lines)
