"""Thin Optuna adapter: open/resume the study, drive trials, turn frozen trials into records.

Everything Optuna-specific lives here; a trial reaches the core only as a ``Suggest``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from .records import TrialRecord

CONFIG_ATTR = "search_config"
DIRECTIONS = ("maximize", "minimize")  # (Dice, MACs)
HEARTBEAT_SECONDS, GRACE_SECONDS = 20, 60

# Heartbeats, fail_stale_trials and multivariate TPE are marked experimental; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class StudyConfigError(ValueError):
    """The run directory holds a study made with other settings; resuming would mix results."""


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB storages get a heartbeat, so a trial of a killed process is later marked failed."""
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=GRACE_SECONDS)
    return optuna.storages.get_storage(url)


def open_study(storage_url: str, study_name: str, seed: int, config: dict[str, Any]) -> optuna.Study:
    """Create the study or load it; a loaded study must have been made with the same ``config``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)
    study = optuna.create_study(storage=make_storage(storage_url), study_name=study_name,
                                directions=list(DIRECTIONS), sampler=sampler, load_if_exists=True)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, config)
    elif stored != config:
        changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        details = ", ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise StudyConfigError(
            f"study {study_name!r} was made with other settings ({details}); "
            "use the same settings to resume or a new --out/--study-name"
        )
    optuna.storages.fail_stale_trials(study)
    return study


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


TrialFunction = Callable[[optuna.Trial], dict[str, Any]]
MAX_DUPLICATES_IN_A_ROW = 25  # pruned trials in a row (duplicates or infeasible) that end a search
FIXED_PARAMS_ATTR = "fixed_params"
VIOLATION_ATTR = "constraint_violation"


def record_fixed_params(trial: optuna.Trial, fixed: dict[str, Any]) -> None:
    """Dimensions fixed by the restriction never reach the sampler; keep them beside its params."""
    if fixed:
        trial.set_user_attr(FIXED_PARAMS_ATTR, dict(fixed))


def apply_verdict(trial: optuna.Trial, verdict: Any) -> None:
    """Store a ``nas.constraints.Verdict`` on the trial; prune it, with its reason, if infeasible.

    Every checked trial gets its violations (feasible ones too): Optuna's TPE reads them through
    ``trial.constraints`` and pushes sampling away from infeasible regions. ``set_constraint`` is
    the Optuna 5 form of the deprecated ``TPESampler(constraints_func=...)``; the list also lives
    in the ``constraint_violation`` user attr, in ``Constraints.limits()`` order.
    """
    for key, value in verdict.violations.items():
        trial.set_constraint(key, value)
    trial.set_user_attr(VIOLATION_ATTR, list(verdict.violations.values()))
    if not verdict.feasible:
        trial.set_user_attr("fail_reason", verdict.reason[:500])
        trial.set_user_attr("metrics", verdict.measured)  # the costs that made it infeasible
        raise optuna.TrialPruned(verdict.reason)


def skip_if_duplicate(study: optuna.Study, trial: optuna.Trial) -> None:
    """Prune a trial whose sampled params equal a finished trial's: same spec, same seed, same result.

    Call it once the params are sampled, before training; the pruned trial records which
    trial it repeats and does not count as finished.
    """
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.params == trial.params:
            trial.set_user_attr("fail_reason", f"duplicate of trial {other.number}")
            raise optuna.TrialPruned(f"duplicate of trial {other.number}")


def run_study(study: optuna.Study, n_finished: int, run_trial: TrialFunction,
              max_failures: int = 5, max_pruned_in_a_row: int = MAX_DUPLICATES_IN_A_ROW) -> str | None:
    """Run trials until ``n_finished`` have completed (resume-aware) or ``max_failures`` fail.

    ``max_pruned_in_a_row`` pruned trials in a row mean the sampler keeps proposing what was
    already trained (a small or heavily fixed space) or what violates the constraints (limits no
    architecture meets): the search stops instead of spinning.

    ``run_trial(trial)`` returns the attributes to store (``metrics`` holds dice and macs); any
    exception marks the trial failed with its reason, and the search goes on.

    Returns why the search stopped early (``"failures"`` or ``"pruned_in_a_row"``), or None.
    """
    if count_finished(study) >= n_finished:
        return None
    failures = duplicates_in_a_row = 0
    stopped: str | None = None

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        try:
            attrs = run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:500])
            raise
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return attrs["metrics"]["dice"], float(attrs["metrics"]["macs"])

    def stop_on_failures(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal failures, duplicates_in_a_row, stopped
        duplicates_in_a_row = duplicates_in_a_row + 1 if trial.state == TrialState.PRUNED else 0
        if trial.state == TrialState.FAIL:
            failures += 1
        if failures >= max_failures or duplicates_in_a_row >= max_pruned_in_a_row:
            stopped = "failures" if failures >= max_failures else "pruned_in_a_row"
            study.stop()

    study.optimize(
        objective, n_trials=None,
        callbacks=[MaxTrialsCallback(n_finished, states=(TrialState.COMPLETE,)), stop_on_failures],
        catch=(Exception,), gc_after_trial=True,
    )
    return stopped


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_record(trial: FrozenTrial) -> TrialRecord:
    metrics = trial.user_attrs.get("metrics") or {}
    complete = trial.state == TrialState.COMPLETE
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        params={**trial.user_attrs.get(FIXED_PARAMS_ATTR, {}), **trial.params},
        spec=trial.user_attrs.get("spec"),
        dice=_finite(trial.values[0]) if complete and trial.values else None,
        macs=metrics.get("macs"),
        flops=metrics.get("flops"),
        param_count=metrics.get("params"),
        latency_ms=metrics.get("latency_ms"),
        latency_device=metrics.get("latency_device"),
        seconds=metrics.get("seconds"),
        best_epoch=metrics.get("best_epoch"),
        epoch_dice=tuple(metrics.get("epoch_dice") or ()),
        fail_reason=trial.user_attrs.get("fail_reason"),
        checkpoint=trial.user_attrs.get("checkpoint") if complete else None,
        metrics=dict(metrics),
    )


def study_records(study: optuna.Study) -> list[TrialRecord]:
    return [to_record(trial) for trial in study.get_trials(deepcopy=False)]
