"""What one search is (``SearchJob``) and how it looks while it runs (``LiveView``); no Optuna here.

The CLI builds a job from its flags; the Optuna adapter (``nas.engine.optuna_adapter.search``), the worker pool
(``nas.engine.workers``) and the Ray backend run it. The live view reads only ``TrialRecord``s, so it
shows the same thing whichever process or backend wrote the study.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from search_spaces import SearchSpace
from search_spaces.overrides import Restriction

from nas.costs.constraints import Constraints
from nas.data.loading import SegmentationData
from nas.engine.early_stop import RungPolicy
from nas.io import atomic_write_text
from nas.engine.trial import TrainFunction, TrialSettings, train_and_save
from nas.engine.objectives import Objectives
from nas.results.outcome import StopReason, TrialState
from nas.results.records import TrialRecord


SAMPLERS = ("tpe", "nsga2", "nsga3", "random", "gp")  # Optuna multi-objective samplers (built by the Optuna adapter)


def sampler_problem(name: str) -> str | None:
    """Why ``--sampler name`` cannot run here, or None: Optuna's GPSampler needs scipy (``pip install .[gp]``)."""
    if name not in SAMPLERS:
        return f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}"
    if name == "gp":
        from importlib.util import find_spec

        if find_spec("scipy") is None:
            return "--sampler gp needs scipy, which is not installed: pip install .[gp]"
    return None


@dataclass(frozen=True)
class SearchJob:
    space: SearchSpace
    data: SegmentationData
    settings: TrialSettings
    out: Path
    trials: int  # finished trials wanted
    restriction: Restriction = Restriction()
    constraints: Constraints = Constraints()
    objectives: Objectives = Objectives()
    early_stop: RungPolicy | None = None
    max_failures: int = 5
    max_pruned_in_a_row: int = 25
    timeout: float | None = None  # wall-clock seconds
    warm_start_until: float | None = None  # clock() after which no family warm-start member starts
    # What trains a trial and what tells the time: a live search trains (``train_and_save``) on the wall
    # clock; a replay (``nas.bench.replay``) hands in the recorded curves and a simulated clock instead.
    train: TrainFunction = train_and_save
    clock: Callable[[], float] | None = None  # None: the wall clock (time.time; --timeout by time.monotonic)

    def now(self) -> float:
        return (self.clock or time.time)()

    @property
    def image_size(self) -> int:
        return self.settings.image_size


def front_size(records: Sequence[TrialRecord], objectives: Objectives) -> int:
    from nas.results.pareto import pareto_front

    return len(pareto_front(records, report_objectives(objectives)).front)


def report_objectives(objectives: Objectives) -> tuple:
    """The job's objectives as ``reports.Objective`` axes (what ``best/`` and the report rank by)."""
    from nas.results.pareto import Objective

    return tuple(Objective(field, direction)
                 for field, direction in zip(objectives.record_fields(), objectives.directions))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class LiveView:
    """Counts, best Dice, front size, elapsed and estimated time; printed and kept in ``status.json``.

    The estimate is (elapsed / trials finished since this process started) x trials still wanted:
    it includes the pruned and failed trials' share of the time, as the search will.
    """

    def __init__(self, out: Path, target: Sequence[int] | int, objectives: Objectives,
                 already: int, log: Callable[[str], None] = print) -> None:
        self.out, self.target, self.objectives = Path(out), int(target), objectives
        self.already, self.log = already, log
        self.started = time.monotonic()
        self.last_line = ""

    def status(self, records: Sequence[TrialRecord]) -> dict[str, Any]:
        states = [r.state for r in records]
        finished = sum(r.finished for r in records)
        early = sum(1 for r in records if r.stop_reason == StopReason.EARLY_STOPPED)
        elapsed = time.monotonic() - self.started
        new = finished - self.already
        remaining = max(0, self.target - finished)
        dice = [r.dice for r in records if r.finished and r.dice is not None]
        return {
            "finished": finished, "target": self.target, "running": states.count(TrialState.RUNNING),
            "failed": states.count(TrialState.FAIL), "pruned": states.count(TrialState.PRUNED), "early_stopped": early,
            "waiting": states.count(TrialState.WAITING), "best_dice": max(dice) if dice else None,
            "front_size": front_size(records, self.objectives), "elapsed_s": elapsed,
            "eta_s": elapsed / new * remaining if new > 0 else None,
        }

    def line(self, status: dict[str, Any]) -> str:
        best = "-" if status["best_dice"] is None else f"{status['best_dice']:.3f}"
        eta = "?" if status["eta_s"] is None else _clock(status["eta_s"])
        return (f"[{status['finished']}/{status['target']} finished, {status['running']} running, "
                f"{status['failed']} failed, {status['pruned']} pruned ({status['early_stopped']} early-stopped)"
                f" | best dice {best} | front {status['front_size']} | {_clock(status['elapsed_s'])} elapsed,"
                f" ~{eta} left]")

    def update(self, records: Sequence[TrialRecord], *, force: bool = False) -> dict[str, Any]:
        """Print a line when something changed, and rewrite ``status.json`` (atomic) for other tools."""
        status = self.status(records)
        line = self.line(status)
        changed = line.split("|")[0] != self.last_line.split("|")[0]
        if changed or force:
            self.log(line)
            self.last_line = line
        try:
            atomic_write_text(self.out / "status.json", json.dumps(status, indent=1))
        except OSError:
            pass  # a status file is a convenience; the search goes on
        return status
