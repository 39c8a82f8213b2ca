"""Hypervolume and compute-to-target: plain records in, numbers out (tests/test_search_vs_family.py)."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from .arms import VARIANTS


@dataclass(frozen=True)
class Step:
    """One study trial in run order: what it cost and the point it added (None: no finished model)."""

    number: int
    seconds: float
    epochs: int
    point: tuple[float, float] | None  # (1 - Dice, log10 MACs), minimised
    family: bool


def steps(records: Iterable[Any]) -> list[Step]:
    """The study's trials (warm-start family ones included; baselines and presets left out), in trial order."""
    from nas.results.family_records import family_name
    from nas.results.trial_result import RecordKind

    out = []
    for record in sorted((r for r in records if r.kind == RecordKind.SEARCH), key=lambda r: r.number):
        ok = record.finished and record.macs and record.dice is not None and math.isfinite(record.dice)
        out.append(Step(record.number, float(record.seconds or 0.0), len(record.epoch_dice),
                        (1.0 - record.dice, math.log10(record.macs)) if ok else None, family_name(record) is not None))
    return out


def family_points(records: Iterable[Any]) -> list[tuple[float, float]]:
    """The family front's points: every finished family member (warm-start trials and family baselines)."""
    from nas.results.family_records import family_records

    return [(1.0 - r.dice, math.log10(r.macs)) for r in family_records(records) if r.finished and r.macs]


def test_points(records: Iterable[Any]) -> list[tuple[float, float]]:
    """The front the run selects (validation Dice vs MACs, ``nas.results.pareto``), scored on the test
    split each trial was evaluated on: (1 - test Dice, log10 MACs). A model is claimed on test."""
    from nas.results.pareto import DICE_MACS, pareto_front

    out = []
    for record in pareto_front(list(records), DICE_MACS).front:
        test = ((record.result.quality.splits or {}).get("test") or {}).get("dice")
        if test is not None and math.isfinite(test) and record.macs:
            out.append((1.0 - float(test), math.log10(record.macs)))
    return out


def hypervolume(points: Sequence[tuple[float, float]], reference: Sequence[float]) -> float:
    """moocore's hypervolume of minimisation points; points not strictly better than ``reference`` add nothing."""
    import moocore
    import numpy as np

    inside = [p for p in points if all(v < r for v, r in zip(p, reference))]
    return float(moocore.hypervolume(np.array(inside), ref=np.array(reference))) if inside else 0.0


def reach(trials: Sequence[Step], target: float, reference: Sequence[float], *, searched_only: bool = False,
          volume: Callable[[Sequence[tuple[float, float]], Sequence[float]], float] = hypervolume) -> dict[str, Any]:
    """Compute until the running front's hypervolume first reaches ``target``: seconds, epochs and trials
    summed in trial order (every trial counts); ``searched_only`` leaves the family trials' points out.
    ``reached`` False: the totals are what the whole run spent (a lower bound)."""
    seconds = epochs = 0.0
    points: list[tuple[float, float]] = []
    for count, step in enumerate(trials, start=1):
        seconds, epochs = seconds + step.seconds, epochs + step.epochs
        if step.point is not None and not (searched_only and step.family):
            points.append(step.point)
            if target > 0 and volume(points, reference) >= target * (1 - 1e-9):
                return {"reached": True, "seconds": seconds, "epochs": int(epochs), "trials": count}
    return {"reached": False, "seconds": seconds, "epochs": int(epochs), "trials": len(trials)}


def seed_result(records: dict[str, list[Any]], reference: Sequence[float]) -> dict[str, Any]:
    """One seed: every arm's hypervolume (validation, what the search saw; and its validation-selected
    front on test), and the compute (a), (b), (d) need to reach the family's."""
    from nas.results.family_records import family_name, family_records
    from nas.results.trial_result import RecordKind

    engine = steps(records["engine"])
    family = family_points(records["engine"])
    target = hypervolume(family, reference)
    fronts = {"engine (all trials)": [s.point for s in engine if s.point],
              "engine searched": [s.point for s in engine if s.point and not s.family],
              "family": family}
    for arm in ("random", "moasha"):  # --arms may leave either out
        if arm in records:
            fronts[arm] = [s.point for s in steps(records[arm]) if s.point]
    variants = {arm: steps(records[arm]) for arm in VARIANTS if arm in records}
    for arm, trials in variants.items():  # (a) with one default changed: read like (a)
        fronts[f"{arm} (all trials)"] = [s.point for s in trials if s.point]
        fronts[f"{arm} searched"] = [s.point for s in trials if s.point and not s.family]
    searched = [r for r in records["engine"] if r.kind == RecordKind.SEARCH]
    tested = {"engine (all trials)": searched, "engine searched": [r for r in searched if family_name(r) is None],
              "family": family_records(records["engine"]), **{arm: records[arm] for arm in ("random", "moasha")
                                                               if arm in records}}
    row = {"hypervolume": {arm: hypervolume(points, reference) for arm, points in fronts.items()},
           "test_hypervolume": {arm: hypervolume(test_points(chosen), reference) for arm, chosen in tested.items()},
           "trials": {arm: len(points) for arm, points in fronts.items()}, "family_members": len(family)}
    row["reach"] = {"engine searched": reach(engine, target, reference, searched_only=True),
                    "engine (all trials)": reach(engine, target, reference)}
    for arm, trials in variants.items():
        row["reach"][f"{arm} searched"] = reach(trials, target, reference, searched_only=True)
    for arm in ("random", "moasha"):
        if arm in records:
            row["reach"][arm] = reach(steps(records[arm]), target, reference)
    return row


def median_reach(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median over seeds, a seed that never reached counting as infinite: None when the median is 'not reached'."""
    medians = {key: statistics.median(r[key] if r["reached"] else math.inf for r in rows) for key in ("seconds", "epochs")}
    return {**{k: v if math.isfinite(v) else None for k, v in medians.items()},
            "reached": sum(r["reached"] for r in rows), "seeds": len(rows),
            "spent_when_not_reached": [r["seconds"] for r in rows if not r["reached"]]}


def dataset_summary(seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    arms = [arm for arm in seeds[0]["hypervolume"] if all(arm in s["hypervolume"] for s in seeds)]
    spread = [(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
              for v in ([s["hypervolume"][arm] for s in seeds] for arm in arms)]
    tested = [arm for arm in seeds[0].get("test_hypervolume", {}) if all(arm in s["test_hypervolume"] for s in seeds)]
    test_spread = [(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                   for v in ([s["test_hypervolume"][arm] for s in seeds] for arm in tested)]
    out = {"hypervolume": dict(zip(arms, spread)), "test_hypervolume": dict(zip(tested, test_spread)),
           "reach": {arm: median_reach([s["reach"][arm] for s in seeds]) for arm in seeds[0]["reach"]
                     if all(arm in s["reach"] for s in seeds)}}
    searched = [s["hypervolume"]["engine searched"] for s in seeds]
    family = [s["hypervolume"]["family"] for s in seeds]
    out["searched_beats_family_every_seed"] = all(a > b for a, b in zip(searched, family))
    finals = [s["finalize"] for s in seeds if "finalize" in s]
    measured = finals and all(f["dominating"] is not None for f in finals)
    out["finalist_pairs"] = [p for f in finals for p in f["dominating"]] if measured else None
    return out


