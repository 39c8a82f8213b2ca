"""Run a ``SearchJob`` on an Optuna study in this process: the glue between a trial and the core.

Per trial: sample a spec through the (restricted) trial, refuse architectures too deep for the
image size or over the limits, skip duplicates, then train with two epoch hooks: the progress
line and cost-aware early stopping, which reads the other trials' curves from the storage.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from search_spaces.overrides import RestrictedSuggest, RestrictionConflict

from nas.costs.constraints import Verdict, check_model
from nas.engine.early_stop import EarlyStopped, RungPoint, rung_dice, rung_verdict
from nas.engine.trial import run_trial
from nas.engine.optuna_adapter.study import (apply_verdict, count_finished, record_fixed_params, run_study, skip_if_duplicate,
                           study_records)
from nas.engine.job import LiveView, SearchJob
from nas.train.trainer import resolve_device

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


class EpochHook:
    """Keep the partial curve in the storage; stop the trial at a rung where cheaper trials beat it.

    Also stores the seconds spent training (and validating each epoch) since ``start_training()``:
    everything else in a trial is the engine's own overhead.
    """

    def __init__(self, job: SearchJob, study: optuna.Study, trial: optuna.Trial,
                 show: Callable[[int, float, float], None]) -> None:
        self.job, self.study, self.trial, self.show = job, study, trial, show
        self.curve: list[float] = []
        self.training_started = time.perf_counter()

    def start_training(self) -> None:
        self.training_started = time.perf_counter()

    def __call__(self, epoch: int, loss: float, dice: float) -> None:
        self.show(epoch, loss, dice)
        self.curve.append(dice)
        self.trial.set_user_attr(CURVE_ATTR, list(self.curve))
        self.trial.set_user_attr(TRAIN_SECONDS_ATTR, time.perf_counter() - self.training_started)
        policy, costs = self.job.early_stop, self.trial.user_attrs.get(COSTS_ATTR)
        if policy is None or costs is None or epoch not in policy.rungs:
            return
        reason = rung_verdict(policy, epoch, self.curve, costs, rung_peers(self.study, self.trial.number, epoch))
        if reason is not None:
            print(f"    -> {reason}", flush=True)
            raise EarlyStopped(reason, epoch)


def _log(text: str) -> None:
    print(text, flush=True)


def make_trial_function(job: SearchJob, study: optuna.Study,
                        log: Callable[[str], None] = _log) -> Callable[[optuna.Trial], dict[str, Any]]:
    device = resolve_device(job.settings.train.device)
    epochs = job.settings.train.epochs

    def show_epoch(epoch: int, loss: float, dice: float) -> None:
        log(f"    epoch {epoch}/{epochs}  loss {loss:.3f}  val dice {dice:.3f}")

    def check_constraints(trial: optuna.Trial, spec: Any) -> dict[str, Any]:
        """Milliseconds to seconds instead of an epoch: prune (infeasible) before any training."""
        model = job.space.build_model(spec, job.data.in_channels, 1)
        verdict = check_model(model, job.constraints, in_channels=job.data.in_channels,
                              image_size=job.image_size, batch_size=job.settings.train.batch_size, device=device)
        if not verdict.feasible:
            log(f"    -> pruned: {verdict.reason}")
        apply_verdict(trial, verdict)
        return verdict.measured

    def trial_function(trial: optuna.Trial) -> dict[str, Any]:
        suggest = RestrictedSuggest(trial, job.restriction) if job.restriction else trial
        checked: dict[str, Any] = {}

        def on_spec(spec: Any) -> None:
            log(f"trial {trial.number:>3} ({count_finished(study)}/{job.trials} finished)  {spec.summary()}")
            if job.restriction:
                record_fixed_params(trial, suggest.fixed)
            if job.image_size // spec.downsampling_factor < 2:
                reason = f"depth {spec.depth} halves --image-size {job.image_size} to under 2 px at the bridge"
                log(f"    -> pruned: infeasible: {reason}")
                apply_verdict(trial, Verdict(measured={}, violations={"image_size": 1.0}, reasons=(reason,)))
            if job.constraints:
                checked.update(check_constraints(trial, spec))
            try:
                skip_if_duplicate(study, trial)
            except optuna.TrialPruned:
                log(f"    -> skipped: {trial.user_attrs['fail_reason']}")
                raise

        on_epoch = EpochHook(job, study, trial, show_epoch)

        def on_costs(costs: dict[str, Any]) -> None:
            trial.set_user_attr(COSTS_ATTR, list(job.objectives.cost_values({**checked, **costs})))
            on_epoch.start_training()

        try:
            attrs = run_trial(suggest, trial.number, job.space, job.data, job.settings, job.out, on_spec=on_spec,
                              on_epoch=on_epoch, on_costs=on_costs)
        except RestrictionConflict as error:  # a conditional dimension this architecture lacks
            log(f"trial {trial.number:>3}  -> pruned: infeasible: {error}")
            apply_verdict(trial, Verdict(measured={}, violations={"restriction": 1.0}, reasons=(str(error),)))
            raise
        # Costs measured only for the check (training-step memory) join the trial's metrics.
        metrics = attrs["metrics"]
        metrics.update({k: v for k, v in checked.items() if k not in metrics})
        log(f"    -> dice {metrics['dice']:.3f} (epoch {metrics['best_epoch']})  {metrics['macs'] / 1e6:.1f} MMAC  "
            f"{metrics['params'] / 1e3:.1f} k params  {metrics['latency_ms']:.2f} ms  {metrics['seconds']:.1f} s")
        return attrs

    return trial_function


def search(job: SearchJob, study: optuna.Study, live: LiveView | None = None) -> str | None:
    """Run trials of ``job`` in this process until the study holds ``job.trials`` finished ones."""
    def on_trial_done(study: optuna.Study, trial: Any) -> None:
        if live is not None:
            live.update(study_records(study))

    return run_study(study, job.trials, make_trial_function(job, study), max_failures=job.max_failures,
                     max_pruned_in_a_row=job.max_pruned_in_a_row, objectives=job.objectives,
                     timeout=job.timeout, on_trial_done=on_trial_done)
