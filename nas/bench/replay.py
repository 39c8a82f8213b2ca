"""Replay the engine on the benchmark: the engine's own code, the recorded curves, a simulated clock.

``replay(plan, source, seed, budget_s)`` runs a search exactly as ``nas-search`` would (the study opened by
the Optuna adapter, the family planned and queued, the trial policy, the sampler, the early-stopping rule,
``--timeout``), with two things swapped through ``SearchJob``: ``train`` answers a trial from the table (or
the surrogate, for an architecture the table lacks) by calling the same epoch and cost hooks a training
calls, and ``clock`` is a simulated clock that each trial advances by its recorded single-thread CPU
seconds. Nothing of the policy is re-implemented here; ``tests/test_nasbench_replay.py`` shows a replay
takes the decisions a live search took on the same curves.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from reports.hypervolume import hypervolume_2d

from nas.bench.table import spec_key
from nas.engine.early_stop import early_stop_policy
from nas.engine.job import SearchJob
from nas.engine.optuna_adapter.search import search
from nas.engine.optuna_adapter.study import FAMILY_ATTR, MEMORY_STORAGE, open_study, run_study, study_records
from nas.engine.policy import run_policy
from nas.engine.optuna_adapter.warm_start import family_plan, store_family_plan
from nas.engine.trial import TrialSettings
from nas.results.outcome import STOP_REASON_ATTR, StopReason
from nas.results.trial_result import TrialResult
from nas.run.family_run import warm_start_until
from nas.run.start import start_search
from nas.run.search_config import SearchConfig
from nas.run.search_plan import Plan, study_settings

REFERENCE = (0.0, 10.0)  # (test Dice, log10 MACs): as benchmarks/default_budget.py scores fronts


@dataclass(frozen=True)
class Curve:
    """What one training of an architecture recorded (or the surrogate predicts), in replay units."""

    val_dice: tuple[float, ...]
    epoch_s: tuple[float, ...]  # single-thread CPU seconds per epoch
    costs: dict[str, Any]  # macs, flops, params, latency_ms, train_memory_mb
    final_test_dice: float
    setup_s: float = 0.0  # build and cost measurement before the first epoch
    finish_s: float = 0.0  # scoring the best epoch after the last one
    loss: tuple[float, ...] = ()
    source: str = "table"  # or "surrogate"


Source = Callable[[Any], Curve]  # spec -> its curve


class SimClock:
    """Seconds that pass only when a replayed trial says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, float(seconds))


@dataclass(frozen=True)
class Event:
    """A replayed trial as it ended: when (simulated seconds), what it was and whether it finished."""

    trial: int | None
    key: str
    start: float
    end: float
    finished: bool
    macs: int
    val_dice: float | None
    test_dice: float | None
    family: str | None = None
    source: str = "table"


@dataclass
class ReplayTrainer:
    """``train_and_save``'s stand-in: calls ``on_costs`` and ``on_epoch`` with the recorded values and
    advances the clock by the recorded seconds; an early stop raised by the hook ends it there."""

    source: Source
    clock: SimClock
    events: list[Event] = field(default_factory=list)
    ends: list[tuple[Any, float]] = field(default_factory=list)  # (trial, clock after its call): nothing else moves it

    def __call__(self, spec: Any, space: Any, data: Any, settings: TrialSettings, folder: Path, *,
                 extra: dict[str, Any] | None = None, on_epoch: Callable[[int, float, float], None] | None = None,
                 on_costs: Callable[[dict[str, Any]], None] | None = None) -> TrialResult:
        try:
            return self._train(spec, settings, dict(extra or {}), on_epoch, on_costs)
        finally:
            self.ends.append(((extra or {}).get("trial"), self.clock()))

    def _train(self, spec: Any, settings: TrialSettings, extra: dict[str, Any],
               on_epoch: Callable[[int, float, float], None] | None,
               on_costs: Callable[[dict[str, Any]], None] | None) -> TrialResult:
        curve = self.source(spec)
        epochs = settings.train.epochs
        if len(curve.val_dice) < epochs:
            raise ValueError(f"the benchmark holds {len(curve.val_dice)} epochs, the replay wants {epochs}")
        start = self.clock()
        self.clock.advance(curve.setup_s)
        if on_costs is not None:
            on_costs(dict(curve.costs))
        ended = dict(trial=extra.get("trial"), key=spec_key(spec), start=start, macs=int(curve.costs["macs"]),
                     family=extra.get("family"), source=curve.source)
        try:
            for epoch in range(1, epochs + 1):
                self.clock.advance(curve.epoch_s[epoch - 1])
                if on_epoch is not None:
                    on_epoch(epoch, curve.loss[epoch - 1] if curve.loss else math.nan, curve.val_dice[epoch - 1])
        except BaseException:
            self.events.append(Event(end=self.clock(), finished=False, val_dice=None, test_dice=None, **ended))
            raise
        self.clock.advance(curve.finish_s)
        best = max(range(epochs), key=lambda i: (curve.val_dice[i], -i)) + 1  # the first best epoch, as the trainer
        dice = curve.val_dice[best - 1]
        self.events.append(Event(end=self.clock(), finished=True, val_dice=dice, test_dice=curve.final_test_dice,
                                 **ended))
        return TrialResult.from_dict({
            "dice": dice, "best_epoch": best, "epoch_dice": list(curve.val_dice[:epochs]),
            "epoch_loss": list(curve.loss[:epochs]), **curve.costs,
            "quality": {"val": {"dice": dice}, "test": {"dice": curve.final_test_dice}},
            "train_seconds": sum(curve.epoch_s[:epochs]), "replay_source": curve.source, **extra})


@dataclass(frozen=True)
class Arm:
    """A search configuration to replay: the ``nas-search`` flags that differ from the task's defaults."""

    name: str
    sampler: str = "tpe"
    early_stop: str = "halving"
    warm_start: str = "family"
    cost_strata: int | None = None  # None: the task's default (SearchConfig.cost_strata)

    @property
    def anytime(self) -> bool:
        """Its decisions do not depend on ``--timeout`` (no warm-start share): one replay at the largest
        budget serves every smaller one."""
        return self.warm_start == "none"


@dataclass(frozen=True)
class Replay:
    arm: str
    seed: int
    budget_s: float | None
    events: tuple[Event, ...]
    stopped: str | None
    records: tuple[Any, ...] = ()  # the study's TrialRecords (nas.results.records), in trial order
    family_starts: tuple[tuple[float, bool], ...] | None = None  # per warm-start trial: (clock at its start,
    # skipped for the share of --timeout); None: unknown (see ``prefix``)


_FAMILY_PLANS: dict[Any, list[dict[str, Any]]] = {}


def replay(plan: Plan, source: Source, arm: Arm, seed: int, budget_s: float | None, *, max_trials: int = 10_000,
           keep_records: bool = False, port: Callable[[Any, Any], Any] | None = None) -> Replay:
    """One search of ``arm`` with seed ``seed`` (the sampler's; the data and training stay the table's) and
    ``--timeout budget_s`` in simulated seconds (None: ``--trials max_trials`` is the budget). ``port(study,
    trial)``: the policy's port for each trial instead of the engine's own (an outside stopping rule, as
    Syne Tune's MOASHA in benchmarks/nasbench.py)."""
    config = arm_config(plan, arm, seed, budget_s, max_trials)
    plan = replace(plan, config=config)
    clock = SimClock()
    trainer = ReplayTrainer(source, clock)
    with contextlib.redirect_stdout(io.StringIO()):
        study = _started(plan, source)
        settings = TrialSettings(image_size=config.image_size, train=config.recipe())
        job = SearchJob(space=plan.space, data=plan.data, settings=settings, out=Path("/nonexistent/replay"),
                        trials=max_trials, restriction=plan.restriction, constraints=plan.constraints,
                        objectives=plan.objectives,
                        early_stop=early_stop_policy(config.early_stop, config.epochs, config.early_stop_rungs),
                        max_failures=config.max_failures, max_pruned_in_a_row=config.max_pruned_in_a_row,
                        timeout=budget_s, warm_start_until=warm_start_until(config, now=clock()),
                        train=trainer, clock=clock)
        if port is None:
            stopped = search(job, study)
        else:
            stopped = run_study(study, job.trials, lambda trial: run_policy(job, port(study, trial)).attrs(),
                                max_failures=job.max_failures, max_pruned_in_a_row=job.max_pruned_in_a_row,
                                objectives=job.objectives, timeout=job.timeout, clock=clock)
    records = tuple(study_records(study)) if keep_records else ()
    return Replay(arm.name, seed, budget_s, tuple(trainer.events), stopped, records,
                  _family_starts(study, trainer.ends))


def _started(plan: Plan, source: Source) -> Any:
    """The replay's study, opened and started (family planned, start trials queued) as ``nas-search`` does;
    the family's plan kept per process once planned (planning counts the MACs of many specs)."""
    config = plan.config
    study = open_study(MEMORY_STORAGE, plan.study_name, config.seed, study_settings(plan), plan.objectives,
                       config.sampler)
    cache_key = (plan.space.name, config.image_size, config.family_rungs)
    if cache_key in _FAMILY_PLANS:
        store_family_plan(study, _FAMILY_PLANS[cache_key])
    start_search(plan, study, lambda _: None, macs_of=getattr(source, "macs", None))
    planned = family_plan(study)
    if planned is not None:  # an arm without the family plans none: an empty list here would empty it for all
        _FAMILY_PLANS.setdefault(cache_key, planned)
    return study


def plan_family_once(plan: Plan, source: Source) -> None:
    """Plan the family before any replay: in a parent, once for all the workers it forks."""
    config = arm_config(plan, Arm("family"), 0, None)
    with contextlib.redirect_stdout(io.StringIO()):
        _started(replace(plan, config=config), source)


def arm_config(plan: Plan, arm: Arm, seed: int, budget_s: float | None, max_trials: int = 10_000) -> SearchConfig:
    """The ``nas-search`` settings of ``arm`` with ``--seed seed --timeout budget_s --trials max_trials``."""
    return replace(plan.config, seed=seed, sampler=arm.sampler, early_stop=arm.early_stop,
                   warm_start=arm.warm_start, baselines=("family",) if arm.warm_start == "family" else (),
                   timeout=budget_s, trials=max_trials,
                   cost_strata=plan.config.cost_strata if arm.cost_strata is None else arm.cost_strata)


def _family_starts(study: Any, ends: Sequence[tuple[Any, float]]) -> tuple[tuple[float, bool], ...] | None:
    """(simulated clock when the policy looked at it, skipped for the warm start's share) per family trial:
    trials run one after another and only the trainer moves the clock, so a trial starts at the clock the
    last trainer call of an earlier trial left."""
    if any(not isinstance(trial, int) for trial, _ in ends):
        return None
    starts = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(FAMILY_ATTR):
            start = max((end for number, end in ends if number < trial.number), default=0.0)
            starts.append((start, trial.user_attrs.get(STOP_REASON_ATTR) == StopReason.BUDGET.value))
    return tuple(starts)


def prefix(result: Replay, plan: Plan, arm: Arm, budget_s: float) -> Replay | None:
    """What ``replay(plan, source, arm, result.seed, budget_s)`` returns (but ``stopped`` and records), read
    off ``result``, a replay of the same arm and seed with a larger ``--timeout``; None where that cannot be
    shown. ``--timeout`` reaches a replay's decisions in two places only: the search stops after the trial
    that ends at or past it (``run_study``), and a family member whose turn comes at or past
    ``warm_start_until`` (a quarter of it) is skipped (``run_policy``). So while every family member that
    starts before ``budget_s`` meets the same skip decision under both timeouts, the smaller replay is the
    trials of ``result`` that start before ``budget_s``, event for event."""
    if result.budget_s is None or result.family_starts is None or budget_s > result.budget_s or \
            any(event.trial is None for event in result.events):
        return None
    until = warm_start_until(arm_config(plan, arm, result.seed, budget_s), now=0.0)
    for start, skipped in result.family_starts:
        if start < budget_s and skipped != (until is not None and start >= until):
            return None
    events = tuple(event for event in result.events if event.start < budget_s)
    return Replay(result.arm, result.seed, budget_s, events, None)


def front_hypervolume(events: Sequence[Event], until: float, reference: Sequence[float] = REFERENCE,
                      searched_only: bool = False) -> float:
    """Hypervolume of (test Dice, log10 MACs) of the front chosen on validation among the trials finished
    by ``until``: selected on validation, claimed on test."""
    done = [e for e in events if e.finished and e.end <= until and (not searched_only or e.family is None)]
    front = [e for e in done if not any(
        (o.val_dice >= e.val_dice and o.macs <= e.macs) and (o.val_dice > e.val_dice or o.macs < e.macs)
        for o in done)]
    return hypervolume_2d([(e.test_dice, math.log10(e.macs)) for e in front if e.test_dice is not None], reference)


def reach_time(events: Sequence[Event], target: float, reference: Sequence[float] = REFERENCE,
               searched_only: bool = False) -> float | None:
    """Simulated seconds at which the front's hypervolume first reaches ``target`` (None: never)."""
    for end in sorted({e.end for e in events if e.finished}):
        if front_hypervolume(events, end, reference, searched_only) >= target - 1e-12:
            return end
    return None
