"""Exact 2-objective hypervolume of the (Dice, log10 MACs) front and how it grows with compute.

Pure data, no plotting: the report draws what :func:`hypervolume_over_compute` returns. The unit is
"Dice x decades of MACs": the area between the front and the fixed reference point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind

# Dice 0 and 10^11 MACs (100 GMAC): worse than any useful model, fixed so runs compare.
REFERENCE = (0.0, 11.0)


def hypervolume_2d(points: Iterable[Sequence[float]], reference: Sequence[float] = REFERENCE) -> float:
    """Area dominated by ``(dice, log10_macs)`` points (maximize dice, minimize log MACs) up to ``reference``.

    Points no better than the reference on both axes add nothing; dominated points and duplicates
    are harmless (sweep in ascending cost keeping the best Dice so far).
    """
    ref_dice, ref_cost = float(reference[0]), float(reference[1])
    inside = sorted((float(c), float(d)) for d, c in points
                    if not (math.isnan(d) or math.isnan(c)) and d > ref_dice and c < ref_cost)
    area, best = 0.0, ref_dice
    for cost, dice in inside:
        if dice > best:
            area += (ref_cost - cost) * (dice - best)
            best = dice
    return area


@dataclass(frozen=True)
class HypervolumePoint:
    number: int  # the trial that just finished
    seconds: float  # cumulative device seconds of every trial up to and including this one
    hypervolume: float


def _nondominated(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    keep = []
    for d, c in sorted(points, key=lambda p: (p[1], -p[0])):
        if not keep or d > keep[-1][0]:
            keep.append((d, c))
    return keep


def hypervolume_over_compute(records: Iterable[TrialRecord],
                             reference: Sequence[float] = REFERENCE) -> list[HypervolumePoint]:
    """One point per finished search trial, in trial-number order.

    Seconds accumulate over every trial (failed and pruned ones cost time too); compressed models and
    presets are not search trials and are left out. The front is kept incrementally, so 1,000 trials
    take milliseconds.
    """
    out: list[HypervolumePoint] = []
    front: list[tuple[float, float]] = []
    total = 0.0
    for record in sorted(records, key=lambda r: r.number):
        if record.kind != RecordKind.SEARCH:
            continue
        if record.seconds is not None and not math.isnan(record.seconds):
            total += float(record.seconds)
        if not record.finished or record.macs is None or record.macs <= 0 or math.isnan(record.dice):
            continue
        front = _nondominated(front + [(float(record.dice), math.log10(record.macs))])
        out.append(HypervolumePoint(record.number, total, hypervolume_2d(front, reference)))
    return out
