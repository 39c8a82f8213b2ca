"""What another engine (the Ray adapter) needs from the Optuna study, so only this package imports Optuna.

Replaying stored params through the space (``ReplaySuggest``) gives the spec and the Optuna
distributions that ``add_trial`` needs; ``record_trial`` adds a trial that ran elsewhere;
``warm_copy`` and ``open_for_peers`` hand out read-only views of the study; ``queued_start`` lists
the start trials (warm start, cost strata) another engine is to run, and ``record_trial`` fills them in place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search_spaces import get_space
from search_spaces.overrides import RestrictedSuggest, Restriction

from nas.engine.optuna_adapter.study import FAMILY_ATTR, JOURNAL_SCHEME, START_ATTRS, STRATUM_ATTR, make_storage
from nas.results.outcome import TrialState as State


class ReplaySuggest:
    """A ``Suggest`` answering from stored params, recording each call as an Optuna distribution.

    Replaying ``sample_spec`` through it (under the same ``RestrictedSuggest``) rebuilds the spec
    of a Ray config and the distributions ``optuna.trial.create_trial`` needs.
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self.distributions: dict[str, BaseDistribution] = {}

    def _value(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self.params:
            raise KeyError(f"the Ray config lacks the parameter {name!r} (another space or restriction?)")
        self.distributions[name] = distribution
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._value(name, IntDistribution(low, high, step=step, log=log)))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return float(self._value(name, FloatDistribution(low, high, step=step, log=log)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._value(name, CategoricalDistribution(list(choices)))


def replay(space_name: str, restriction: Restriction, params: dict[str, Any]):
    """(spec, distributions, fixed params) of the architecture ``params`` describe."""
    space = get_space(space_name)
    recorder = ReplaySuggest(params)
    suggest = RestrictedSuggest(recorder, restriction) if restriction else recorder
    spec = space.sample_spec(suggest)
    return spec, recorder.distributions, dict(getattr(suggest, "fixed", {}))


def trials_with_attr(study: optuna.Study, key: str, value: Any) -> list[tuple[State, tuple[float, ...] | None]]:
    """(state, values) of every trial whose user attr ``key`` equals ``value``, in order."""
    return [(State(t.state.name), tuple(t.values) if t.values else None)
            for t in study.get_trials(deepcopy=False) if t.user_attrs.get(key) == value]


def complete_with_params(study: optuna.Study, params: dict[str, Any]) -> int | None:
    """The number of a finished trial with exactly these params (a duplicate), if any."""
    return next((t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.params == params), None)


def trial_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False))


def queued_start(study: optuna.Study) -> list[dict[str, Any]]:
    """The start trials (family warm start, cost strata) still WAITING in the study, in order:
    ``number``, ``params`` (the point) and ``attrs`` (the user attrs that label it)."""
    return [{"number": t.number, "params": {**t.system_attrs.get("fixed_params", {}), **t.params},
             "attrs": {key: t.user_attrs[key] for key in START_ATTRS if key in t.user_attrs}}
            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if t.user_attrs.get(FAMILY_ATTR) or t.user_attrs.get(STRATUM_ATTR)]


def record_trial(study: optuna.Study, state: State, values: Sequence[float] | None, params: dict[str, Any],
                 distributions: dict[str, Any], user_attrs: dict[str, Any], waiting: int | None = None) -> None:
    """Add a trial that ran outside Optuna's loop, with its outcome, to the study.
    ``waiting``: the number of the queued (WAITING) trial it ran for, filled in place so a warm-start
    trial keeps its number and is never queued again (a new trial when that one is no longer waiting)."""
    kept = {k: v for k, v in params.items() if k in distributions}
    attrs = {k: v for k, v in user_attrs.items() if v is not None}
    queued = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   if t.number == waiting), None)
    storage = study._storage
    if queued is not None and storage.set_trial_state_values(queued._trial_id, TrialState.RUNNING):
        for name, value in kept.items():
            storage.set_trial_param(queued._trial_id, name, distributions[name].to_internal_repr(value),
                                    distributions[name])
        for key, value in attrs.items():
            storage.set_trial_user_attr(queued._trial_id, key, value)
        storage.set_trial_state_values(queued._trial_id, TrialState[State(state).value],
                                       list(values) if values else None)
        return
    study.add_trial(optuna.trial.create_trial(
        state=TrialState[State(state).value], values=list(values) if values else None, params=kept,
        distributions=distributions, user_attrs=attrs))


def warm_copy(study: optuna.Study, directions: list[str]) -> optuna.storages.BaseStorage:
    """An in-memory copy of the study's complete trials: what a fresh sampler learns from."""
    storage = optuna.storages.InMemoryStorage()
    warm = optuna.create_study(storage=storage, study_name="nas-ray", directions=directions)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.params and trial.values:
            warm.add_trial(optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                                     values=trial.values))
    return storage


def open_for_peers(storage: str, study_name: str) -> optuna.Study | None:
    """The study, for early-stopping peers, if this process can read it (not on another machine)."""
    files = {"sqlite:///": len("sqlite:///"), JOURNAL_SCHEME: len(JOURNAL_SCHEME) - 1}  # as make_storage reads them
    for scheme, start in files.items():  # a missing file would be created empty on this machine
        if storage.startswith(scheme) and not Path(storage[start:]).exists():
            return None
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=study_name, storage=make_storage(storage), sampler=None)
    except Exception:  # noqa: BLE001 - no peers means no early stopping, never a failed trial
        return None
