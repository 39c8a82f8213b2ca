"""The Ray trainable: one trial of the policy in a Ray worker, reporting to Tune after every epoch.

``RayPort`` answers the policy from the Ray config (params, the driver's duplicate check, the family
member a warm-start trial runs) and from the study file when this worker can read it (early-stopping
peers); the outcome travels to the driver in the last report as a ``RayOutcome``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas.costs.constraints import Verdict
from nas.engine.early_stop import RungPoint
from nas.engine.job import SearchJob
from nas.engine.optuna_adapter.foreign import ReplaySuggest, open_for_peers, trials_with_attr
from nas.engine.optuna_adapter.search import COSTS_ATTR, CURVE_ATTR, rung_peers
from nas.engine.optuna_adapter.study import FAMILY_ATTR, FIXED_PARAMS_ATTR, VIOLATION_ATTR
from nas.engine.policy import TrialStopped, run_policy
from nas.engine.run_log import append_traceback
from nas.engine.trial import failure_kind, failure_reason
from nas.results.outcome import FAILURE_KIND_ATTR, STOP_REASON_ATTR, TrialState

RAY_TRIAL_ATTR = "ray_trial_id"
OUTCOME_KEY = "nas_outcome"  # in a trial's last report only when the trainable ran to its end
RECORDED = "RECORDED"  # outcome of a restored trial the study already holds: nothing to add


@dataclass(frozen=True)
class RayOutcome:
    """How a Ray trial ended (``state``: a TrialState value or RECORDED) and what to store on it."""

    state: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "RayOutcome":
        return cls(**json.loads(text))


class RayPort:
    """``nas.engine.policy.TrialPort`` inside a Ray worker."""

    def __init__(self, job: SearchJob, config: dict[str, Any], trial_id: str, study: Any, report) -> None:
        self.job, self.config, self.study, self.report = job, config, study, report
        self.number, self.suggest = trial_id, ReplaySuggest(config["params"])
        self.checkpoint = Path("trials") / f"ray_{trial_id}"
        self.extra = {RAY_TRIAL_ATTR: trial_id}
        self.family = config.get(FAMILY_ATTR)  # a warm-start trial: this family member
        if self.family:
            self.extra[FAMILY_ATTR] = self.family
        self.attrs: dict[str, Any] = {}
        self.curve: list[float] = []
        self.costs: list[float] = []

    def fixed_params(self, fixed: dict[str, Any]) -> None:
        self.attrs[FIXED_PARAMS_ATTR] = dict(fixed)

    def constraint_violations(self, verdict: Verdict) -> None:
        self.attrs[VIOLATION_ATTR] = list(verdict.violations.values())

    def duplicate_of(self) -> int | None:
        return self.config.get("duplicate_of")

    def costs_known(self, costs: list[float]) -> None:
        self.costs = list(costs)
        self.attrs[COSTS_ATTR] = list(costs)

    def epoch_done(self, curve: list[float], train_seconds: float) -> None:
        self.curve = list(curve)
        self.report({**self.progress(len(curve)), "val_dice": curve[-1]})

    def rung_peers(self, epoch: int) -> list[RungPoint] | None:
        """None (never stopped early) for a family member, as on the Optuna path."""
        return None if self.study is None or self.family else rung_peers(self.study, -1, epoch)

    def progress(self, epoch: int) -> dict[str, Any]:
        """Tune wants every searcher metric in every report: costs not measured yet are NaN."""
        names = self.job.objectives.metric_keys()
        finite = [d for d in self.curve if d is not None and math.isfinite(d)]
        return {"epoch": epoch, names[0]: max(finite) if finite else math.nan, CURVE_ATTR: list(self.curve),
                **{name: self.costs[i] if i < len(self.costs) else math.nan for i, name in enumerate(names[1:])}}


def ray_trial(config: dict[str, Any], job: SearchJob, storage: str, study_name: str) -> None:
    """Train one architecture through the trial policy; the last report carries the outcome."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    started = time.perf_counter()
    study = open_for_peers(storage, study_name)  # None: no early stopping, no resume check
    port = RayPort(job, config, trial_id, study, tune.report)

    def finish(state: str, **attrs: Any) -> None:
        attrs = {"device_seconds": time.perf_counter() - started, CURVE_ATTR: list(port.curve), **port.attrs,
                 **attrs}
        tune.report({**port.progress(len(port.curve)), OUTCOME_KEY: RayOutcome(state, attrs).to_json()})

    if study is not None and trials_with_attr(study, RAY_TRIAL_ATTR, trial_id):
        # Tune restored a trial that finished after its last saved state: the study has it already.
        tune.report({**port.progress(0), OUTCOME_KEY: RayOutcome(RECORDED).to_json()})
        return
    try:
        done = run_policy(job, port, log=lambda text: None)
    except TrialStopped as stop:
        extra = {"stopped_at_epoch": stop.epoch} if stop.epoch is not None else {}
        finish(TrialState.PRUNED.value, fail_reason=stop.message, metrics=stop.measured or None,
               **{STOP_REASON_ATTR: stop.reason.value}, **extra)
        return
    except Exception as error:  # noqa: BLE001 - failure isolation: the search goes on
        append_traceback(job.out, f"ray trial {trial_id}", error)  # the driver prints the one-line reason
        finish(TrialState.FAIL.value, fail_reason=failure_reason(error)[:500],
               **{FAILURE_KIND_ATTR: failure_kind(error).value})
        return
    finish(TrialState.COMPLETE.value, **done.attrs())
