"""The statistics of the finalist stage, on plain numbers: seed spread, bootstrap intervals, the rank
correlation between search and final Dice, and one verdict per baseline.

No torch, no Optuna: ``nas.stages.finalist_training`` hands in Dice per (seed, test image) and costs; the
report renders what comes out. Intervals are percentile bootstraps that resample the test images
and the seeds together (a replicate draws images with replacement, and seeds with replacement, then
averages), so they hold both sources of doubt: which images were tested and how training fell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

BOOTSTRAP = 2000  # replicates
LEVEL = 0.95
MARGIN = 0.01  # a finalist "matches" a baseline when its Dice is at most this much worse (95 % CI bound)

Scores = Sequence[Sequence[float]]  # [seed][image] Dice, the same images in the same order for every seed


def seed_means(scores: Scores) -> list[float]:
    """Mean Dice over the images, per seed."""
    return [float(np.mean(row)) for row in scores]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _replicates(scores: Scores, rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Per replicate, the mean over resampled seeds of the mean over ``images`` (B, n) indices."""
    table = np.asarray(scores, dtype=float)  # (S, N)
    seeds = rng.integers(0, table.shape[0], (images.shape[0], table.shape[0]))  # (B, S)
    picked = table[seeds[:, :, None], images[:, None, :]]  # (B, S, n)
    return picked.mean(axis=(1, 2))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(scores: Scores, *, replicates: int = BOOTSTRAP, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """The ``level`` interval of the seed-mean Dice, resampling test images and seeds."""
    table = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, table.shape[1], (replicates, table.shape[1]))
    return _interval(_replicates(table, rng, images), level)


def difference_ci(first: Scores, second: Scores, *, replicates: int = BOOTSTRAP, level: float = LEVEL,
                  seed: int = 0) -> tuple[float, float]:
    """The interval of Dice(first) - Dice(second) on the same test images (paired: one image draw
    for both), each model's seeds resampled on their own."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired scores need the same images: {a.shape[1]} vs {b.shape[1]}")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, a.shape[1], (replicates, a.shape[1]))
    return _interval(_replicates(a, rng, images) - _replicates(b, rng, images), level)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties counted as in scipy); None for fewer than 2 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError("kendall_tau needs two sequences of the same length")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    n0 = concordant + discordant
    denominator = math.sqrt((n0 + ties_x) * (n0 + ties_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


@dataclass(frozen=True)
class Contender:
    """A finalist or baseline after the final training: its Dice and what it costs."""

    name: str
    dice: float  # mean over seeds of the mean test Dice
    macs: float | None = None
    latency_ms: float | None = None
    params: float | None = None

    def cost_key(self) -> tuple[float, float, float]:
        """Cheapest first: MACs, then latency, then parameters (unknown costs last)."""
        return tuple(math.inf if v is None else float(v) for v in (self.macs, self.latency_ms, self.params))


@dataclass(frozen=True)
class Verdict:
    baseline: str
    finalist: str | None  # the cheapest finalist not worse than the baseline; None: no finalist matches
    difference: tuple[float, float] | None  # its (finalist - baseline) Dice interval
    savings: dict[str, float]  # cost -> baseline / finalist ratio (x times cheaper)
    text: str


def _ratio(baseline: float | None, finalist: float | None) -> float | None:
    if baseline is None or finalist is None or finalist <= 0:
        return None
    return float(baseline) / float(finalist)


_WORDS = {"macs": ("fewer", "more", "MACs"), "latency": ("lower", "higher", "latency"),
          "params": ("fewer", "more", "parameters")}


def _saving(ratio: float, better: str, worse: str, what: str) -> str:
    return f"{ratio:.1f}x {better} {what}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse} {what}"


def verdict(baseline: Contender, finalists: Sequence[Contender],
            differences: dict[str, tuple[float, float]], margin: float = MARGIN) -> Verdict:
    """The cheapest finalist whose Dice is not worse than ``baseline``'s: the lower end of the 95 %
    interval of (finalist - baseline) Dice is at least ``-margin``. ``differences`` maps finalist
    name -> that interval. Otherwise "no finalist matches", naming the closest one."""
    matching = [f for f in finalists if f.name in differences and differences[f.name][0] >= -margin]
    if not matching:
        scored = [f for f in finalists if f.name in differences]
        text = f"no finalist matches {baseline.name} (Dice {baseline.dice:.3f})"
        if scored:
            close = max(scored, key=lambda f: differences[f.name][0])
            low, high = differences[close.name]
            text += (f"; closest: {close.name}, Dice difference [{low:+.3f}, {high:+.3f}] (95 % CI; a match "
                     f"needs the lower end at or above -{margin:g})")
        return Verdict(baseline.name, None, None, {}, text)
    best = min(matching, key=Contender.cost_key)
    savings = {name: ratio for name, ratio in (
        ("macs", _ratio(baseline.macs, best.macs)), ("latency", _ratio(baseline.latency_ms, best.latency_ms)),
        ("params", _ratio(baseline.params, best.params))) if ratio is not None}
    low, high = differences[best.name]
    said = ", ".join(_saving(savings[key], *words) for key, words in _WORDS.items() if key in savings)
    text = (f"{best.name} matches {baseline.name}: Dice {best.dice:.3f} vs {baseline.dice:.3f}, difference "
            f"[{low:+.3f}, {high:+.3f}] (95 % CI, not below -{margin:g})" + (f"; {said}" if said else ""))
    return Verdict(baseline.name, best.name, (low, high), savings, text)
