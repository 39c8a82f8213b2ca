"""The replay runs the engine's own code: on the curves a live search recorded, it takes the same decisions."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import nas
from nas.bench.replay import Arm, Curve, Event, SimClock, front_hypervolume, reach_time, replay
from nas.bench.table import spec_key
from nas.run.search_plan import prepare

pytestmark = pytest.mark.slow

from conftest import TINY_FIX

# The tiny corner of the space (plain blocks: trials train in a second) with the family's members where
# they fit it; 3 epochs so the default rung (epoch 1) decides.
LIVE = dict(epochs=3, image_size=32, seed=3, device="cpu", patches_per_epoch=8, family_rungs=1,
            fix={k: v for k, v in TINY_FIX.items() if k not in ("block", "base_width", "width_growth")})


def _recorded(out, plan):
    """spec key -> the Curve the live search recorded for it (partial curves of stopped trials padded; their
    spec, which only a finished trial stores, rebuilt from the params as the Ray adapter does)."""
    import optuna

    from nas.engine.optuna_adapter.foreign import replay as rebuild

    study = optuna.load_study(study_name="resunet", storage=f"sqlite:///{out}/study.db")
    curves = {}
    for trial in study.get_trials():
        attrs = dict(trial.user_attrs)
        if not attrs.get("spec") and trial.params and attrs.get("epoch_dice"):
            attrs["spec"] = rebuild(plan.space.name, plan.restriction, dict(trial.params))[0].to_dict()
        if not attrs.get("spec"):
            continue
        metrics = attrs.get("metrics") or {}
        dice = list(attrs.get("epoch_dice") or metrics.get("epoch_dice") or [])
        dice += [math.nan] * (LIVE["epochs"] - len(dice))
        costs = {key: metrics[key] for key in ("macs", "flops", "params", "latency_ms") if key in metrics}
        test = ((metrics.get("quality") or {}).get("test") or {}).get("dice", math.nan)
        curves[spec_key(attrs["spec"])] = Curve(val_dice=tuple(dice), epoch_s=(1.0,) * len(dice), costs=costs,
                                                final_test_dice=test)
    return curves


def _decisions(records):
    return [(r.number, r.state, dict(r.params), str(r.stop_reason or ""), r.stopped_at_epoch) for r in records]


def test_a_replay_on_the_recorded_curves_takes_the_live_search_decisions(tmp_path):
    out = tmp_path / "live"
    live = nas.run_search(nas.SearchConfig(trials=9, out=out, **LIVE))
    assert live.status == "completed"
    from nas.engine.optuna_adapter.study import study_records
    import optuna

    live_records = study_records(optuna.load_study(study_name="resunet", storage=f"sqlite:///{out}/study.db"))
    plan = prepare(nas.SearchConfig(trials=9, out=tmp_path / "replay", **LIVE))
    curves = _recorded(out, plan)
    result = replay(plan, lambda spec: curves[spec_key(spec)], Arm("engine"), seed=LIVE["seed"], budget_s=None,
                    max_trials=9, keep_records=True)
    assert _decisions(result.records) == _decisions(live_records)
    kinds = {r.stop_reason for r in live_records if r.stop_reason is not None}
    assert any(r.params for r in live_records)  # sampled trials, not only the warm start
    assert sum(e.family is not None for e in result.events) >= 1, "the family warm start was replayed"
    assert kinds or True  # stop reasons present or not, they must match (checked above)


def test_the_simulated_clock_drives_the_timeout_and_the_warm_start_share(tmp_path):
    plan = prepare(nas.SearchConfig(trials=50, out=tmp_path / "r", **LIVE))

    def source(spec):  # every trial costs 10 simulated seconds per epoch
        return Curve(val_dice=(0.5, 0.6, 0.7), epoch_s=(10.0, 10.0, 10.0), costs={"macs": 10**6, "flops": 2 * 10**6,
                     "params": 100, "latency_ms": 1.0}, final_test_dice=0.6)

    result = replay(plan, source, Arm("engine", cost_strata=0), seed=0, budget_s=100.0, keep_records=True)
    assert result.stopped == "timeout"
    ends = [e.end for e in result.events]
    assert ends == sorted(ends) and ends[-1] >= 100.0 and ends[-2] < 100.0  # the running trial finishes
    skipped = [r for r in result.records if str(r.stop_reason) .endswith("budget")]
    family = [e for e in result.events if e.family]
    assert len(family) == 1 and skipped, "30 s per member: the second starts past 25 s (a quarter) and is skipped"


def _varied(spec):
    """A curve per spec from its key's hash: members and proposals of different lengths and Dice."""
    import hashlib

    h = int(hashlib.sha256(spec_key(spec).encode()).hexdigest()[:8], 16)
    seconds, dice, macs = 4.0 + h % 17, 0.3 + (h % 97) / 200, 10**5 + h % 10**7
    return Curve(val_dice=(dice * 0.8, dice * 0.9, dice), epoch_s=(seconds,) * 3, final_test_dice=dice - 0.01,
                 costs={"macs": macs, "flops": 2 * macs, "params": 100, "latency_ms": 1.0})


def test_a_smaller_timeout_read_off_a_larger_replay_is_that_replay(tmp_path):
    """``prefix`` reads a smaller --timeout off a larger replay only where it is that replay, event for event:
    the second member starts at 57 s, past a quarter of 90 and 160 s (skipped there, trained at 600 s)."""
    from nas.bench.replay import prefix

    plan = prepare(nas.SearchConfig(trials=50, out=tmp_path / "r", **LIVE))
    arm = Arm("engine", cost_strata=0)
    big = replay(plan, _varied, arm, seed=1, budget_s=600.0)
    assert [start for start, _ in big.family_starts] == [0.0, 57.0]
    for budget, readable in ((20.0, True), (45.0, True), (90.0, False), (160.0, False), (300.0, True),
                             (450.0, True)):
        small = replay(plan, _varied, arm, seed=1, budget_s=budget)
        read = prefix(big, plan, arm, budget)
        assert (read is not None) == readable
        if read is not None:
            assert read.events == small.events
        else:  # the naive cut would be wrong: the member skipped here changes what follows
            assert tuple(e for e in big.events if e.start < budget) != small.events


def test_an_arm_without_the_family_replayed_first_leaves_the_family_to_the_next(tmp_path, monkeypatch):
    """The per-process family plan is kept only once planned: a random-search replay first (no family
    wanted) once cached an empty plan, and every warm-start replay after it in that worker ran without one."""
    from nas.bench import replay as replay_module

    plan = prepare(nas.SearchConfig(trials=50, out=tmp_path / "r", **LIVE))
    arm = Arm("engine", cost_strata=0)
    monkeypatch.setattr(replay_module, "_FAMILY_PLANS", {})
    fresh = replay(plan, _varied, arm, seed=0, budget_s=200.0)
    monkeypatch.setattr(replay_module, "_FAMILY_PLANS", {})
    replay(plan, _varied, Arm("random", sampler="random", early_stop="none", warm_start="none", cost_strata=0),
           seed=0, budget_s=60.0)
    after = replay(plan, _varied, arm, seed=0, budget_s=200.0)
    assert sum(e.family is not None for e in fresh.events) >= 1 and after.events == fresh.events


def test_run_arms_shares_one_state_and_reads_budgets_off_as_replaying_each(tmp_path):
    """Forked workers on the parent's state, budgets read off larger replays: the rows of replaying every
    (arm, seed, budget) here, one by one (but wall_s), in seed-by-seed order."""
    from nas.bench import experiment
    from nas.bench.experiment import Setting, merge_budgets, run_arms, summarise

    plan = prepare(nas.SearchConfig(trials=50, out=tmp_path / "r", **LIVE))
    arms = {"engine": Arm("engine", cost_strata=0), "random": experiment.ARMS["random"]}
    state = {"plan": plan, "source": _varied, "family_hv": 0.5, "arms": arms}
    setting = Setting(unit_s=30.0, budgets=(1, 3, 5, 15))
    lines = []
    rows = run_arms(lambda: state, ["random", "engine"], range(2), setting, workers=2, log=lines.append)
    assert sum("read off --timeout 15" in line for line in lines) == 2  # --timeout 1: the member at 57 s is past it

    def alone(name, seed):
        per = {}
        for budget in (setting.budgets if name == "engine" else setting.budgets[-1:]):
            result = replay(plan, _varied, arms[name], seed, budget * setting.unit_s)
            read = Setting(setting.unit_s, tuple(b for b in setting.budgets if b <= budget))
            per[budget] = summarise(result, read, 0.5) | {"wall_s": 0.0, "budget": budget}
        return merge_budgets(per, setting.budgets)

    def bare(row):
        return {k: v for k, v in row.items() if k != "wall_s"}

    assert [bare(r) for r in rows] == [bare(alone(a, s)) for s in range(2) for a in ("random", "engine")]
    assert not experiment._STATE  # the parent's copy dropped


def test_front_hypervolume_selects_on_validation_and_scores_on_test():
    events = [Event(0, "a", 0, 10, True, 10**6, 0.8, 0.5), Event(1, "b", 10, 20, True, 10**7, 0.7, 0.9),
              Event(2, "c", 20, 30, False, 10**5, None, None)]
    # b is dominated on validation (worse Dice, more MACs): its better test Dice must not count
    assert front_hypervolume(events, 30) == pytest.approx(0.5 * (10 - 6))
    assert front_hypervolume(events, 5) == 0.0
    assert reach_time(events, 2.0) == 10 and reach_time(events, 3.0) is None


def test_sim_clock_never_runs_backwards():
    clock = SimClock()
    clock.advance(3)
    clock.advance(-1)
    assert clock() == 3


def test_compare_pairs_seeds_and_reports_intervals_reach_and_wilcoxon():
    from nas.bench.experiment import compare, markdown

    budgets = [2, 5]
    results = []
    for seed in range(8):
        results.append({"arm": "engine", "seed": seed, "trials": 10, "surrogate": 5,
                        "hypervolume": [1.0 + seed * 0.01, 2.0 + seed * 0.01], "reach_family": 3.0,
                        "reach_family_searched": None})
        results.append({"arm": "random", "seed": seed, "trials": 10, "surrogate": 10,
                        "hypervolume": [0.9 + seed * 0.01, 2.0 + seed * 0.01], "reach_family": None,
                        "reach_family_searched": None})
    summary = compare(results, budgets)
    engine, random = summary["engine"], summary["random"]
    assert engine["budgets"][2]["low"] <= engine["budgets"][2]["median"] <= engine["budgets"][2]["high"]
    assert random["budgets"][2]["engine_minus_arm_median"] == pytest.approx(0.1)
    assert random["budgets"][2]["p"] < 0.05  # 8 of 8 paired seeds ahead
    assert math.isnan(random["budgets"][5]["p"])  # identical in every seed: no test
    assert engine["reach_family_median"] == 3.0 and math.isinf(random["reach_family_median"])
    assert engine["reach_family_count"] == "8/8" and random["surrogate_share"] == 1.0
    table = markdown(summary, budgets)
    assert "| random |" in table and "never (0/8)" in table and "p=0.0" in table


def test_trial_equivalent_and_family_hypervolume_read_the_table():
    import pandas as pd

    from nas.bench.experiment import family_hypervolume, trial_equivalent

    frame = pd.DataFrame([
        dict(kind="sample", seed=0, arch_id="s0000", setup_cpu_s=1.0, epoch_cpu_s=[2.0, 2.0], finish_cpu_s=1.0,
             spec_key="a", macs=10**6, final_val_dice=0.5, final_test_dice=0.4),
        dict(kind="sample", seed=1, arch_id="s0000", setup_cpu_s=9.0, epoch_cpu_s=[9.0, 9.0], finish_cpu_s=9.0,
             spec_key="a", macs=10**6, final_val_dice=0.5, final_test_dice=0.4),
        dict(kind="family", seed=0, arch_id="family-unet-m0", setup_cpu_s=1.0, epoch_cpu_s=[1.0], finish_cpu_s=1.0,
             spec_key="f", macs=10**7, final_val_dice=0.8, final_test_dice=0.7),
        dict(kind="family", seed=0, arch_id="family-unet-m0-planned", setup_cpu_s=1.0, epoch_cpu_s=[1.0],
             finish_cpu_s=1.0, spec_key="g", macs=10**5, final_val_dice=0.9, final_test_dice=0.9),
    ])
    assert trial_equivalent(frame) == 6.0  # seed-0 samples only
    assert family_hypervolume(frame) == pytest.approx(0.7 * (10 - 7))  # the planned spec is not trained by a warm start


def test_moasha_fronts_peeled_at_once_are_syne_tunes_nondominated_sort():
    """The syne-moasha arm's faster sort: Syne Tune's order item for item, ties, NaNs and its random draws
    included (each front's epsilon net may start from numpy's global RNG)."""
    import sys

    import numpy as np

    pytest.importorskip("syne_tune")
    from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import nondominated_sort

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from search_vs_family_parts.moasha import nondominated_order

    rng = np.random.default_rng(0)
    for case in range(200):
        x = rng.random((int(rng.integers(0, 60)), int(rng.integers(1, 4))))
        x[::4] = x[::4].round(1)  # ties and duplicates
        if case % 10 == 0 and len(x):
            x[0, 0] = np.nan
        for dim in (None, 0):
            np.random.seed(case)
            theirs, draw = nondominated_sort(x, dim=dim), np.random.rand()
            np.random.seed(case)
            assert nondominated_order(x, dim) == theirs and np.random.rand() == draw


def test_moasha_epsilon_net_is_syne_tunes():
    """The faster epsilon net inside a front: Syne Tune's ranks and random draw on whole fronts (points on
    a line, so every one is non-dominated), ties, duplicates and NaNs included."""
    import sys

    import numpy as np

    pytest.importorskip("syne_tune")
    from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import compute_epsilon_net

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from search_vs_family_parts.moasha import epsilon_net_ranks

    rng = np.random.default_rng(1)
    for case in range(100):
        n = int(rng.integers(1, 80))
        first = rng.random(n).round(1 if case % 3 == 0 else 6)
        x = np.stack([first, 1 - first, *([rng.random(n)] if case % 2 else [])], axis=1)
        if case % 7 == 0:
            x[int(rng.integers(0, n)), 0] = np.nan
        for dim in (None, 0, 1):
            np.random.seed(case)
            theirs, draw = compute_epsilon_net(x, dim=dim), np.random.rand()
            np.random.seed(case)
            assert epsilon_net_ranks(x, dim).tolist() == theirs.tolist() and np.random.rand() == draw
