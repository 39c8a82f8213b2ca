"""The one trial policy every engine runs: sample -> feasibility -> constraints -> duplicate ->
train with cost-aware early stopping -> checkpoint and metrics.

An engine (the Optuna adapter, the Ray adapter, any future pool) hands ``run_policy`` a
``TrialPort``: where the architecture's values come from and where the trial's progress goes.
Everything the search decides about a trial is decided here, once; the adapters only translate
``TrialStopped`` and the returned ``TrialDone`` into their own vocabulary (a pruned Optuna trial,
a Ray report). No Optuna, no Ray.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from search_spaces import Suggest
from search_spaces.overrides import RestrictedSuggest, RestrictionConflict

from nas.costs.constraints import Verdict, check_model
from nas.engine.early_stop import EarlyStopped, RungPoint, rung_verdict
from nas.engine.job import SearchJob
from nas.engine.trial import fit_spec, onnxruntime_latency
from nas.results.outcome import StopReason
from nas.results.trial_result import TrialResult
from nas.train.trainer import resolve_device

Log = Callable[[str], None]
WARM_START_PAST = "warm start past its share of --timeout"  # nas.run.family_run.WARM_START_SHARE


class TrialStopped(Exception):
    """The trial ends without finishing, through no fault of its code: recorded as pruned."""

    def __init__(self, reason: StopReason, message: str, *, epoch: int | None = None,
                 measured: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.epoch = reason, message[:500], epoch
        self.measured = dict(measured or {})  # costs known when it stopped (what made it infeasible)


@dataclass(frozen=True)
class TrialDone:
    """A finished trial: what the engine stores on it."""

    spec: dict[str, Any]
    result: TrialResult  # what it measured; stored as its flat, JSON-safe dict (``to_dict``)
    checkpoint: str  # folder relative to the run directory

    def attrs(self) -> dict[str, Any]:
        return {"spec": self.spec, "metrics": self.result.to_dict(), "checkpoint": self.checkpoint}


class TrialPort(Protocol):
    """What an engine offers the policy for one trial."""

    number: int | str  # shown in log lines
    suggest: Suggest  # answers the space's suggest_* calls (an Optuna trial, replayed Ray params)
    checkpoint: Path  # where the finished trial's checkpoint goes, relative to the run directory
    extra: dict[str, Any]  # provenance written into the checkpoint's metrics (e.g. {"trial": 7})

    family: str | None  # the family member this warm-start trial is (None: a sampled trial)

    def fixed_params(self, fixed: dict[str, Any]) -> None:
        """Dimensions the restriction fixed (they never reach the sampler)."""

    def constraint_violations(self, verdict: Verdict) -> None:
        """Every checked trial's violations (feasible ones too), for constraint-aware samplers."""

    def duplicate_of(self) -> int | None:
        """The finished (or running) trial with the same sampled params, if any."""

    def costs_known(self, costs: list[float]) -> None:
        """The cost objectives, known before training (early-stopping peers compare them)."""

    def epoch_done(self, curve: list[float], train_seconds: float) -> None:
        """The validation Dice curve so far and the seconds spent training."""

    def rung_peers(self, epoch: int) -> list[RungPoint] | None:
        """Other trials' Dice at ``epoch`` with their costs; None when the engine cannot tell."""


def _log(text: str) -> None:
    print(text, flush=True)


@dataclass
class _Progress:
    """The epoch hook: show the epoch, report the curve, stop at a rung where cheaper trials win."""

    job: SearchJob
    port: TrialPort
    log: Log
    costs: list[float] | None = None
    measured: dict[str, Any] = field(default_factory=dict)  # every cost measured before training
    curve: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def on_costs(self, measured: dict[str, Any]) -> None:
        self.measured = dict(measured)
        self.costs = list(self.job.objectives.cost_values(measured))
        self.port.costs_known(self.costs)
        self.started = time.perf_counter()  # training starts now

    def __call__(self, epoch: int, loss: float, dice: float) -> None:
        self.log(f"    epoch {epoch}/{self.job.settings.train.epochs}  loss {loss:.3f}  val dice {dice:.3f}")
        self.curve.append(dice)
        self.port.epoch_done(list(self.curve), time.perf_counter() - self.started)
        policy = self.job.early_stop
        if policy is None or self.costs is None or epoch not in policy.rungs:
            return
        peers = self.port.rung_peers(epoch)
        reason = None if peers is None else rung_verdict(policy, epoch, self.curve, self.costs, peers)
        if reason is not None:
            self.log(f"    -> {reason}")
            raise EarlyStopped(reason, epoch)


def _infeasible(port: TrialPort, verdict: Verdict, log: Log) -> None:
    port.constraint_violations(verdict)
    if not verdict.feasible:
        log(f"    -> pruned: {verdict.reason}")
        raise TrialStopped(StopReason.INFEASIBLE, verdict.reason, measured=verdict.measured)


def training_side(data: Any, image_size: int) -> int:
    """The patch side training really runs at: ``--image-size``, or the smallest training image side."""
    return min([image_size, *[min(image.shape[1:]) for image in data.train_images]])


def check_feasible(job: SearchJob, spec: Any, port: TrialPort, log: Log = _log) -> dict[str, Any]:
    """Milliseconds instead of an epoch: refuse what cannot fit the image size or the limits.

    Returns the costs measured for the check (training-step memory), which join the metrics.
    """
    side = training_side(job.data, job.image_size)
    if side // spec.downsampling_factor < 2:
        at = (f"--image-size {job.image_size}" if side == job.image_size
              else f"the {side} px training patches (the smallest training image; --image-size {job.image_size})")
        reason = f"depth {spec.depth} halves {at} to under 2 px at the bridge"
        _infeasible(port, Verdict(measured={}, violations={"image_size": 1.0}, reasons=(reason,)), log)
    if not job.constraints:
        return {}
    model = job.space.build_model(spec, job.data.in_channels, 1)
    verdict = check_model(model, job.constraints, in_channels=job.data.in_channels, image_size=job.image_size,
                          batch_size=job.settings.train.batch_size, device=resolve_device(job.settings.train.device),
                          spatial_dims=job.data.spatial_dims,
                          latency=onnxruntime_latency if job.settings.latency_engine == "onnxruntime" else None)
    _infeasible(port, verdict, log)
    return dict(verdict.measured)


def run_policy(job: SearchJob, port: TrialPort, log: Log = _log,
               finished: Callable[[], int] | None = None) -> TrialDone:
    """Run one trial of ``job`` through ``port``; raises ``TrialStopped`` for a pruned trial.

    Any other exception is a failed trial (the engine records it with ``failure_reason``).
    ``finished`` counts the study's finished trials, for the log line.
    """
    started = time.perf_counter()
    family = getattr(port, "family", None)
    if family and job.warm_start_until is not None and job.now() >= job.warm_start_until:
        log(f"trial {port.number:>3}  -> skipped: {family}: {WARM_START_PAST}")
        raise TrialStopped(StopReason.BUDGET, f"{WARM_START_PAST}: {family} not run")
    suggest = RestrictedSuggest(port.suggest, job.restriction) if job.restriction else port.suggest
    try:
        spec = fit_spec(job.space.sample_spec(suggest), job.data)  # the data's class count (docs/multiclass.md)
    except RestrictionConflict as error:  # a conditional dimension this architecture lacks
        log(f"trial {port.number:>3}  -> pruned: infeasible: {error}")
        verdict = Verdict(measured={}, violations={"restriction": 1.0}, reasons=(str(error),))
        port.constraint_violations(verdict)
        raise TrialStopped(StopReason.INFEASIBLE, verdict.reason) from None
    done = f" ({finished()}/{job.trials} finished)" if finished is not None else ""
    log(f"trial {port.number:>3}{done}  {spec.summary()}")
    if job.restriction and getattr(suggest, "fixed", None):
        port.fixed_params(dict(suggest.fixed))
    measured = check_feasible(job, spec, port, log)
    original = port.duplicate_of()
    if original is not None:
        log(f"    -> skipped: duplicate of trial {original}")
        raise TrialStopped(StopReason.DUPLICATE, f"duplicate of trial {original}")
    progress = _Progress(job, port, log)
    try:
        trained = job.train(
            spec, job.space, job.data, job.settings, job.out / port.checkpoint, extra=port.extra,
            on_epoch=progress, on_costs=lambda costs: progress.on_costs({**measured, **costs}))
    except EarlyStopped as stop:
        partial = {**progress.measured, "epoch_dice": list(progress.curve), "stopped_at_epoch": stop.epoch}
        raise TrialStopped(StopReason.EARLY_STOPPED, str(stop), epoch=stop.epoch, measured=partial) from None
    result = trained.merged(measured, replace=False)  # + the costs measured for the check
    result = replace(result, timing=replace(result.timing, seconds=time.perf_counter() - started))
    quality, costs = result.quality, result.costs
    log(f"    -> dice {quality.dice:.3f} (epoch {quality.best_epoch})  {costs.macs / 1e6:.1f} MMAC  "
        f"{costs.params / 1e3:.1f} k params  {costs.latency_ms:.2f} ms  {result.timing.seconds:.1f} s")
    return TrialDone(spec=spec.to_dict(), result=result, checkpoint=port.checkpoint.as_posix())
