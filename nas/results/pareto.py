"""Pareto fronts over trial records, as plain data.

Kept free of any plotting so the maths is tested without a canvas ("info, then render"): the
HTML report and the static figures only draw what :func:`pareto_front` decides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from nas.results.records import MEASURES, TrialRecord, is_measure

DIRECTIONS = ("maximize", "minimize")
_CHUNK_CELLS = 4_000_000  # bounds the (rows x n x k) comparison block, so memory stays ~tens of MB


@dataclass(frozen=True)
class Objective:
    """One axis of the front: a numeric ``TrialRecord`` measure (``MEASURES`` or ``dice:<class name>``)
    and whether more is better."""

    name: str  # e.g. "dice", "miou", "dice_small", "hd95", "dice:vessel", "macs", "latency_ms", "params"
    direction: str  # "maximize" | "minimize"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not is_measure(self.name):
            raise ValueError(f"{self.name!r} is not a TrialRecord measure; known: {', '.join(MEASURES)}, dice:<class>")


DICE_MACS = (Objective("dice", "maximize"), Objective("macs", "minimize"))
DICE_LATENCY = (Objective("dice", "maximize"), Objective("latency_ms", "minimize"))
DICE_PARAMS = (Objective("dice", "maximize"), Objective("params", "minimize"))


@dataclass(frozen=True)
class ParetoFront:
    objectives: tuple[Objective, ...]
    front: tuple[TrialRecord, ...]  # non-dominated finished records, sorted by the 2nd objective ascending
    dominated: tuple[TrialRecord, ...]  # finished but dominated, by trial number
    unfinished: tuple[TrialRecord, ...]  # not COMPLETE, or missing (None/NaN) an objective value; by number

    @property
    def finished(self) -> tuple[TrialRecord, ...]:
        return self.front + self.dominated

    @property
    def records(self) -> tuple[TrialRecord, ...]:
        return self.front + self.dominated + self.unfinished

    @property
    def numbers(self) -> frozenset[int]:
        """Trial numbers on the front, for "is this row Pareto?" look-ups."""
        return frozenset(r.number for r in self.front)


def _check_directions(directions: Sequence[str]) -> None:
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {d!r}")


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is no worse than ``b`` on every objective and strictly better on one.

    Equal points do not dominate each other; a NaN compares false, so it neither dominates nor is
    dominated (``pareto_front`` filters NaNs out before it gets here).
    """
    if not len(a) == len(b) == len(directions):
        raise ValueError("a, b and directions must have the same length")
    _check_directions(directions)
    strictly_better = False
    for x, y, d in zip(a, b, directions):
        better, worse = (x > y, x < y) if d == "maximize" else (x < y, x > y)
        if worse or not (better or x == y):
            return False
        strictly_better |= better
    return strictly_better


def _value(record: TrialRecord, name: str) -> float | None:
    raw = record.measure(name)
    if raw is None:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def _dominated_mask(costs: np.ndarray) -> np.ndarray:
    """``mask[i]`` is True when some row dominates row ``i``; every column is "lower is better"."""
    n, k = costs.shape
    mask = np.zeros(n, dtype=bool)
    step = max(1, _CHUNK_CELLS // max(1, n * k))
    for start in range(0, n, step):
        block = costs[start:start + step, None, :]  # candidates i
        others = costs[None, :, :]  # possible dominators j
        no_worse = (others <= block).all(axis=2)
        better = (others < block).any(axis=2)
        mask[start:start + step] = (no_worse & better).any(axis=1)
    return mask


def pareto_front(records: Iterable[TrialRecord], objectives: Sequence[Objective]) -> ParetoFront:
    """Split records into front / dominated / unfinished.

    Only ``state == "COMPLETE"`` records with a finite-or-inf (not None, not NaN) value for every
    objective compete. Exact duplicates in objective space both stay on the front. Vectorised
    O(n^2 k) comparison: 2,000 records take milliseconds.
    """
    objectives = tuple(objectives)
    if not objectives:
        raise ValueError("need at least one objective")
    finished: list[TrialRecord] = []
    values: list[list[float]] = []
    unfinished: list[TrialRecord] = []
    for record in records:
        row = [_value(record, o.name) for o in objectives] if record.state == "COMPLETE" else [None]
        if any(v is None for v in row):
            unfinished.append(record)
        else:
            finished.append(record)
            values.append(row)

    signs = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objectives])
    costs = np.asarray(values, dtype=float).reshape(len(finished), len(objectives)) * signs
    mask = _dominated_mask(costs)

    sort_axis = 1 if len(objectives) > 1 else 0
    order = [sort_axis] + [i for i in range(len(objectives)) if i != sort_axis]
    front_idx = sorted(
        np.flatnonzero(~mask).tolist(),
        key=lambda i: (*(values[i][j] for j in order), finished[i].number),
    )
    by_number = lambda r: r.number  # noqa: E731
    return ParetoFront(
        objectives=objectives,
        front=tuple(finished[i] for i in front_idx),
        dominated=tuple(sorted((finished[i] for i in np.flatnonzero(mask).tolist()), key=by_number)),
        unfinished=tuple(sorted(unfinished, key=by_number)),
    )


def nondominated_ranks(costs: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting (every column lower-is-better): 0 for the front, 1 for the front of the
    rest, ...; equal rows share a rank. What MO-ASHA ranks trials by at a rung (once per trial and rung:
    the dominance matrix is built once and the fronts peeled off it, O(n^2) instead of O(fronts x n^2))."""
    left = np.asarray(costs, dtype=float)
    if not len(left) or len(left) > _MATRIX_ROWS:
        return _ranks_by_peeling(left)
    dominates = dominance_matrix(left.reshape(len(left), -1))
    beaten_by = dominates.sum(axis=0)  # [i]: how many rows still in play dominate row i
    ranks, todo, rank = np.zeros(len(left), dtype=int), np.ones(len(left), dtype=bool), 0
    while todo.any():
        front = todo & (beaten_by == 0)
        ranks[front] = rank
        todo &= ~front
        beaten_by -= dominates[front].sum(axis=0)
        rank += 1
    return ranks.tolist()


def dominance_matrix(costs: np.ndarray) -> np.ndarray:
    """``[i, j]``: row i dominates row j (no column worse, one better; lower is better, NaN never
    compares), built column by column: numpy's reduce over a 2- or 3-long axis costs more than the
    comparisons."""
    no_worse = np.ones((len(costs), len(costs)), dtype=bool)
    better = np.zeros((len(costs), len(costs)), dtype=bool)
    for column in costs.T:
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    return no_worse & better


_MATRIX_ROWS = 3000  # above this the n x n matrix is peeled front by front in chunks instead


def _ranks_by_peeling(left: np.ndarray) -> list[int]:
    """``nondominated_ranks`` one front at a time, memory O(n) (for very many rows)."""
    ranks, todo, rank = [0] * len(left), np.arange(len(left)), 0
    left = left.reshape(len(left), -1) if len(left) else left
    while todo.size:
        dominated = _dominated_mask(left[todo])
        for i in todo[~dominated]:
            ranks[int(i)] = rank
        todo, rank = todo[dominated], rank + 1
    return ranks
