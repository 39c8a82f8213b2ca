"""The Optuna adapter: resume counting, failure isolation, duplicate skipping, records."""
from __future__ import annotations

import math

import optuna
import pytest

from nas.engine.optuna_adapter.study import (MAX_DUPLICATES_IN_A_ROW, VIOLATION_ATTR, StudyConfigError,
                                             count_finished, duplicate_of, open_study, record_fixed_params,
                                             record_violations, run_study, study_records)
from nas.engine.policy import TrialStopped
from nas.results.outcome import StopReason


def skip_if_duplicate(study, trial):
    """What the trial policy does with the adapter's answer."""
    original = duplicate_of(study, trial)
    if original is not None:
        raise TrialStopped(StopReason.DUPLICATE, f"duplicate of trial {original}")


def apply_verdict(trial, verdict):
    record_violations(trial, verdict)
    if not verdict.feasible:
        raise TrialStopped(StopReason.INFEASIBLE, verdict.reason, measured=verdict.measured)

CONFIG = {"space": "resunet", "epochs": 1}


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def fake_trial(study, choices=tuple(range(100)), fail_when=lambda value: False):
    def run(trial):
        value = trial.suggest_categorical("width", list(choices))
        skip_if_duplicate(study, trial)
        if fail_when(value):
            raise RuntimeError(f"width {value} does not fit")
        return {"metrics": {"dice": 1 / (1 + value), "macs": value * 10}, "spec": {"width": value}}
    return run


def test_runs_until_enough_trials_finished_and_resume_adds_none(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    run_study(study, 4, fake_trial(study))
    assert count_finished(study) == 4
    before = len(study.trials)  # finished ones plus any pruned duplicates
    again = open_study(storage, "s", seed=0, config=CONFIG)
    run_study(again, 4, fake_trial(again))
    assert len(again.trials) == before
    run_study(again, 6, fake_trial(again))
    assert count_finished(again) == 6


def test_a_failing_trial_is_recorded_and_the_search_goes_on(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    run_study(study, 5, fake_trial(study, fail_when=lambda v: v % 2 == 0), max_failures=50)
    records = study_records(study)
    failed = [r for r in records if r.state == "FAIL"]
    assert count_finished(study) == 5
    assert failed and all("RuntimeError: width" in r.fail_reason for r in failed)
    assert all(r.dice is None and r.checkpoint is None for r in failed)


def test_a_search_that_keeps_failing_stops(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    run_study(study, 5, fake_trial(study, fail_when=lambda v: True), max_failures=3)
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3


def test_duplicates_are_skipped_and_an_exhausted_space_stops(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    run_study(study, 5, fake_trial(study, choices=(1, 2)))
    assert count_finished(study) == 2
    pruned = [r for r in study_records(study) if r.state == "PRUNED"]
    assert len(pruned) >= MAX_DUPLICATES_IN_A_ROW
    assert all(r.fail_reason.startswith("duplicate of trial") for r in pruned)


def test_resuming_with_other_settings_is_refused(storage):
    open_study(storage, "s", seed=0, config=CONFIG)
    with pytest.raises(StudyConfigError, match="epochs: 1 -> 2"):
        open_study(storage, "s", seed=0, config={**CONFIG, "epochs": 2})


def test_records_carry_values_and_metrics(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    run_study(study, 2, fake_trial(study))
    for record in study_records(study):
        width = record.params["width"]
        assert record.state == "COMPLETE" and record.spec == {"width": width}
        assert math.isclose(record.dice, 1 / (1 + width)) and record.macs == width * 10


def test_a_trial_left_running_by_a_dead_process_does_not_count(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    study.ask()  # never told: as if the process was killed mid-trial
    assert count_finished(study) == 0
    run_study(study, 1, fake_trial(study))
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "RUNNING"] and count_finished(study) == 1


# --- constraints before training (nas.costs.constraints verdicts stored by the adapter) ---------------

def constrained_trial(study, limit=20):
    """Widths above ``limit`` are infeasible: pruned before 'training', with the violation stored."""
    from nas.costs.constraints import Constraints, check

    def run(trial):
        value = trial.suggest_int("width", 0, 99)
        verdict = check({"params": value + 1}, Constraints(max_params=limit + 1))
        apply_verdict(trial, verdict)
        skip_if_duplicate(study, trial)
        return {"metrics": {"dice": value / 100, "macs": value * 10}, "spec": {"width": value}}
    return run


def test_infeasible_trials_are_pruned_with_reason_and_the_sampler_learns_from_them(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    run_study(study, 4, constrained_trial(study))
    records = {r.number: r for r in study_records(study)}
    assert count_finished(study) == 4
    for trial in study.trials:
        width = trial.params["width"]
        assert trial.user_attrs[VIOLATION_ATTR] == [pytest.approx((width + 1) / 21 - 1)]
        assert trial.constraints == {"params": pytest.approx((width + 1) / 21 - 1)}  # what TPE reads
        if width > 20:
            assert trial.state.name == "PRUNED"
            assert records[trial.number].fail_reason == f"infeasible: {width + 1} params > --max-params 21 params"
            assert records[trial.number].measure("params") == width + 1  # the measured costs are kept
        elif trial.state.name == "COMPLETE":
            assert records[trial.number].fail_reason is None
    # After the 5 random start-up trials TPE proposes feasible widths far above the 21 % of chance.
    later = [t.params["width"] for t in study.trials[5:]]
    assert len(later) >= 5 and sum(w <= 20 for w in later) / len(later) > 2 * 0.21


def test_constraints_no_spec_meets_stop_the_search(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)
    stopped = run_study(study, 3, constrained_trial(study, limit=-1 + 1e-9), max_pruned_in_a_row=6)
    assert stopped == "pruned_in_a_row" and len(study.trials) == 6
    assert all(r.state == "PRUNED" and r.fail_reason.startswith("infeasible") for r in study_records(study))


def test_fixed_params_join_the_record_params(storage):
    study = open_study(storage, "s", seed=0, config=CONFIG)

    def run(trial):
        record_fixed_params(trial, {"depth": 4})
        return fake_trial(study)(trial)

    run_study(study, 1, run)
    record = study_records(study)[0]
    assert record.params["depth"] == 4 and "width" in record.params
    assert "depth" not in study.trials[0].params  # never asked from the sampler
