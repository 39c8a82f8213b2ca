"""The Ray driver's side: ``_Session`` (what one search knows) and ``StudySearcher`` (between Tune and
``OptunaSearch``): finished Ray trials are written into the Optuna study, duplicates are skipped, and
the search ends once the study holds enough finished trials.

A trial that a Ray scheduler stops early would reach ``OptunaSearch`` as finished with its early
values (Tune calls ``on_trial_complete`` with the last result either way). Here it is recorded as
PRUNED ("stopped by the Ray scheduler at epoch k", with its partial curve) and ``OptunaSearch`` is
told PRUNED too, so it never enters the Pareto front or the sampler's model as if fully trained.

A warm start (``--warm-start family``) leaves the family's trials WAITING in the study; ``OptunaSearch``
proposes their points first (``points_to_evaluate``), the searcher tells each Ray trial which member it
is (the trainable labels it and never stops it early) and fills that member's waiting trial with the
outcome, so the family keeps its numbers and labels and is never run twice.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.engine.job import LiveView, SearchJob
from nas.engine.optuna_adapter.foreign import (complete_with_params, queued_start, record_trial, replay,
                                               trial_count, trials_with_attr)
from nas.engine.optuna_adapter.search import COSTS_ATTR, CURVE_ATTR
from nas.engine.optuna_adapter.study import FAMILY_ATTR, FIXED_PARAMS_ATTR, count_finished, study_records
from nas.engine.ray_adapter.trainable import OUTCOME_KEY, RAY_TRIAL_ATTR, RECORDED, RayOutcome
from nas.results.outcome import FAILURE_KIND_ATTR, STOP_REASON_ATTR, FailureKind, StopReason, TrialState

try:  # Ray is optional: the module imports without it, ``run_ray_search`` then says what to install
    from ray.tune.search import Searcher as _Searcher
except ImportError:  # pragma: no cover - exercised only without ray
    _Searcher = object  # type: ignore[assignment,misc]

EXPERIMENT_DIR = "ray"  # under job.out: one Tune experiment per search, restored on resume



@dataclass
class _Session:
    """What one ``run_ray_search`` call knows; the searcher (restored by Tune from a pickle) finds
    it through ``_SESSION`` instead of carrying the study inside its pickled state."""

    job: SearchJob
    study: Any  # the Optuna study (only nas.engine.optuna_adapter touches it)
    live: LiveView
    started: float = field(default_factory=time.monotonic)
    failures: int = 0
    pruned_in_a_row: int = 0
    stopped: str | None = None
    finished: bool = False  # the searcher ended the experiment (else Tune was interrupted: Ctrl-C)
    complete: int = 0

    def stop_reason(self, running: int) -> str | None:
        """``done``, ``failures``, ``pruned_in_a_row``, ``timeout``: no new trial; ``wait``: not now."""
        job = self.job
        if self.complete >= job.trials:
            return "done"
        if self.failures >= job.max_failures:
            return "failures"
        if self.pruned_in_a_row >= job.max_pruned_in_a_row:
            return "pruned_in_a_row"
        if job.timeout is not None and time.monotonic() - self.started >= job.timeout:
            return "timeout"
        return "wait" if self.complete + running >= job.trials else None

    def duplicate_of(self, params: dict[str, Any]) -> int | None:
        return complete_with_params(self.study, params)

    def record(self, trial_id: str, params: dict[str, Any] | None, result: dict[str, Any] | None,
               error: bool, member: dict[str, Any] | None = None) -> tuple[TrialState, tuple[float, ...] | None] | None:
        """Add the finished Ray trial to the study (once); returns its state and values, or None
        for a trial that never ran (removed while pending when the search ended). ``member``: the
        warm-start trial it ran (``queued_start``), filled in place."""
        if not result and not error:
            return None
        recorded = trials_with_attr(self.study, RAY_TRIAL_ATTR, trial_id)
        if result and OUTCOME_KEY in result and RayOutcome.from_json(result[OUTCOME_KEY]).state == RECORDED:
            return recorded[-1] if recorded else None
        state, values, attrs = self.outcome(result, error)
        if any(known == state for known, _ in recorded):
            return state, values  # recorded before this resume
        try:
            _, distributions, fixed = replay(self.job.space.name, self.job.restriction, params or {})
        except Exception:  # noqa: BLE001 - params that no longer replay still deserve a record
            distributions, fixed = {}, {}
        if fixed:
            attrs[FIXED_PARAMS_ATTR] = fixed
        attrs[RAY_TRIAL_ATTR] = trial_id
        waiting = member["number"] if member else None
        if waiting is not None and all(queued["number"] != waiting for queued in queued_start(self.study)):
            waiting = None  # no longer waiting (cannot happen while this driver is the only writer)
        if member:
            attrs.update(member["attrs"])
        number = trial_count(self.study) if waiting is None else waiting
        attrs = self._number_checkpoint(attrs, number)
        record_trial(self.study, state, values, params or {}, distributions, attrs, waiting=waiting)
        self._count(state, attrs, number)
        return state, values

    def outcome(self, result: dict[str, Any] | None, error: bool):
        job = self.job
        if error or not result:  # the worker died or raised outside the trainable's own guard
            return TrialState.FAIL, None, {
                "fail_reason": f"the Ray trial process failed (see error.txt under {job.out / EXPERIMENT_DIR})",
                FAILURE_KIND_ATTR: FailureKind.ERROR.value, CURVE_ATTR: list((result or {}).get(CURVE_ATTR) or [])}
        if OUTCOME_KEY not in result:
            names = job.objectives.metric_keys()
            epoch = int(result.get("epoch") or 0)
            curve = list(result.get(CURVE_ATTR) or [])
            costs = {name: result[name] for name in names[1:]
                     if isinstance(result.get(name), (int, float)) and math.isfinite(result[name])}
            return TrialState.PRUNED, None, {
                "fail_reason": f"stopped by the Ray scheduler at epoch {epoch}", "stopped_at_epoch": epoch,
                STOP_REASON_ATTR: StopReason.SCHEDULER.value,
                CURVE_ATTR: curve, COSTS_ATTR: list(costs.values()) if len(costs) == len(names) - 1 else None,
                "metrics": {**costs, "stopped_at_epoch": epoch, "epoch_dice": curve}}
        outcome = RayOutcome.from_json(result[OUTCOME_KEY])
        state, attrs = TrialState(outcome.state), dict(outcome.attrs)
        if state != TrialState.COMPLETE:
            return state, None, attrs
        try:
            values = job.objectives.values(attrs["metrics"])
        except (KeyError, TypeError, ValueError) as problem:
            return TrialState.FAIL, None, {**attrs, "fail_reason": f"no objective values: {problem}",
                                           FAILURE_KIND_ATTR: FailureKind.NO_OBJECTIVES.value}
        if not all(math.isfinite(v) for v in values):
            return TrialState.FAIL, None, {**attrs, "fail_reason": f"non-finite objective values {values}",
                                           FAILURE_KIND_ATTR: FailureKind.NO_OBJECTIVES.value}
        return state, values, attrs

    def _number_checkpoint(self, attrs: dict[str, Any], number: int) -> dict[str, Any]:
        """Rename ``trials/ray_<id>`` to ``trials/trial_NNNN`` with the number the study will give
        it: the driver is the only writer of this study while Ray runs, so the number is known."""
        checkpoint = attrs.get("checkpoint")
        if not checkpoint:
            return attrs
        target = Path("trials") / f"trial_{number:04d}"
        source, destination = self.job.out / checkpoint, self.job.out / target
        if source.is_dir() and not destination.exists():
            try:
                os.replace(source, destination)
                attrs = {**attrs, "checkpoint": target.as_posix()}
            except OSError:
                pass  # the ray_<id> name stays; the attr points at it
        return attrs

    def _count(self, state: TrialState, attrs: dict[str, Any], number: int) -> None:
        early = attrs.get("stopped_at_epoch") is not None or attrs.get(STOP_REASON_ATTR) in (
            StopReason.EARLY_STOPPED, StopReason.SCHEDULER)
        self.failures += state == TrialState.FAIL
        self.pruned_in_a_row = self.pruned_in_a_row + 1 if state == TrialState.PRUNED and not early else 0
        self.complete = count_finished(self.study)
        records = study_records(self.study)
        last = next(record for record in records if record.number == number)
        shown = f"dice {last.dice:.3f}" if last.dice is not None else (last.fail_reason or "")
        member = f" {attrs[FAMILY_ATTR]}" if attrs.get(FAMILY_ATTR) else ""
        print(f"trial {last.number:>3} (ray {attrs[RAY_TRIAL_ATTR]}{member}) {state.value}: {shown}", flush=True)
        self.live.update(records)


_SESSION: _Session | None = None  # set by run_ray_search while Tune runs


class StudySearcher(_Searcher):
    """Between Tune and ``ConcurrencyLimiter(OptunaSearch)``: records finished trials in the
    study, corrects what the inner searcher is told, skips duplicates, and ends the search.

    It returns ``FINISHED`` once the study holds ``job.trials`` complete trials (or failures,
    pruned-in-a-row or ``job.timeout`` end it; running trials finish, as ``--timeout`` promises),
    and ``None`` (not now) while the running trials could still complete it. ``family``: the
    warm-start trials (``queued_start``) whose points the inner searcher proposes first.
    """

    def __init__(self, searcher: Any, family: list[dict[str, Any]] | None = None) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.params: dict[str, dict[str, Any]] = {}
        self.running: set[str] = set()
        self.pending: list[dict[str, Any]] = list(family or [])  # family members not proposed yet
        self.members: dict[str, dict[str, Any]] = {}  # Ray trial id -> the family member it runs

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        session = _session()
        reason = session.stop_reason(len(self.running))
        if reason == "wait":
            return None
        if reason is not None:
            session.stopped, session.finished = (None if reason == "done" else reason), True
            return _Searcher.FINISHED
        config = self.searcher.suggest(trial_id)
        if config is None or config == _Searcher.FINISHED:
            return config
        self.params[trial_id] = dict(config)
        self.running.add(trial_id)
        label = {}
        member = next((m for m in self.pending if m["params"] == config), None)
        if member is not None:
            self.pending.remove(member)
            self.members[trial_id] = member
            label = {key: member["attrs"][key] for key in (FAMILY_ATTR,) if key in member["attrs"]}
        return {"params": dict(config), "duplicate_of": session.duplicate_of(dict(config)), **label}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.running.discard(trial_id)
        recorded = _session().record(trial_id, self.params.get(trial_id), result, error, self.members.get(trial_id))
        state, values = recorded if recorded else (TrialState.PRUNED, None)
        metrics = self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
        told = dict(zip(metrics, values)) if state == TrialState.COMPLETE and values else None
        self.searcher.on_trial_complete(trial_id, result=told, error=state == TrialState.FAIL)

    def get_state(self) -> dict:
        return {"params": dict(self.params), "running": set(self.running), "pending": list(self.pending),
                "members": dict(self.members)}

    def set_state(self, state: dict) -> None:
        self.params, self.running = dict(state["params"]), set(state["running"])
        self.pending, self.members = list(state.get("pending", [])), dict(state.get("members", {}))

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def _session() -> _Session:
    if _SESSION is None:
        raise RuntimeError("the Ray searcher runs only inside run_ray_search")
    return _SESSION
