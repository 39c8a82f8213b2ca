"""One row through a fitted tree ensemble, all trees at once: the replay's numbers at a fraction of the cost.

A replay asks the cost model (a histogram gradient boosting, 300 trees per target) and the surrogate (a random
forest of 300 trees) about one proposal at a time; sklearn then walks the trees one Python call each, ten
milliseconds per proposal, a sixth of a replay. Here every tree is one slice of a stacked node table and the
row descends all of them together, one numpy step per level. The leaves reached are the ones sklearn's own
descent reaches (the same comparisons: ``x <= threshold`` in the dtype sklearn compares in, NaN to the side
sklearn sends it), and the leaf values are combined exactly as sklearn combines them (the boosting's
left-to-right sum from its baseline; the forest's ``np.mean`` over the same stacked array), so the numbers are
bit for bit sklearn's (tests/test_nasbench_load.py). Anything this does not cover (categorical splits,
another loss) returns None from ``boosted_rows``, and the caller keeps sklearn's path.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class _Stacked:
    """Trees as one node table; a leaf points to itself, so ``depth`` steps end every descent."""

    def __init__(self, trees: Sequence[tuple[np.ndarray, ...]]) -> None:
        features, thresholds, lefts, rights, nan_left, values, roots = [], [], [], [], [], [], []
        offset = depth = 0
        for feature, threshold, left, right, missing_left, value, leaf, tree_depth in trees:
            own = np.arange(len(feature)) + offset
            features.append(np.where(leaf, 0, feature).astype(np.intp))
            thresholds.append(np.asarray(threshold, dtype=np.float64))
            lefts.append(np.where(leaf, own, np.asarray(left, dtype=np.intp) + offset))
            rights.append(np.where(leaf, own, np.asarray(right, dtype=np.intp) + offset))
            nan_left.append(np.asarray(missing_left, dtype=bool))
            values.append(value)
            roots.append(offset)
            offset += len(feature)
            depth = max(depth, int(tree_depth))
        self.feature, self.threshold = np.concatenate(features), np.concatenate(thresholds)
        self.left, self.right, self.nan_left = np.concatenate(lefts), np.concatenate(rights), np.concatenate(nan_left)
        self.values, self.roots, self.depth = np.concatenate(values), np.asarray(roots, dtype=np.intp), depth

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf each tree sends ``x`` (one row, already in the dtype the trees compare in) to."""
        node = self.roots
        nan = bool(np.isnan(x).any())
        for _ in range(self.depth):
            value = x[self.feature[node]]
            left = value <= self.threshold[node]
            if nan:
                left = np.where(np.isnan(value), self.nan_left[node], left)
            node = np.where(left, self.left[node], self.right[node])
        return node


class ForestRows:
    """``np.mean([tree.tree_.predict(x) ...], axis=0)`` of a fitted ``RandomForestRegressor``, for one row."""

    def __init__(self, forest: Any) -> None:
        trees = []
        for estimator in forest.estimators_:
            t = estimator.tree_
            leaf = t.children_left == -1
            trees.append((t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left, t.value,
                          leaf, t.max_depth))
        self.stacked = _Stacked(trees)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``x``: shape (1, features); float32 as sklearn's trees read it, compared as float64 as they do."""
        row = np.asarray(x, dtype=np.float32)[0].astype(np.float64)
        per_tree = self.stacked.values[self.stacked.leaves(row)]  # (trees, outputs, 1): tree_.predict's rows
        return np.mean(per_tree[:, None], axis=0).reshape(1, -1)


class BoostedRows:
    """``predict`` of a fitted squared-error ``HistGradientBoostingRegressor`` without categorical splits."""

    def __init__(self, model: Any) -> None:
        trees = []
        for iteration in model._predictors:
            (predictor,) = iteration
            n = predictor.nodes
            trees.append((n["feature_idx"], n["num_threshold"], n["left"], n["right"], n["missing_go_to_left"],
                          n["value"], n["is_leaf"].astype(bool), n["depth"].max()))
        self.stacked = _Stacked(trees)
        self.baseline = float(np.asarray(model._baseline_prediction).ravel()[0])

    def predict(self, x: np.ndarray) -> np.float64:
        """``model.predict(x)[0]``: the baseline plus every tree's leaf, added in sklearn's order."""
        total = self.baseline
        for value in self.stacked.values[self.stacked.leaves(np.asarray(x, dtype=np.float64)[0])].tolist():
            total += value
        return np.float64(total)


def boosted_rows(model: Any) -> BoostedRows | None:
    """The fast path for ``model``, or None where it would not be sklearn's numbers exactly."""
    predictors = getattr(model, "_predictors", None)
    if not predictors or getattr(model, "loss", None) != "squared_error" or \
            getattr(model, "is_categorical_", None) is not None or any(len(p) != 1 for p in predictors) or \
            any(p[0].nodes["is_categorical"].any() for p in predictors):
        return None
    return BoostedRows(model)
