"""Early stopping that works with several objectives: the rules a rung applies.

Optuna cannot prune multi-objective studies and Ray's schedulers rank one metric. Our costs
(MACs, params, latency, memory) are known before training, so at a rung (an epoch, by default
1, 3, 9, ...) a trial's best validation Dice so far is compared with the other trials' at the
same rung. Two rules (``--early-stop``):

- ``halving`` (cost-conditioned successive halving): only peers that cost no more than the trial
  on every cost objective count; if enough of them had a better Dice, the trial cannot reach the
  front through them. "Enough" follows successive halving with reduction factor ``eta``: among
  the ``n`` cheaper-or-equal peers plus the trial, it must rank in the top ``ceil((n + 1) / eta)``.
  Cheap trials (few cheaper peers) always finish: they are the front's low-cost end.
- ``moasha`` (MO-ASHA, Schmucker et al. 2021, as in Syne Tune's ``MOASHA``): all peers at the rung
  and the trial are ranked by non-dominated sorting over (Dice, costs); the trial stops when more
  than ``1 / eta`` of them lie on better fronts (ties share a front, so they never stop each other).

Either way no decision is made before ``min_peers`` peers exist. Rungs later than epoch 1 (where
Dice is mostly noise) are one flag away (``--early-stop-rungs``); ``benchmarks/early_stopping.py``
measured which rule and rungs to default to.

No Optuna here: peers arrive as ``RungPoint`` values; the adapter reads them from the storage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from nas.results.pareto import nondominated_ranks

RULES = ("halving", "moasha", "none")  # --early-stop

class EarlyStopped(Exception):
    """Raised from the epoch callback: the trial is dominated at a rung. ``str()`` is the reason."""

    def __init__(self, reason: str, epoch: int) -> None:
        super().__init__(reason)
        self.epoch = epoch


@dataclass(frozen=True)
class RungPolicy:
    rungs: tuple[int, ...]  # epochs after which a decision is made
    eta: int = 3
    min_peers: int = 3
    rule: str = "halving"  # or "moasha" (RULES less "none", which is no policy at all)

    def __post_init__(self) -> None:
        if self.eta < 2 or self.min_peers < 1 or any(r < 1 for r in self.rungs) or self.rule not in RULES[:2]:
            raise ValueError(f"bad early-stopping policy {self}")

    @classmethod
    def for_epochs(cls, epochs: int, eta: int = 3, min_peers: int = 3, rule: str = "halving",
                   first: int = 1) -> "RungPolicy":
        """Rungs first, first*eta, first*eta^2, ... below ``epochs`` (a rung at the last epoch saves nothing)."""
        rungs, rung = [], first
        while rung < epochs:
            rungs.append(rung)
            rung *= eta
        return cls(tuple(rungs), eta, min_peers, rule)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "rungs": list(self.rungs), "eta": self.eta, "min_peers": self.min_peers}


def rungs_problem(rungs: Sequence[int], epochs: int) -> str | None:
    """Why ``--early-stop-rungs`` cannot be used with ``--epochs``, or None."""
    if list(rungs) != sorted(set(rungs)) or any(r < 1 for r in rungs):
        return f"must be increasing epochs >= 1, got {','.join(map(str, rungs))}"
    late = [r for r in rungs if r >= epochs]
    if late:
        return f"{late[0]} is not below --epochs {epochs} (a rung at the last epoch saves nothing)"
    return None


def early_stop_policy(rule: str, epochs: int, rungs: Sequence[int] = ()) -> RungPolicy | None:
    """The search's policy from ``--early-stop`` and ``--early-stop-rungs`` (empty: 1, 3, 9, ... below
    ``epochs``); None for ``none``."""
    if rule not in RULES:
        raise ValueError(f"unknown early-stopping rule {rule!r}; known: {', '.join(RULES)}")
    if rule == "none":
        return None
    problem = rungs_problem(rungs, epochs)
    if problem:
        raise ValueError(f"--early-stop-rungs {problem}")
    return RungPolicy(tuple(rungs), rule=rule) if rungs else RungPolicy.for_epochs(epochs, rule=rule)


@dataclass(frozen=True)
class RungPoint:
    """Another trial at the rung: its best validation Dice up to the rung epoch, and its costs."""

    trial: int
    dice: float
    costs: tuple[float, ...]


def rung_dice(epoch_dice: Sequence[float], epoch: int) -> float | None:
    """Best Dice over the first ``epoch`` epochs (the objective is the best epoch), None if not reached."""
    if len(epoch_dice) < epoch:
        return None
    values = [d for d in epoch_dice[:epoch] if d is not None and math.isfinite(d)]
    return max(values) if values else None


def rung_verdict(policy: RungPolicy, epoch: int, epoch_dice: Sequence[float], costs: Sequence[float],
                 peers: Sequence[RungPoint]) -> str | None:
    """Why the trial should stop after ``epoch`` under ``policy.rule``, or None to go on."""
    if epoch not in policy.rungs:
        return None
    dice = rung_dice(epoch_dice, epoch)
    if dice is None:
        return None
    rule = _moasha if policy.rule == "moasha" else _halving
    return rule(policy, epoch, dice, tuple(costs), peers)


def _halving(policy: RungPolicy, epoch: int, dice: float, costs: tuple[float, ...],
             peers: Sequence[RungPoint]) -> str | None:
    cheaper = [p for p in peers if all(c <= mine for c, mine in zip(p.costs, costs))]
    if len(cheaper) < policy.min_peers:
        return None
    better = sorted((p for p in cheaper if p.dice > dice), key=lambda p: -p.dice)
    allowed = math.ceil((len(cheaper) + 1) / policy.eta)  # places that go on to the next rung
    if len(better) < allowed:
        return None
    shown = ", ".join(f"{p.trial} ({p.dice:.3f})" for p in better[:3])
    return (f"early-stopped at epoch {epoch}: Dice {dice:.3f} is beaten by {len(better)} of "
            f"{len(cheaper)} trials that cost no more (best: {shown}); top {allowed} go on")


def _moasha(policy: RungPolicy, epoch: int, dice: float, costs: tuple[float, ...],
            peers: Sequence[RungPoint]) -> str | None:
    if len(peers) < policy.min_peers:
        return None
    points = [(-p.dice, *p.costs) for p in peers] + [(-dice, *costs)]
    ranks = nondominated_ranks(points)
    mine = ranks[-1]
    better = sum(rank < mine for rank in ranks)  # trials on better fronts (Syne Tune's rank share)
    if better / len(points) <= 1 / policy.eta:
        return None
    best = sorted((p for p, rank in zip(peers, ranks) if rank == 0), key=lambda p: -p.dice)
    shown = ", ".join(f"{p.trial} ({p.dice:.3f})" for p in best[:3])
    return (f"early-stopped at epoch {epoch}: Dice {dice:.3f} is on non-dominated front {mine + 1} of the "
            f"{len(points)} trials at this rung, {better} on better fronts (first front: {shown}); "
            f"more than 1/{policy.eta} ahead")
