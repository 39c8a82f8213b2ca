"""Parameter importance from Optuna's evaluators, returned as a plain dict for the report.

An adapter like ``optuna_study``: the only other module that imports Optuna. Importance needs at
least two finished trials whose parameters vary; anything less is reported as a note, never raised.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

MIN_TRIALS = 2
# target name -> value of a finished trial (values = (Dice, MACs)); lower is better, as PED-ANOVA
# assumes (fANOVA only looks at variance, so the sign does not matter to it)
TARGETS = {"Dice": lambda t: -t.values[0], "log10 MACs": lambda t: math.log10(max(t.values[1], 1.0))}


def _evaluator(seed: int) -> tuple[Any, str]:
    """fANOVA when scikit-learn is installed (it needs its random forest), else PED-ANOVA (no extra deps)."""
    # optuna.importance pulls scikit-learn, SciPy and pandas: loaded here, not with the adapter's facade
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    try:
        import sklearn  # noqa: F401
    except ImportError:
        return PedAnovaImportanceEvaluator(), "PED-ANOVA ({}; fANOVA needs scikit-learn, not installed)"
    return FanovaImportanceEvaluator(seed=seed), f"fANOVA ({{}}, seed {seed})"


def param_importances(study: optuna.Study, *, seed: int = 0) -> dict[str, Any]:
    """``{"evaluator", "n_trials", "targets": {target: {param: share}}, "note"}``; shares of a target sum to 1."""
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values and all(math.isfinite(v) for v in t.values)]
    evaluator, label = _evaluator(seed)
    out: dict[str, Any] = {"evaluator": label.format(f"Optuna {optuna.__version__}"),
                           "n_trials": len(finished), "targets": {}, "note": None}
    if len(finished) < MIN_TRIALS:
        out["note"] = f"not enough trials ({len(finished)} finished, need {MIN_TRIALS} with varied parameters)"
        return out
    if not any(t.params != finished[0].params for t in finished):
        out["note"] = f"not enough trials (all {len(finished)} finished trials share the same parameters)"
        return out
    from optuna.importance import get_param_importances  # see _evaluator: not with the facade

    problems = []
    for name, target in TARGETS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = get_param_importances(study, evaluator=evaluator,
                                               target=target, normalize=True)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as error:
            problems.append(f"{name}: {error}")
            continue
        if values:
            out["targets"][name] = {k: float(v) for k, v in values.items()}
    if problems:
        out["note"] = "not enough trials for " + "; ".join(problems)
    return out


def importances_from_storage(storage: str, study_name: str) -> dict[str, Any]:
    """Load the study read-only-ish (no heartbeat, no writes) and compute its importances."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from nas.engine.optuna_adapter.study import make_storage

    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    return param_importances(study)
