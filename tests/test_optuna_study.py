"""The Optuna adapter: resume counting, failure isolation, duplicate skipping, records."""
from __future__ import annotations

import math

import optuna
import pytest

from nas.optuna_study import (MAX_DUPLICATES_IN_A_ROW, StudyConfigError, count_finished, open_study,
                              run_study, skip_if_duplicate, study_records)

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
