"""benchmarks/search_vs_family.py's arithmetic on constructed records: the hypervolume (moocore, against a
hand-computed 2-D area), the compute until the running front reaches the family's, the searched-only
variant, medians over seeds with seeds that never reach, the finalist pairs and the goal verdicts."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from nas.results.records import TrialRecord
from reports.hypervolume import hypervolume_2d

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_vs_family.py"
_spec = importlib.util.spec_from_file_location("search_vs_family", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("search_vs_family", bench)  # dataclasses look their module up there
_spec.loader.exec_module(bench)
REF = (1.0, 8.0)  # (1 - Dice, log10 MACs)


def has_moocore() -> bool:
    return importlib.util.find_spec("moocore") is not None


needs_moocore = pytest.mark.skipif(not has_moocore(), reason="moocore is not installed (pip install .[bench]): "
                                   "the benchmark's hypervolume comes from it")


def area(points, reference=REF) -> float:
    """The repo's exact 2-D sweep (reports.hypervolume) on the same minimisation points: an independent oracle."""
    return hypervolume_2d([(1 - e, c) for e, c in points], reference=(1 - reference[0], reference[1]))


def trial(number, dice=None, macs=None, seconds=10.0, epochs=2, family=None, state="COMPLETE"):
    metrics = {"family": family} if family else {}
    values = {"seconds": seconds, "epoch_dice": [0.1] * epochs}
    if state == "COMPLETE":
        values.update(dice=dice, macs=macs)
    return TrialRecord.from_metrics(number, state, metrics, **values)


def engine_records():
    """Two family warm-start trials first, a pruned one, then searched trials."""
    return [trial(0, 0.6, 10**6, family="family-unet-m0"), trial(1, 0.7, 10**7, family="family-unet-m1"),
            trial(2, seconds=3.0, epochs=1, state="PRUNED"), trial(3, 0.65, 10**6), trial(4, 0.8, 10**6, seconds=7.0)]


def test_reach_sums_every_trial_until_the_front_reaches_the_target():
    steps = bench.steps(engine_records())
    assert [s.epochs for s in steps] == [2, 2, 1, 2, 2] and [s.family for s in steps] == [True, True, False, False, False]
    assert steps[2].point is None and steps[0].point == pytest.approx((0.4, 6.0))
    family = [s.point for s in steps if s.family]
    target = area(family)
    assert target == pytest.approx(0.6 * 2 + 0.1 * 1)  # by hand: Dice 0.6 over 2 decades, 0.1 more over 1
    everything = bench.reach(steps, target, REF, volume=area)
    assert everything == {"reached": True, "seconds": 20.0, "epochs": 4, "trials": 2}
    searched = bench.reach(steps, target, REF, searched_only=True, volume=area)
    # trial 3 alone (0.65 x 2 = 1.3) already equals the family's 1.3: the family's compute still counts
    assert searched == {"reached": True, "seconds": 33.0, "epochs": 7, "trials": 4}
    missed = bench.reach(steps, 10.0, REF, volume=area)
    assert missed == {"reached": False, "seconds": 40.0, "epochs": 9, "trials": 5}


@needs_moocore
def test_moocore_hypervolume_matches_a_hand_computed_area():
    points = [(0.2, 1.0), (0.5, 0.5), (1.5, 0.1), (0.6, 1.5)]  # the third lies beyond the reference, the last is dominated
    # union of [0.2, 1] x [1, 2] and [0.5, 1] x [0.5, 2]: 0.8 + 0.75 - 0.5
    assert bench.hypervolume(points, (1.0, 2.0)) == pytest.approx(1.05)
    assert bench.hypervolume(points, (1.0, 2.0)) == pytest.approx(area(points, (1.0, 2.0)))
    assert bench.hypervolume([], REF) == 0.0 and bench.hypervolume([(1.2, 3.0)], REF) == 0.0


@needs_moocore
def test_seed_result_scores_every_arm_against_the_family_of_the_same_seed():
    family_baseline = TrialRecord.from_metrics(-1, "COMPLETE", {"family": "family-resunet-m2", "kind": "family"},
                                               dice=0.76, macs=10**7, kind="preset")
    random = [trial(0, 0.5, 10**6, seconds=30.0, epochs=10), trial(1, 0.9, 10**5, seconds=30.0, epochs=10)]
    row = bench.seed_result({"engine": engine_records() + [family_baseline], "random": random}, REF)
    hv = row["hypervolume"]
    assert row["family_members"] == 3  # two warm-start trials and one family baseline
    assert hv["family"] == pytest.approx(area([(0.4, 6.0), (0.3, 7.0), (0.24, 7.0)]))
    assert hv["engine searched"] == pytest.approx(area([(0.35, 6.0), (0.2, 6.0)]))
    assert hv["engine (all trials)"] == pytest.approx(area([(0.4, 6.0), (0.3, 7.0), (0.35, 6.0), (0.2, 6.0)]))
    assert row["trials"]["random"] == 2 and "moasha" not in hv
    assert row["reach"]["engine searched"]["trials"] == 5 and row["reach"]["engine searched"]["seconds"] == 40.0
    assert row["reach"]["random"] == {"reached": True, "seconds": 60.0, "epochs": 20, "trials": 2}
    # the family baseline (trained past the budget) is no study trial: the engine's own family trials
    # (1.3) and trial 3 (1.35) stay below the family's 1.36; trial 4 reaches it
    assert row["reach"]["engine (all trials)"]["trials"] == 5
    table = "\n".join(bench.markdown({"dataset": "toy", "budget_s": 60.0, "reference": list(REF), "reference_note": "by hand",
                                      "seeds": [row], "summary": bench.dataset_summary([row])}))
    assert "| family | " in table and "(the target)" in table and "| random | " in table and "1/1 seeds reached" in table
    assert bench.dataset_summary([row])["searched_beats_family_every_seed"]  # 1.6 > 1.36


def test_median_over_seeds_counts_a_seed_that_never_reached_as_infinite():
    hit = {"reached": True, "seconds": 10.0, "epochs": 4, "trials": 2}
    miss = {"reached": False, "seconds": 99.0, "epochs": 30, "trials": 9}
    assert bench.median_reach([hit, hit, miss])["seconds"] == 10.0
    two_misses = bench.median_reach([hit, miss, miss])
    assert two_misses["seconds"] is None and two_misses["reached"] == 1
    assert two_misses["spent_when_not_reached"] == [99.0, 99.0]


def test_finalist_pairs_need_disjoint_intervals_and_no_more_macs():
    def entrant(label, kind, dice, ci, macs, family=None):
        return {"label": label, "kind": kind, "dice": dice, "ci": ci, "costs": {"macs": macs}, "family": family}

    summary = {"entrants": [entrant("trial 7", "finalist", 0.85, [0.82, 0.88], 10**6),
                            entrant("trial 9", "finalist", 0.90, [0.86, 0.94], 10**8),
                            entrant("family-unet-m1", "baseline", 0.78, [0.75, 0.81], 2 * 10**6, "family-unet-m1"),
                            entrant("family-unet-m0", "baseline", 0.84, [0.80, 0.86], 10**6, "family-unet-m0"),
                            entrant("unet-16", "baseline", 0.5, [0.4, 0.6], 10**9)]}  # a preset, not the family
    pairs = bench.dominating_pairs(summary)
    assert len(pairs) == 1 and pairs[0].startswith("trial 7") and "family-unet-m1" in pairs[0]


def summary(searched_wins, engine_s, random_s, moasha_s, pairs):
    def entry(seconds):
        return {"seconds": seconds, "epochs": None, "reached": int(seconds is not None), "seeds": 1,
                "spent_when_not_reached": [] if seconds is not None else [500.0]}

    return {"searched_beats_family_every_seed": searched_wins, "finalist_pairs": pairs,
            "reach": {"engine searched": entry(engine_s), "random": entry(random_s), "moasha": entry(moasha_s)}}


def test_goal_verdicts_say_met_not_met_and_not_measured():
    front, random, moasha = (bench.GOALS[k] for k in ("front", "random", "moasha"))
    good = {name: summary(True, 100.0, 400.0, 120.0, ["trial 7 over m1"]) for name in ("a", "b")}
    verdicts = bench.goals(good)
    assert all(verdicts[k].startswith("met") for k in (front, random, moasha)), verdicts
    slow = bench.goals({"a": summary(True, 150.0, 400.0, 120.0, None)})
    assert slow[random].startswith("not met") and slow[moasha].startswith("not met")
    assert slow[front].startswith("not measured")  # no finalist stage, and 2 datasets not run
    # random never reached: 100 s <= 500 / 4 is met; 150 s is not decidable
    assert bench.goals({"a": summary(False, 100.0, None, None, [])}, 1)[random].startswith("met")
    undecided = bench.goals({"a": summary(False, 150.0, None, None, [])}, 1)
    assert undecided[random].startswith("not measured") and undecided[front].startswith("not met")
    assert bench.goals({"a": summary(True, None, 10.0, 10.0, [])}, 1)[moasha].startswith("not met")
    two_misses = {name: summary(False, 100.0, 400.0, 120.0, []) for name in ("a", "b")}
    assert bench.goals(two_misses)[front].startswith("not met")  # 0 met + 1 dataset not run < 2
    no_moasha = {"a": {**summary(True, 100.0, 400.0, None, []), "reach": {"engine searched": summary(
        True, 100.0, 1, 1, [])["reach"]["engine searched"], "random": summary(True, 1, 400.0, 1, [])["reach"]["random"]}}}
    assert bench.goals(no_moasha)[moasha].startswith("not measured")


needs_syne_tune = pytest.mark.skipif(importlib.util.find_spec("syne_tune") is None or importlib.util.find_spec("dill")
                                     is None, reason="syne-tune is not installed (pip install .[bench]): arm (d) only")


def rung_one(priority, points):
    """MOASHA's decisions for trials arriving one by one at rung 1 with (1 - Dice, MACs)."""
    import datetime

    from syne_tune.backend.trial_status import Trial

    scheduler = bench.moasha_scheduler(1, epochs=9, grace=1, eta=3, seed=0, priority=priority)
    decisions = []
    for number, (error, macs) in enumerate(points):
        trial = Trial(trial_id=number, config={}, creation_time=datetime.datetime.now())
        scheduler.on_trial_add(trial)
        decisions.append(scheduler.on_trial_result(trial, {"epoch": 1, "error": error, "cost0": macs}))
    return decisions


@needs_syne_tune
def test_moasha_ranked_priority_keeps_the_trial_that_dominates_its_rung():
    points = [(0.2, 1.0), (0.5, 5.0), (0.6, 6.0), (0.1, 0.5)]  # the last dominates every peer
    assert rung_one("shipped", points)[-1] == "STOP"  # Syne Tune 0.16: the order read as priorities
    assert rung_one("ranked", points) == ["CONTINUE", "STOP", "STOP", "CONTINUE"]
    assert rung_one("ranked", [(0.2, 1.0), (0.3, 0.8), (0.1, 2.0), (0.9, 9.0)])[-1] == "STOP"  # dominated by all


@needs_syne_tune
def test_moasha_port_stops_the_trial_through_the_policys_exception():
    import optuna

    from nas.engine.early_stop import EarlyStopped

    study = optuna.create_study(directions=["maximize", "minimize"])
    scheduler = bench.moasha_scheduler(1, epochs=9, grace=1, eta=3, seed=0)
    for dice, macs in ((0.8, 1e6), (0.85, 2e6), (0.9, 3e6)):  # a front: all go on
        port = bench.MoashaPort(study, study.ask(), scheduler, 9)
        port.costs_known([macs])
        port.epoch_done([dice], 1.0)
    trial = study.ask()
    port = bench.MoashaPort(study, trial, scheduler, 9)
    port.costs_known([4e6])
    with pytest.raises(EarlyStopped) as stop:
        port.epoch_done([0.5], 1.0)  # dominated by the three at rung 1
    assert stop.value.epoch == 1 and "MOASHA" in str(stop.value)
    assert trial.user_attrs["epoch_dice"] == [0.5] and trial.user_attrs["objective_costs"] == [4e6]  # the engine's attrs


def test_budgets_per_dataset_with_a_default_and_one_line_errors():
    assert bench.budgets("900,isbi2012_em=3600", ["synthetic", "isbi2012_em"]) == {"synthetic": 900.0,
                                                                                   "isbi2012_em": 3600.0}
    for text, words in (("abc", "not a positive number"), ("synthetic=0", "not a positive number"),
                        ("mnist=5", "unknown dataset"), ("isbi2012_em=5", "no budget for synthetic")):
        with pytest.raises(ValueError, match=words):
            bench.budgets(text, ["synthetic"])


@needs_moocore
def test_a_variant_arm_is_read_like_the_engine_with_and_without_its_family_trials():
    """--arms gp / compact: (a) with one default changed keeps its own warm-start trials out of 'searched'."""
    gp = [trial(0, 0.6, 10**6, family="family-unet-m0"), trial(1, 0.9, 10**6)]
    row = bench.seed_result({"engine": engine_records(), "random": [trial(0, 0.5, 10**6)], "gp": gp}, REF)
    assert row["hypervolume"]["gp (all trials)"] == pytest.approx(area([(0.4, 6.0), (0.1, 6.0)]))
    assert row["hypervolume"]["gp searched"] == pytest.approx(area([(0.1, 6.0)]))
    assert row["reach"]["gp searched"] == {"reached": True, "seconds": 20.0, "epochs": 4, "trials": 2}
    table = "\n".join(bench.markdown({"dataset": "toy", "budget_s": 60.0, "reference": list(REF), "reference_note": "",
                                      "seeds": [row], "summary": bench.dataset_summary([row])}))
    assert "| gp (all trials) | " in table and "| gp searched | " in table


def test_arms_must_include_the_engine_and_be_known():
    for arms in ("random,moasha", "engine,bogus"):
        with pytest.raises(SystemExit) as error:
            bench.main(["--arms", arms, "--no-moasha"])
        assert error.value.code == 2


def test_the_random_arm_is_plain_random_search_without_the_engines_start():
    """Arm (b) is the rival of issue 25: no family, no cost strata, no stopping, the random sampler."""
    from search_vs_family_parts.arms import ARM_FLAGS, search_config

    args = bench.argparse.Namespace(epochs=2, image_size=32, smoke=False, patches_per_epoch=None, family_rungs=3)
    config = search_config("random", "synthetic", Path("unused"), args, seed=0, budget=60.0)
    assert (config.sampler, config.early_stop, config.warm_start, config.cost_strata) == ("random", "none", "none", 0)
    assert config.baselines == () and ARM_FLAGS["moasha"] == ARM_FLAGS["random"]
    assert search_config("engine", "synthetic", Path("unused"), args, seed=0, budget=60.0).cost_strata > 0


def test_the_half_cost_match_is_against_the_best_family_member_at_half_its_macs():
    def entrant(label, kind, dice, macs, family=None):
        return {"label": label, "kind": kind, "dice": dice, "costs": {"macs": macs}, "family": family}

    def verdict(baseline, finalist, macs_saving):
        return {"baseline": baseline, "finalist": finalist, "savings": {"macs": macs_saving} if finalist else {},
                "text": f"{finalist} matches {baseline}" if finalist else f"no finalist matches {baseline}"}

    entrants = [entrant("trial 7", "finalist", 0.85, 10**6), entrant("family-unet-m0", "baseline", 0.84, 2 * 10**6, "m0"),
                entrant("family-unet-m1", "baseline", 0.86, 8 * 10**6, "m1"), entrant("unet-16", "baseline", 0.95, 10**6)]
    best_matched = {"entrants": entrants, "verdicts": [verdict("family-unet-m0", "trial 7", 2.0),
                                                       verdict("family-unet-m1", "trial 7", 8.0)]}
    assert bench.half_cost_match(best_matched) == "trial 7 matches family-unet-m1"  # the preset is not the family
    only_weaker = {"entrants": entrants, "verdicts": [verdict("family-unet-m0", "trial 7", 2.0),
                                                      verdict("family-unet-m1", None, 0.0)]}
    assert bench.half_cost_match(only_weaker) is None  # matching a weaker member does not count
    too_dear = {"entrants": entrants, "verdicts": [verdict("family-unet-m1", "trial 7", 1.5)]}
    assert bench.half_cost_match(too_dear) is None  # a match at 1.5x fewer MACs is not half
    seeds = [{"seed": n, "finalize": {"half_cost_match": "x" if n < hits else None}} for n in range(5)
             for hits in [3]]
    assert bench.live_goal({"dataset": "toy", "seeds": seeds}).startswith("met on toy: 3 of 5")
    seeds[0]["finalize"]["half_cost_match"] = None
    assert bench.live_goal({"dataset": "toy", "seeds": seeds}).startswith("not met on toy: 2 of 5")
    assert bench.live_goal({"dataset": "toy", "seeds": [{"seed": 0}]}).startswith("not measured")


@needs_moocore
def test_the_test_hypervolume_scores_the_validation_selected_front_on_test():
    """A model off the validation front does not count on test however well it tests: selection is on
    validation, the claim on test (as the run deploys best/)."""
    def tested(number, val, test, macs):
        return TrialRecord.from_metrics(number, "COMPLETE", {"quality": {"val": {"dice": val}, "test": {"dice": test}}},
                                        dice=val, macs=macs, seconds=1.0, epoch_dice=[val])

    random = [tested(0, 0.8, 0.7, 10**6), tested(1, 0.6, 0.95, 10**7)]  # 1 is dominated on validation
    assert bench.test_points(random) == [(pytest.approx(0.3), 6.0)]
    row = bench.seed_result({"engine": [tested(0, 0.5, 0.6, 10**5)], "random": random}, REF)
    assert row["test_hypervolume"]["random"] == pytest.approx(area([(0.3, 6.0)]))
    assert row["test_hypervolume"]["engine (all trials)"] == pytest.approx(area([(0.4, 5.0)]))
    assert row["test_hypervolume"]["family"] == 0.0  # no family member ran
    table = "\n".join(bench.markdown({"dataset": "toy", "budget_s": 60.0, "reference": list(REF), "reference_note": "",
                                      "seeds": [row], "summary": bench.dataset_summary([row])}))
    assert f"| random | {row['hypervolume']['random']:.4f} ± 0.0000 | {area([(0.3, 6.0)]):.4f} ± 0.0000 (" in table
