"""The search engine without training: early stopping on constructed curves, objectives, failure
isolation, lost-trial recovery, timeouts and the live view."""
from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas.engine.early_stop import RungPoint, RungPolicy, rung_dice, rung_verdict
from nas.engine.objectives import Objectives
from nas.engine.optuna_adapter.study import (WORKER_ATTR, count_finished, default_storage, open_study, recover_lost_trials,
                              run_study, study_records)
from nas.engine.policy import TrialStopped
from nas.results.outcome import StopReason
from nas.results.records import TrialRecord
from nas.engine.job import LiveView
from nas.train.trainer import TrainingError

CONFIG = {"space": "resunet", "epochs": 1}
POLICY = RungPolicy(rungs=(1, 3), eta=3, min_peers=3)


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


# --- cost-aware successive halving -------------------------------------------------------------

def test_rungs_follow_powers_of_eta_below_the_last_epoch():
    assert RungPolicy.for_epochs(10).rungs == (1, 3, 9)
    assert RungPolicy.for_epochs(3).rungs == (1,)
    assert RungPolicy.for_epochs(1).rungs == ()
    assert RungPolicy.for_epochs(30, eta=2).rungs == (1, 2, 4, 8, 16)


def test_rung_dice_is_the_best_so_far_and_none_before_the_rung():
    assert rung_dice([0.2, 0.5, 0.4], 3) == 0.5
    assert rung_dice([0.2, 0.5, 0.4], 1) == 0.2
    assert rung_dice([0.2], 3) is None


def test_a_clearly_dominated_expensive_trial_is_stopped():
    cheap_and_good = [RungPoint(i, 0.8 + i / 100, (1e6,)) for i in range(4)]
    reason = rung_verdict(POLICY, 1, [0.3], (5e6,), cheap_and_good)
    assert reason is not None and "early-stopped at epoch 1" in reason and "4 of 4" in reason


def test_a_good_trial_goes_on():
    peers = [RungPoint(i, 0.5, (1e6,)) for i in range(4)]
    assert rung_verdict(POLICY, 1, [0.7], (5e6,), peers) is None


def test_only_cheaper_peers_count_so_a_cheap_trial_always_finishes():
    expensive_and_better = [RungPoint(i, 0.9, (9e6,)) for i in range(10)]
    assert rung_verdict(POLICY, 1, [0.1], (1e6,), expensive_and_better) is None


def test_every_cost_must_be_no_higher_for_a_peer_to_count():
    # cheaper in MACs but slower: not a peer, so it cannot stop the trial
    mixed = [RungPoint(i, 0.9, (1e6, 50.0)) for i in range(5)]
    assert rung_verdict(POLICY, 1, [0.1], (5e6, 10.0), mixed) is None
    both = [RungPoint(i, 0.9, (1e6, 5.0)) for i in range(5)]
    assert rung_verdict(POLICY, 1, [0.1], (5e6, 10.0), both) is not None


def test_no_decision_without_enough_peers_or_off_a_rung():
    peers = [RungPoint(i, 0.9, (1e6,)) for i in range(2)]
    assert rung_verdict(POLICY, 1, [0.1], (5e6,), peers) is None  # 2 < min_peers
    many = [RungPoint(i, 0.9, (1e6,)) for i in range(6)]
    assert rung_verdict(POLICY, 2, [0.1, 0.1], (5e6,), many) is None  # epoch 2 is not a rung


def test_the_top_share_among_cheaper_peers_goes_on():
    # 5 cheaper peers: the top ceil(6/3) = 2 places go on; beaten by exactly one -> second -> goes on
    peers = [RungPoint(0, 0.9, (1.0,))] + [RungPoint(i, 0.1, (1.0,)) for i in range(1, 5)]
    assert rung_verdict(POLICY, 1, [0.5], (2.0,), peers) is None
    peers[1] = RungPoint(1, 0.8, (1.0,))
    assert rung_verdict(POLICY, 1, [0.5], (2.0,), peers) is not None


# --- objectives ----------------------------------------------------------------------------------

def test_objectives_parse_and_pick_values():
    objectives = Objectives.parse("dice, latency ,memory")
    assert objectives.names == ("dice", "latency", "memory")
    assert objectives.directions == ["maximize", "minimize", "minimize"]
    metrics = {"dice": 0.7, "latency_ms": 3.0, "train_memory_mb": 12.0, "macs": 5}
    assert objectives.values(metrics) == (0.7, 3.0, 12.0)
    assert objectives.cost_values(metrics) == (3.0, 12.0)


@pytest.mark.parametrize("text", ["macs,dice", "dice", "dice,macs,params,latency", "dice,flops", "dice,macs,macs"])
def test_bad_objectives_are_refused(text):
    with pytest.raises(ValueError):
        Objectives.parse(text)


def test_a_study_refuses_other_objectives_on_resume(storage):
    from nas.engine.optuna_adapter.study import StudyConfigError

    open_study(storage, "s", 0, CONFIG)
    with pytest.raises(StudyConfigError, match="objectives"):
        open_study(storage, "s", 0, CONFIG, Objectives.parse("dice,macs,latency"))


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "nsga3", "random"])
def test_three_objectives_with_every_sampler(tmp_path, sampler):
    objectives = Objectives.parse("dice,macs,latency")
    study = open_study(f"sqlite:///{tmp_path / 'db'}", "s", 0, CONFIG, objectives, sampler)

    def trial(t):
        width = t.suggest_int("width", 1, 64)
        return {"metrics": {"dice": width / 64, "macs": width * 100, "latency_ms": width / 10}}

    run_study(study, 4, trial, objectives=objectives)
    assert count_finished(study) == 4
    assert all(len(t.values) == 3 for t in study.trials if t.state == TrialState.COMPLETE)


# --- failure isolation ---------------------------------------------------------------------------

def failing(errors):
    """A trial function that raises the next error of ``errors`` (None: succeed)."""
    queue = list(errors)

    def trial(t):
        width = t.suggest_int("width", 1, 10_000)
        error = queue.pop(0) if queue else None
        if error is not None:
            raise error
        return {"metrics": {"dice": 0.5, "macs": width}}
    return trial


def test_oom_nan_and_exceptions_fail_one_trial_each_and_the_search_goes_on(storage):
    study = open_study(storage, "s", 0, CONFIG)
    errors = [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
              TrainingError("loss became nan at epoch 2"),
              RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"),
              ValueError("bad")]
    run_study(study, 2, failing(errors), max_failures=10)
    reasons = [r.fail_reason for r in study_records(study) if r.state == "FAIL"]
    assert reasons[0].startswith("out of memory (CUDA)")
    assert reasons[1].startswith("diverged: TrainingError: loss became nan")
    assert reasons[2].startswith("out of memory: RuntimeError")
    assert reasons[3] == "ValueError: bad"
    assert count_finished(study) == 2


def test_early_stopped_trials_are_pruned_with_their_rung_and_do_not_end_the_search(storage):
    study = open_study(storage, "s", 0, CONFIG)
    calls = {"n": 0}

    def trial(t):
        t.suggest_int("width", 1, 10_000)
        calls["n"] += 1
        if calls["n"] <= 4:  # what the trial policy raises when early stopping ends a trial
            raise TrialStopped(StopReason.EARLY_STOPPED, "early-stopped at epoch 1: beaten", epoch=1)
        return {"metrics": {"dice": 0.5, "macs": 10}}

    assert run_study(study, 1, trial, max_pruned_in_a_row=3) is None
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 4 and all(t.user_attrs["stopped_at_epoch"] == 1 for t in pruned)
    assert all(t.user_attrs["stop_reason"] == "early_stopped" for t in pruned)
    assert count_finished(study) == 1


def test_timeout_stops_the_search_and_says_so(storage):
    study = open_study(storage, "s", 0, CONFIG)

    def slow(t):
        import time

        t.suggest_int("width", 1, 10_000)
        time.sleep(0.3)
        return {"metrics": {"dice": 0.5, "macs": 10}}

    assert run_study(study, 100, slow, timeout=0.5) == "timeout"
    assert 1 <= count_finished(study) < 100


# --- lost trials ---------------------------------------------------------------------------------

def _abandoned_trial(study, pid):
    trial = study.ask()
    trial.suggest_int("width", 1, 10_000)
    trial.set_user_attr(WORKER_ATTR, {"host": os.uname().nodename, "pid": pid})
    return trial


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_trial_of_a_dead_process_is_failed_and_queued_again_once(storage):
    study = open_study(storage, "s", 0, CONFIG)
    lost = _abandoned_trial(study, _dead_pid())
    alive = _abandoned_trial(study, os.getpid())
    assert recover_lost_trials(study, local=False) == [lost.number]
    states = {t.number: t.state for t in study.trials}
    assert states[lost.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    assert study.trials[lost.number].user_attrs["fail_reason"].startswith("stale")
    assert recover_lost_trials(study, local=False) == []  # queued once, not twice
    seen = []

    def trial(t):
        seen.append(t.suggest_int("width", 1, 10_000))
        return {"metrics": {"dice": 0.5, "macs": seen[-1]}}

    run_study(study, 1, trial)
    assert seen[0] == study.trials[lost.number].params["width"]  # the same architecture is retried
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == lost.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE


def test_a_live_trial_of_another_run_sharing_the_storage_is_never_marked_stale(storage):
    """Issue 16: a second run using this run's study as --storage keeps its live trial, even when
    this run resumes holding its own lock (``local=True``)."""
    study = open_study(storage, "s", 0, CONFIG)
    other_run = _abandoned_trial(study, os.getpid())  # a live process elsewhere owns it
    assert recover_lost_trials(study, local=True) == []
    assert study.trials[other_run.number].state == TrialState.RUNNING


def test_a_reused_pid_does_not_keep_a_dead_trial_alive(storage):
    study = open_study(storage, "s", 0, CONFIG)
    trial = _abandoned_trial(study, os.getpid())
    study._storage.set_trial_user_attr(trial._trial_id, WORKER_ATTR,
                                       {"host": os.uname().nodename, "pid": os.getpid(), "started": "1"})
    assert recover_lost_trials(study, local=False) == [trial.number]  # same pid, started at another time


def test_in_its_own_storage_a_running_trial_without_a_worker_record_is_stale(storage):
    study = open_study(storage, "s", 0, CONFIG)
    trial = study.ask()  # as written by a version that recorded no worker
    trial.suggest_int("width", 1, 10_000)
    assert recover_lost_trials(study, local=False) == []
    assert recover_lost_trials(study, local=True) == [trial.number]


def test_an_interrupted_trial_is_queued_again(storage):
    study = open_study(storage, "s", 0, CONFIG)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, 3, failing([KeyboardInterrupt()]))
    record = study_records(study)[0]
    assert record.state == "FAIL" and record.fail_reason.startswith("interrupted")
    assert recover_lost_trials(study, local=True) == [0]


def test_default_storage_is_sqlite_for_one_process_and_journal_for_several(tmp_path):
    assert default_storage(tmp_path, 1) == f"sqlite:///{tmp_path / 'study.db'}"
    assert default_storage(tmp_path, 2) == f"journal:///{tmp_path / 'study.journal'}"
    (tmp_path / "study.db").touch()
    assert default_storage(tmp_path, 2).startswith("sqlite")  # an existing study keeps its storage
    journal = tmp_path / "other"
    journal.mkdir()
    study = open_study(default_storage(journal, 2), "s", 0, CONFIG)
    run_study(study, 2, failing([]))
    assert optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal / "study.journal")))).trials


# --- live view -----------------------------------------------------------------------------------

def test_live_view_counts_and_estimates(tmp_path):
    logged = []
    live = LiveView(tmp_path, 4, Objectives(), already=0, log=logged.append)
    records = [
        TrialRecord.from_metrics(0, "COMPLETE", {"dice": 0.6, "macs": 10}),
        TrialRecord.from_metrics(1, "COMPLETE", dice=0.5, macs=20),
        TrialRecord(2, "PRUNED", stop_reason=StopReason.EARLY_STOPPED, message="beaten at epoch 1"),
        TrialRecord.from_metrics(3, "PRUNED", message="early-stopped at epoch 1: beaten"),  # an old study
        TrialRecord(4, "PRUNED", stop_reason=StopReason.DUPLICATE, message="early-stopped? no: a duplicate"),
        TrialRecord.from_metrics(5, "FAIL", message="out of memory"),
        TrialRecord(6, "RUNNING"),
    ]
    status = live.update(records)
    assert (status["finished"], status["running"], status["failed"], status["pruned"],
            status["early_stopped"], status["front_size"]) == (2, 1, 1, 3, 2, 1)
    assert status["best_dice"] == 0.6 and status["eta_s"] is not None
    assert "2/4 finished" in logged[-1] and "front 1" in logged[-1]
    assert (tmp_path / "status.json").is_file()
    live.update(records)
    assert len(logged) == 1  # nothing changed, nothing printed


# --- worker pool ---------------------------------------------------------------------------------

def test_each_worker_gets_one_gpu_round_robin_or_none_on_a_cpu_machine():
    from nas.engine.workers import gpu_pool

    assert gpu_pool(3, 2) == ["0", "1", "0"]
    assert gpu_pool(2, 0) == [None, None]


def test_a_worker_process_runs_the_function_it_is_handed(tmp_path):
    """A worker gets its entry point and config as Python objects (``nas.run.search.run_worker`` and a
    ``SearchConfig`` in a search), not as a command line: its exit code is what the entry returns."""
    import os

    from nas.engine.workers import start_worker

    with open(tmp_path / "worker.log", "w") as log:
        counted = start_worker(len, ("a", "b", "c"), log, dict(os.environ))
        printed = start_worker(print, "hello from the worker", log, dict(os.environ))
    assert counted.wait(timeout=120) == 3 and printed.wait(timeout=120) == 0
    assert (tmp_path / "worker.log").read_text() == "hello from the worker\n"


def test_every_sampler_the_cli_offers_is_one_the_adapter_builds():
    """One list of sampler names (``nas.engine.job.SAMPLERS``): the CLI offers it, the adapter builds each."""
    from nas.cli.search import build_parser
    from nas.engine.job import SAMPLERS
    from nas.engine.optuna_adapter.study import make_sampler

    choices = next(a.choices for a in build_parser()._actions if a.dest == "sampler")
    assert tuple(choices) == SAMPLERS
    for name in SAMPLERS:
        assert make_sampler(name, seed=0) is not None
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("grid", seed=0)
