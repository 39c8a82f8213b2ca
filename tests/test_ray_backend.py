"""``--backend ray``: a tiny local Ray Tune search lands in the same Optuna study as the Optuna path.

One local Ray (2 CPUs) for the module; two searches on it: the first with a scheduler that stops
one trial after epoch 1 (it must be PRUNED, not a front member), the second extends the same study
in a new Tune experiment. The outcome rules themselves are tested without Ray.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import ray_env

from nas.engine.trial import TrialSettings
from nas.engine.objectives import Objectives
from nas.engine.optuna_adapter.study import count_finished, open_study, study_records
from nas.engine.job import SearchJob, front_size
from nas.train.trainer import TrainConfig

# The Ray tests run one after another in one xdist worker: two Rays of 2 CPUs at once would only compete for
# the two cores (each starts a new one, address "local": never one found in /tmp/ray).
pytestmark = pytest.mark.xdist_group("ray")

RESTRICT = ["depth=3", "base_width=8", "blocks_per_stage=1", "width_mode=growth", "block=basic"]
EPOCHS = 2


def tiny_job(out: Path, trials: int, **changes) -> SearchJob:
    from search_spaces import get_space
    from search_spaces.overrides import restriction_from_args

    from nas.data.loading import load_data

    space = get_space("resunet")
    data = load_data("synthetic", image_size=32, seed=1, synthetic_train=8, synthetic_val=4)
    train = TrainConfig(epochs=EPOCHS, batch_size=4, patch_size=32, seed=1, device="cpu",
                        lr=changes.pop("lr", TrainConfig.lr))
    settings = TrialSettings(image_size=32, train=train, latency_warmup=1, latency_repeats=2)
    return SearchJob(space=space, data=data, settings=settings, out=out, trials=trials,
                     restriction=restriction_from_args(space.dimensions, RESTRICT), **changes)


def test_outcomes_of_ray_trials_are_told_apart(tmp_path):
    """Without Ray: a finished trainable, a scheduler stop and a crash give three different states."""
    from nas.engine.ray_adapter.searcher import _Session
    from nas.engine.ray_adapter.trainable import OUTCOME_KEY
    from nas.results.outcome import TrialState

    session = _Session(job=tiny_job(tmp_path, 1), study=None, live=None)  # outcome() reads only the job
    metrics = {"dice": 0.5, "macs": 1e6}
    done = {OUTCOME_KEY: json.dumps({"state": "COMPLETE", "attrs": {"metrics": metrics}}), "epoch": 2}
    assert session.outcome(done, False)[:2] == (TrialState.COMPLETE, (0.5, 1e6))
    state, values, attrs = session.outcome({"epoch": 1, "dice": 0.9, "macs": 1e6, "epoch_dice": [0.9]}, False)
    assert state == TrialState.PRUNED and values is None  # a high early Dice does not make it finished
    assert attrs["fail_reason"] == "stopped by the Ray scheduler at epoch 1" and attrs["epoch_dice"] == [0.9]
    assert session.outcome(None, True)[0] == TrialState.FAIL
    nan = {OUTCOME_KEY: json.dumps({"state": "COMPLETE", "attrs": {"metrics": {"dice": None, "macs": 1}}})}
    assert session.outcome(nan, False)[0] == TrialState.FAIL


def test_the_search_ends_on_the_same_rules_as_the_optuna_path(tmp_path, monkeypatch):
    from nas.engine.ray_adapter.searcher import _Session

    session = _Session(job=tiny_job(tmp_path, 3, max_failures=2, timeout=60.0), study=None, live=None)
    assert session.stop_reason(running=2) is None
    assert session.stop_reason(running=3) == "wait"  # the running trials may still complete the study
    session.complete = 3
    assert session.stop_reason(running=0) == "done"
    session.complete, session.failures = 1, 2
    assert session.stop_reason(running=0) == "failures"
    session.failures, session.started = 0, session.started - 61  # --timeout: no new trial after it
    assert session.stop_reason(running=0) == "timeout"


def test_without_ray_the_backend_says_what_to_install(monkeypatch):
    import subprocess
    import sys

    from nas.engine.ray_adapter import INSTALL_HINT, check_ray_backend, run_ray_search

    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` now raises ImportError
    job = tiny_job(Path("unused"), 1)
    for call in (lambda: check_ray_backend("cpu", 0, 1),
                 lambda: run_ray_search(job, None, storage="", study_name="", seed=0, sampler="tpe",
                                        ray_address=None, gpus_per_trial=0, cpus_per_trial=1, resume=False)):
        with pytest.raises(RuntimeError, match=r"pip install \.\[ray\]"):
            call()
    code = "import sys; sys.modules['ray'] = None; import nas.engine.ray_adapter, nas.cli.search"  # importable without Ray
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    assert INSTALL_HINT == "the Ray backend needs `pip install .[ray]`"


@pytest.mark.parametrize("device, gpus, cpus, message", [
    ("cuda", 0, 1, "needs --gpus-per-trial > 0"), ("cpu", -1, 1, "--gpus-per-trial >= 0"),
    ("cpu", 0, 0, "--cpus-per-trial must be > 0")])
def test_resources_that_cannot_work_are_refused(device, gpus, cpus, message):
    pytest.importorskip("ray.tune", reason="Ray is optional: pip install .[ray]")
    from nas.engine.ray_adapter import check_ray_backend

    with pytest.raises(ValueError, match=re.escape(message)):
        check_ray_backend(device, gpus, cpus)


def test_replay_rebuilds_the_spec_and_the_distributions():
    from search_spaces import RandomSuggest, get_space
    from search_spaces.overrides import RestrictedSuggest, restriction_from_args

    from nas.engine.optuna_adapter.foreign import replay

    space = get_space("resunet")
    restriction = restriction_from_args(space.dimensions, RESTRICT)
    drawn = RestrictedSuggest(RandomSuggest(3), restriction)
    spec = space.sample_spec(drawn)
    again, distributions, fixed = replay("resunet", restriction, drawn.inner.params)
    assert again == spec and fixed == restriction.fixed
    assert set(distributions) == set(drawn.inner.params) and "depth" not in distributions
    for name, value in drawn.inner.params.items():
        assert distributions[name]._contains(distributions[name].to_internal_repr(value))


# --- a real local Ray -------------------------------------------------------------------------

# ``local_ray`` (tests/conftest.py): one new local Ray for the module, token auth set up explicitly.

def stop_one_trial_after_epoch_one():
    """A Ray scheduler that stops the first trial reporting epoch 1 (the module pickles it)."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class StopOne(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.stopped: str | None = None

        def on_trial_result(self, tune_controller, trial, result):
            if self.stopped in (None, trial.trial_id) and result.get("epoch") == 1 and "nas_outcome" not in result:
                self.stopped = trial.trial_id
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    return StopOne()


@pytest.mark.slow
def test_a_ray_search_fills_the_study_and_a_scheduler_stop_is_pruned(local_ray, tmp_path):
    from nas.deploy.checkpoint import load_checkpoint
    from nas.engine.ray_adapter import run_ray_search
    from nas.engine.ray_adapter.trainable import RAY_TRIAL_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "resunet", 1, {"space": "resunet"}, Objectives())
    common = dict(storage=storage, study_name="resunet", seed=1, sampler="tpe", ray_address=None,
                  gpus_per_trial=0, cpus_per_trial=1, resume=True)
    stopped = run_ray_search(tiny_job(tmp_path, 2), study, scheduler=stop_one_trial_after_epoch_one(), **common)

    assert stopped is None and count_finished(study) == 2
    trials = study.get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert len(pruned) == 1 and len(trials) == 3
    assert pruned[0].user_attrs["fail_reason"] == "stopped by the Ray scheduler at epoch 1"
    assert len(pruned[0].user_attrs["epoch_dice"]) == 1 and pruned[0].values is None
    records = {r.number: r for r in study_records(study)}
    assert records[pruned[0].number].checkpoint is None
    assert front_size(list(records.values()), Objectives()) <= 2  # the stopped trial is no front member
    for trial in trials:
        if trial.state.name != "COMPLETE":
            continue
        attrs = trial.user_attrs
        assert attrs["fixed_params"]["depth"] == 3 and "depth" not in trial.params
        assert len(attrs["epoch_dice"]) == EPOCHS and trial.values[0] == attrs["metrics"]["dice"]
        assert trial.values[1] == attrs["metrics"]["macs"] == attrs["objective_costs"][0]
        assert attrs["checkpoint"] == f"trials/trial_{trial.number:04d}"
        model, spec = load_checkpoint(tmp_path / attrs["checkpoint"])
        assert spec.to_dict() == attrs["spec"] and len(spec.encoder_widths) == 3
        with torch.no_grad():
            assert model(torch.zeros(1, 1, 32, 32)).shape[-2:] == (32, 32)
    ids = [t.user_attrs[RAY_TRIAL_ATTR] for t in trials]
    assert len(set(ids)) == 3

    # The same command again adds nothing; asking for one more trial runs a new Tune experiment
    # (the first one ended) whose sampler starts from the study's trials.
    assert run_ray_search(tiny_job(tmp_path, 2), study, **common) is None and len(study.trials) == 3
    assert run_ray_search(tiny_job(tmp_path, 3), study, **common) is None
    assert count_finished(study) == 3 and len(study.trials) == 4
    assert len({t.user_attrs[RAY_TRIAL_ATTR] for t in study.trials}) == 4
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["search_001", "search_002"]


@pytest.mark.slow
def test_failing_ray_trials_are_recorded_and_end_the_search(local_ray, tmp_path):
    """An exception in a Ray worker (Adam refuses lr NaN) is a FAIL with its reason; ``max_failures``
    of them end the search (trials already running still finish)."""
    from nas.engine.ray_adapter import run_ray_search

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "resunet", 1, {"space": "resunet"}, Objectives())
    job = tiny_job(tmp_path, 2, lr=float("nan"), max_failures=1)
    stopped = run_ray_search(job, study, storage=storage, study_name="resunet", seed=1, sampler="random",
                             ray_address=None, gpus_per_trial=0, cpus_per_trial=1, resume=False)
    assert stopped == "failures" and count_finished(study) == 0
    failed = [r for r in study_records(study) if r.state == "FAIL"]
    assert len(failed) >= 1 and all(r.fail_reason == "ValueError: Invalid learning rate: nan" for r in failed)
    assert not (tmp_path / "trials").exists() or not any((tmp_path / "trials").iterdir())


def interrupt_after_first_finished_trial(marker: Path):
    """A scheduler that sends this process Ctrl-C once (``marker`` remembers it across the restore)."""
    import os
    import signal

    from ray.tune.schedulers import FIFOScheduler

    class Interrupt(FIFOScheduler):
        def on_trial_complete(self, tune_controller, trial, result):  # just before the searcher's
            if not marker.exists():
                marker.write_text("sent")
                os.kill(os.getpid(), signal.SIGINT)  # Tune's handler only sets a flag: the loop ends
            super().on_trial_complete(tune_controller, trial, result)

    return Interrupt()


@pytest.mark.slow
def test_an_interrupted_ray_search_is_restored_without_losing_or_repeating_trials(local_ray, tmp_path):
    from nas.engine.ray_adapter import run_ray_search
    from nas.engine.ray_adapter.trainable import RAY_TRIAL_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "resunet", 1, {"space": "resunet"}, Objectives())
    common = dict(storage=storage, study_name="resunet", seed=1, sampler="tpe", ray_address=None,
                  gpus_per_trial=0, cpus_per_trial=1, resume=True)
    scheduler = interrupt_after_first_finished_trial(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt, match="resuming restores"):
        run_ray_search(tiny_job(tmp_path, 3), study, scheduler=scheduler, **common)
    before = count_finished(study)
    assert 1 <= before < 3 and not (tmp_path / "ray" / "search_001" / "nas_search_done").exists()

    assert run_ray_search(tiny_job(tmp_path, 3), study, **common) is None  # Tuner.restore
    assert count_finished(study) == 3 and [p.name for p in (tmp_path / "ray").iterdir()] == ["search_001"]
    ids = [t.user_attrs[RAY_TRIAL_ATTR] for t in study.trials]
    assert len(ids) == len(set(ids)) == 3  # the interrupted trials ran again, none twice


@pytest.mark.slow
def test_the_cli_runs_the_ray_backend_and_refuses_workers_with_it(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is optional: pip install .[ray]")
    nas_search = Path(sys.executable).parent / "nas-search"
    flags = ["--backend", "ray", "--trials", "2", "--epochs", "1", "--image-size", "32", "--device", "cpu",
             *[part for fix in RESTRICT for part in ("--fix", fix)], "--out", "run"]
    env = ray_env()  # a new local Ray with token auth given explicitly: nothing read from ~/.ray or /tmp/ray
    refused = subprocess.run([str(nas_search), *flags, "--workers", "2"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "do not mix" in refused.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()
    result = subprocess.run([str(nas_search), *flags], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**env, "RAY_ADDRESS": "local"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = (tmp_path / "run" / "trials.csv").read_text().splitlines()[1:]
    assert sum(",COMPLETE," in row for row in rows) == 2
    assert (tmp_path / "run" / "report.html").is_file() and list((tmp_path / "run" / "best").iterdir())
