"""Run a ``SearchJob`` on an Optuna study in this process: an Optuna trial as the policy's port.

The trial policy (``nas.engine.policy``) decides everything about a trial; this module only
answers its questions from the study (duplicates, early-stopping peers) and keeps its progress
in the trial's user attrs, where other workers and the live view read it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from nas.costs.constraints import Verdict
from nas.engine.early_stop import RungPoint, rung_dice
from nas.engine.job import LiveView, SearchJob
from nas.engine.optuna_adapter.storage_fault import StorageFailed
from nas.engine.optuna_adapter.study import (FAMILY_ATTR, count_finished, duplicate_of, record_fixed_params,
                                             record_violations, run_study, study_records)
from nas.engine.policy import run_policy

COSTS_ATTR = "objective_costs"  # the trial's cost objectives, known before training
CURVE_ATTR = "epoch_dice"  # validation Dice per epoch so far: the partial curve of a stopped trial
TRAIN_SECONDS_ATTR = "train_seconds"  # wall seconds in training and per-epoch validation


def rung_peers(study: optuna.Study, number: int, epoch: int) -> list[RungPoint]:
    """Every other trial that reached ``epoch`` (finished, stopped or still running) and its costs."""
    peers = []
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    for other in study.get_trials(deepcopy=False, states=states):
        costs, curve = other.user_attrs.get(COSTS_ATTR), other.user_attrs.get(CURVE_ATTR)
        if other.number == number or costs is None or not curve:
            continue
        dice = rung_dice(curve, epoch)
        if dice is not None:
            peers.append(RungPoint(other.number, dice, tuple(costs)))
    return peers


class OptunaPort:
    """``nas.engine.policy.TrialPort`` over one running Optuna trial of ``study``."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self.study, self.trial = study, trial
        self.number, self.suggest = trial.number, trial
        self.checkpoint = Path("trials") / f"trial_{trial.number:04d}"
        self.extra: dict[str, Any] = {"trial": trial.number}
        self.family = trial.user_attrs.get(FAMILY_ATTR)  # a warm-start trial: this family member
        if self.family:
            self.extra[FAMILY_ATTR] = self.family

    def fixed_params(self, fixed: dict[str, Any]) -> None:
        record_fixed_params(self.trial, fixed)

    def constraint_violations(self, verdict: Verdict) -> None:
        record_violations(self.trial, verdict)

    def duplicate_of(self) -> int | None:
        return duplicate_of(self.study, self.trial)

    def costs_known(self, costs: list[float]) -> None:
        self.trial.set_user_attr(COSTS_ATTR, list(costs))

    def epoch_done(self, curve: list[float], train_seconds: float) -> None:
        self.trial.set_user_attr(CURVE_ATTR, list(curve))
        self.trial.set_user_attr(TRAIN_SECONDS_ATTR, train_seconds)

    def rung_peers(self, epoch: int) -> list[RungPoint] | None:
        """None (never stopped early) for a family member: the bar the search is measured against is
        trained in full, or the family front would be cut short by the rule it is compared with."""
        return None if self.family else rung_peers(self.study, self.trial.number, epoch)


def _log(text: str) -> None:
    print(text, flush=True)


def make_trial_function(job: SearchJob, study: optuna.Study,
                        log: Callable[[str], None] = _log) -> Callable[[optuna.Trial], dict[str, Any]]:
    def trial_function(trial: optuna.Trial) -> dict[str, Any]:
        return run_policy(job, OptunaPort(study, trial), log, finished=lambda: count_finished(study)).attrs()

    return trial_function


def search(job: SearchJob, study: optuna.Study, live: LiveView | None = None) -> str | None:
    """Run trials of ``job`` in this process until the study holds ``job.trials`` finished ones; a storage
    that stops taking writes ends it with ``"storage: <one line>"``."""
    def on_trial_done(study: optuna.Study, trial: Any) -> None:
        if live is not None:
            live.update(study_records(study))

    try:
        return run_study(study, job.trials, make_trial_function(job, study), max_failures=job.max_failures,
                         max_pruned_in_a_row=job.max_pruned_in_a_row, objectives=job.objectives,
                         timeout=job.timeout, on_trial_done=on_trial_done, clock=job.clock,
                         unstored=job.out / "logs" if job.clock is None else None)
    except StorageFailed as error:  # disk full, read-only: the search ends here, with this one line
        return f"storage: {error}"
