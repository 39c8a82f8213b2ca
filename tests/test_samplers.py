"""Every ``--sampler`` builds, and Optuna's GPSampler really models the space: categorical dimensions,
two objectives and the constraint violations the policy records (``trial.set_constraint``)."""
from __future__ import annotations

import json

import optuna
import pytest
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from test_run_search import FIX_FLAGS

from nas.costs.constraints import Verdict
from nas.engine.job import SAMPLERS, sampler_problem
from nas.engine.objectives import Objectives
from nas.engine.optuna_adapter.study import make_sampler, open_study, record_violations
from search_spaces import get_space

GP_KEY = "gp:relative_params:0"  # where GPSampler shares a proposal made from its model (not at random)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_builds_and_a_bad_name_is_named(name):
    assert sampler_problem(name) is None
    assert isinstance(make_sampler(name, 0), optuna.samplers.BaseSampler)
    assert sampler_problem("bayes") == f"--sampler must be one of {', '.join(SAMPLERS)}, got 'bayes'"
    with pytest.raises(ValueError, match="unknown sampler 'bayes'"):
        make_sampler("bayes", 0)


def test_gp_models_the_categorical_space_with_two_objectives_and_a_constraint(tmp_path):
    space = get_space("resunet")
    study = open_study(f"sqlite:///{tmp_path / 'study.db'}", "gp", 0, {"space": "resunet"}, Objectives(), "gp")
    limit = 600

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        spec = space.sample_spec(trial)  # the real space: categorical, integer and conditional dimensions
        cost = sum(spec.encoder_widths) * spec.blocks_per_stage  # a stand-in for MACs: no model is built
        record_violations(trial, Verdict(measured={}, violations={"macs": cost / limit - 1}, reasons=()))
        if cost > limit:  # as the policy does: an infeasible trial is pruned before training
            raise optuna.TrialPruned()
        return 0.5 + 0.2 * (spec.block == "basic") + 0.1 * (spec.norm == "group") + cost / 10_000, float(cost)

    study.optimize(objective, n_trials=60, callbacks=[MaxTrialsCallback(6, states=(TrialState.COMPLETE,))])
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    modelled = [t for t in study.get_trials() if GP_KEY in t.system_attrs]
    numbers = [t.number for t in modelled]  # every trial after 5 random start-up trials finished, none before
    assert numbers == list(range(complete[4].number + 1, complete[5].number + 1))
    proposed = modelled[0].system_attrs[GP_KEY]
    assert {"block", "norm", "activation", "depth"} <= set(json.loads(proposed))  # categorical and integer alike
    assert all(set(t.constraints) == {"macs"} for t in complete)


@pytest.mark.slow
def test_a_tiny_constrained_gp_search_runs_end_to_end(tmp_path, capsys):
    from conftest import call

    from nas.cli.search import main

    out = tmp_path / "gp"
    code, stdout, err = call(capsys, main, "--sampler", "gp", "--trials", "3", "--epochs", "1", "--image-size", "32",
                             "--patches-per-epoch", "16", "--device", "cpu", "--early-stop", "none",
                             "--max-params", "50k", *FIX_FLAGS, "--out", out)
    assert code == 0, err
    assert "sampler gp" in stdout
    study = optuna.load_study(study_name="resunet", storage=f"sqlite:///{out / 'study.db'}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3 and all(set(t.constraints) == {"params"} for t in complete)


def test_gp_without_scipy_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a))
    assert sampler_problem("gp") == "--sampler gp needs scipy, which is not installed: pip install .[gp]"
