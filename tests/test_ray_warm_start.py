"""``--backend ray --warm-start family``: the family's queued trials are the first configs Ray runs,
labelled as their members, counted toward ``--trials``, never stopped early and never run twice.

The searcher's labelling and the in-place record are tested without Ray workers; one local Ray
(2 CPUs) for the module then runs a tiny search through ``nas.run_search`` (resumed) and an
interrupted one that Tune restores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_ray_backend import interrupt_after_first_finished_trial

from nas.engine.objectives import Objectives
from nas.engine.optuna_adapter.study import count_finished, open_study

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time, in one worker (tests/test_ray_backend.py)

TINY = dict(epochs=1, image_size=32, seed=3, device="cpu", patches_per_epoch=8, family_rungs=1, fix={"depth": 3},
            backend="ray", cpus_per_trial=1, cost_strata=0)


def tiny_job(out: Path, trials: int, **changes):
    from search_spaces import get_space
    from search_spaces.overrides import restriction_from_args

    from nas.data.loading import load_data
    from nas.engine.job import SearchJob
    from nas.engine.trial import TrialSettings
    from nas.train.trainer import TrainConfig

    space = get_space("resunet")
    data = load_data("synthetic", image_size=32, seed=1, synthetic_train=8, synthetic_val=4)
    train = TrainConfig(epochs=1, batch_size=4, patch_size=32, seed=1, device="cpu")
    settings = TrialSettings(image_size=32, train=train, latency_warmup=1, latency_repeats=2)
    return SearchJob(space=space, data=data, settings=settings, out=out, trials=trials,
                     restriction=restriction_from_args(space.dimensions, ["depth=3", "block=basic"]), **changes)


def point(job, seed: int) -> dict:
    from search_spaces import RandomSuggest
    from search_spaces.overrides import RestrictedSuggest

    drawn = RestrictedSuggest(RandomSuggest(seed), job.restriction)
    job.space.sample_spec(drawn)
    return dict(drawn.inner.params)


def queue_two_members(study, job) -> list[dict]:
    """Two hand-made family members (points of the job's space) queued as a warm start does."""
    from nas.engine.optuna_adapter.warm_start import enqueue_start

    plan = [{"name": f"family-unet-m{seed}", "params": point(job, seed), "target_macs": seed} for seed in (1, 2)]
    assert enqueue_start(study, plan, budget=5) == ["family-unet-m1", "family-unet-m2"]
    return plan


class Proposals:
    """A stand-in for ``ConcurrencyLimiter(OptunaSearch)``: proposes ``configs`` in order."""

    metric, mode = ["dice", "macs"], ["max", "min"]

    def __init__(self, configs):
        self.configs, self.told = list(configs), []

    def suggest(self, trial_id):
        return self.configs.pop(0)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append((trial_id, result, error))


def test_the_searcher_labels_the_family_and_fills_its_waiting_trials(tmp_path, monkeypatch):
    """Without Ray workers: the proposals that are queued members carry their name to the trainable,
    their outcome fills the member's own waiting trial (number, label), anything else is a new trial."""
    pytest.importorskip("ray.tune", reason="Ray is optional: pip install .[ray]")
    from nas.engine.job import LiveView
    from nas.engine.optuna_adapter.foreign import queued_start
    from nas.engine.ray_adapter import searcher as searcher_module
    from nas.engine.ray_adapter.trainable import OUTCOME_KEY, RayPort

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "resunet", 1, {"space": "resunet"}, Objectives())
    job = tiny_job(tmp_path, 3)
    plan = queue_two_members(study, job)
    queued = queued_start(study)
    assert [(q["number"], q["params"], q["attrs"]["family"]) for q in queued] == [
        (0, plan[0]["params"], "family-unet-m1"), (1, plan[1]["params"], "family-unet-m2")]
    other = point(job, 3)
    monkeypatch.setattr(searcher_module, "_SESSION", searcher_module._Session(
        job=job, study=study, live=LiveView(tmp_path, 3, Objectives(), 0)))
    inner = Proposals([plan[1]["params"], other, plan[0]["params"]])  # the second member first
    searcher = searcher_module.StudySearcher(inner, queued)
    configs = [searcher.suggest(trial_id) for trial_id in ("a", "b", "c")]
    assert [config.get("family") for config in configs] == ["family-unet-m2", None, "family-unet-m1"]
    assert searcher.pending == [] and set(searcher.members) == {"a", "c"}
    port = RayPort(job, configs[0], "a", study, report=None)
    assert port.extra["family"] == "family-unet-m2" and port.rung_peers(1) is None  # never stopped early
    assert RayPort(job, configs[1], "b", study, report=None).rung_peers(1) == []  # the others may be

    def finished(dice):
        metrics = {"dice": dice, "macs": 1e6}
        return {OUTCOME_KEY: json.dumps({"state": "COMPLETE", "attrs": {"metrics": metrics}}), "epoch": 1}

    restored = searcher_module.StudySearcher(Proposals([]), [])
    restored.set_state(searcher.get_state())  # what Tune saves and restores with the experiment
    for trial_id, dice in (("a", 0.4), ("b", 0.5), ("c", 0.6)):
        restored.on_trial_complete(trial_id, finished(dice))
    trials = study.get_trials()
    assert [(t.number, t.state.name, t.user_attrs.get("family"), t.values[0]) for t in trials] == [
        (0, "COMPLETE", "family-unet-m1", 0.6), (1, "COMPLETE", "family-unet-m2", 0.4), (2, "COMPLETE", None, 0.5)]
    assert [t.params for t in trials] == [plan[0]["params"], plan[1]["params"], other]
    assert trials[0].user_attrs["family_target_macs"] == 1 and trials[1].user_attrs["ray_trial_id"] == "a"
    assert count_finished(study) == 3 and queued_start(study) == []
    assert restored.searcher.told == [(i, {"dice": d, "macs": 1e6}, False) for i, d in (("a", .4), ("b", .5), ("c", .6))]


# --- a real local Ray (conftest's local_ray, the Ctrl-C scheduler of tests/test_ray_backend.py) ---

def _study(out):
    import optuna

    from nas.engine.optuna_adapter.study import run_storage

    return optuna.load_study(study_name="resunet", storage=run_storage(out))


@pytest.mark.slow
def test_a_ray_search_runs_the_start_trials_first_and_a_resume_never_again(local_ray, tmp_path, capsys):
    """The family and a cost stratum, queued cheapest first, are the first points Ray runs; the stratum is a
    searched trial (no family label), the members are labelled and never stopped early."""
    import nas
    from nas.engine.optuna_adapter.warm_start import family_plan, start_name
    from nas.results.family_records import family_name, family_records, searched_records

    out = tmp_path / "run"
    result = nas.run_search(nas.SearchConfig(trials=3, out=out, **{**TINY, "cost_strata": 1}))
    assert result.status == "completed", result.message
    said = capsys.readouterr().out
    assert "start: 3 trial(s) queued cheapest first" in said and "note:" not in said
    study = _study(out)
    plan = {m["name"]: m for m in family_plan(study)}
    assert sorted(plan) == ["family-resunet-m0", "family-unet-m0"]
    trials = study.get_trials()
    assert count_finished(study) == 3 and len(trials) == 3  # the start trials count toward --trials
    assert sorted(start_name(t) for t in trials) == ["family-resunet-m0", "family-unet-m0", "stratum-0"]
    members = [t for t in trials if t.user_attrs.get("family")]
    assert [t.params for t in members] == [plan[t.user_attrs["family"]]["params"] for t in members]
    assert [t.user_attrs["spec"] for t in members] == [plan[t.user_attrs["family"]]["point_spec"] for t in members]
    assert all(t.state.name == "COMPLETE" and "stopped_at_epoch" not in t.user_attrs for t in members)
    stratum = next(t for t in trials if not t.user_attrs.get("family"))
    assert stratum.user_attrs["cost_stratum"] == "stratum-0"
    assert not (out / "baselines").exists()  # the study holds the family: nothing trained twice
    for trial in trials:  # labelled in the checkpoint's metrics, as on the Optuna path
        metrics = json.loads((out / trial.user_attrs["checkpoint"] / "metrics.json").read_text())
        assert metrics.get("family") == trial.user_attrs.get("family")
        assert trial.user_attrs["checkpoint"] == f"trials/trial_{trial.number:04d}"
    records = nas.open_run(out).records
    assert sorted(family_name(r) for r in family_records(records)) == sorted(plan)
    assert [r.number for r in searched_records(records)] == [stratum.number]

    again = nas.run_search(nas.SearchConfig(trials=4, out=out, **{**TINY, "cost_strata": 1}))  # resumed with one more
    assert again.status == "completed", again.message
    assert "start:" not in capsys.readouterr().out
    trials = _study(out).get_trials()
    assert count_finished(_study(out)) == 4 and len(trials) == 4
    assert start_name(trials[3]) is None  # the sampler's
    assert sorted(p.name for p in (out / "ray").iterdir()) == ["search_001", "search_002"]


@pytest.mark.slow
def test_an_interrupted_warm_start_is_restored_without_running_a_member_twice(local_ray, tmp_path):
    from nas.engine.optuna_adapter.foreign import queued_start
    from nas.engine.ray_adapter import run_ray_search
    from nas.engine.ray_adapter.trainable import RAY_TRIAL_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "resunet", 1, {"space": "resunet"}, Objectives())
    plan = queue_two_members(study, tiny_job(tmp_path, 3))
    common = dict(storage=storage, study_name="resunet", seed=1, sampler="tpe", ray_address=None,
                  gpus_per_trial=0, cpus_per_trial=1, resume=True)
    with pytest.raises(KeyboardInterrupt, match="resuming restores"):
        run_ray_search(tiny_job(tmp_path, 3), study, scheduler=interrupt_after_first_finished_trial(
            tmp_path / "interrupted"), **common)
    assert 1 <= count_finished(study) < 3 and len(queued_start(study)) < 2

    assert run_ray_search(tiny_job(tmp_path, 3), study, **common) is None  # Tuner.restore
    trials = study.get_trials()
    assert count_finished(study) == 3 and len(trials) == 3 and queued_start(study) == []
    assert [(t.user_attrs.get("family"), t.params) for t in trials[:2]] == [
        (member["name"], member["params"]) for member in plan]
    assert trials[2].user_attrs.get("family") is None
    ids = [t.user_attrs[RAY_TRIAL_ATTR] for t in trials]
    assert len(ids) == len(set(ids)) == 3 and [p.name for p in (tmp_path / "ray").iterdir()] == ["search_001"]


def test_an_experiment_is_restored_only_when_it_was_handed_every_queued_member(tmp_path, monkeypatch):
    """A resume with a larger ``--trials`` may queue more members than the interrupted experiment's
    searcher knows: a new experiment then proposes them first (instead of leaving them waiting)."""
    tune = pytest.importorskip("ray.tune", reason="Ray is optional: pip install .[ray]")
    from nas.engine.ray_adapter.run import FAMILY_FILE, _experiment

    monkeypatch.setattr(tune.Tuner, "can_restore", staticmethod(lambda path: True))
    first = tmp_path / "ray" / "search_001"
    first.mkdir(parents=True)
    assert _experiment(tmp_path, True, []) == (first, True)  # no warm start: restored as before
    assert _experiment(tmp_path, True, [0]) == (tmp_path / "ray" / "search_002", False)
    (first / FAMILY_FILE).write_text("[0, 1]")
    assert _experiment(tmp_path, True, [1]) == (first, True)  # member 0 ran, member 1 is its own
    assert _experiment(tmp_path, True, [1, 2]) == (tmp_path / "ray" / "search_002", False)
    assert _experiment(tmp_path, False, [1]) == (tmp_path / "ray" / "search_002", False)
