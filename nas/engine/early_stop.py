"""Cost-aware successive halving: early stopping that works with several objectives.

Optuna cannot prune multi-objective studies and Ray's schedulers rank one metric. Our costs
(MACs, params, latency, memory) are known before training, so at a rung (epochs 1, 3, 9, ...)
a trial is compared only with trials that cost no more than it does on every cost objective:
if enough of those cheaper-or-equal trials already had a better validation Dice at that rung,
this trial cannot reach the front through them and training it further is wasted compute.

"Enough" follows successive halving with reduction factor ``eta``: among the ``n`` peers plus
the trial itself, it must rank in the top ``ceil((n + 1) / eta)``; no decision is made before
``min_peers`` peers exist, so cheap trials (which have few cheaper peers) always finish: they
are the front's low-cost end.

No Optuna here: peers arrive as ``RungPoint`` values; the adapter reads them from the storage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


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

    def __post_init__(self) -> None:
        if self.eta < 2 or self.min_peers < 1 or any(r < 1 for r in self.rungs):
            raise ValueError(f"bad early-stopping policy {self}")

    @classmethod
    def for_epochs(cls, epochs: int, eta: int = 3, min_peers: int = 3) -> "RungPolicy":
        """Rungs 1, eta, eta^2, ... below ``epochs`` (a rung at the last epoch saves nothing)."""
        rungs, rung = [], 1
        while rung < epochs:
            rungs.append(rung)
            rung *= eta
        return cls(tuple(rungs), eta, min_peers)

    def to_dict(self) -> dict:
        return {"rungs": list(self.rungs), "eta": self.eta, "min_peers": self.min_peers}


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
    """Why the trial should stop after ``epoch``, or None to go on."""
    if epoch not in policy.rungs:
        return None
    dice = rung_dice(epoch_dice, epoch)
    if dice is None:
        return None
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
