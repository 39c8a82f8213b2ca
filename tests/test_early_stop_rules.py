"""The early-stopping rules on constructed curves: halving, MO-ASHA (non-dominated rank), later rungs,
none; and how ``--early-stop`` / ``--early-stop-rungs`` become a policy."""
from __future__ import annotations

import pytest

from nas.engine.early_stop import RULES, RungPoint, RungPolicy, early_stop_policy, rung_verdict
from nas.results.pareto import nondominated_ranks
from nas.run.search_config import SearchConfig, SearchError

MOASHA = RungPolicy(rungs=(1, 3), rule="moasha")
HALVING = RungPolicy(rungs=(1, 3))


def peers(*points: tuple[float, float]) -> list[RungPoint]:
    return [RungPoint(i, dice, (macs,)) for i, (dice, macs) in enumerate(points)]


# --- non-dominated sorting ---------------------------------------------------------------------

def test_nondominated_ranks_peel_fronts_and_equal_points_share_one():
    # (-dice, macs): lower is better on both
    assert nondominated_ranks([(-0.8, 1), (-0.9, 5), (-0.7, 2), (-0.7, 2), (-0.5, 9)]) == [0, 0, 1, 1, 2]
    assert nondominated_ranks([]) == []
    assert nondominated_ranks([(1.0,), (0.0,), (0.0,)]) == [1, 0, 0]


def test_nondominated_ranks_off_one_matrix_equal_peeling_front_by_front():
    import numpy as np

    from nas.results.pareto import _ranks_by_peeling

    rng = np.random.default_rng(0)
    for n, k in ((1, 2), (7, 2), (60, 2), (200, 3), (150, 2)):
        rows = rng.integers(0, 6, size=(n, k)).astype(float)  # many ties and equal rows
        rows[rng.random((n, k)) < 0.05] = np.nan
        assert nondominated_ranks(rows.tolist()) == _ranks_by_peeling(rows)


# --- MO-ASHA -----------------------------------------------------------------------------------

def test_moasha_stops_a_trial_behind_most_peers_on_both_axes():
    field = peers((0.8, 1e6), (0.85, 2e6), (0.9, 4e6), (0.7, 0.5e6))  # one front of four
    reason = rung_verdict(MOASHA, 1, [0.3], (5e6,), field)  # worse and dearer than all: front 2, 4 of 5 ahead
    assert reason is not None and "non-dominated front 2" in reason and "4 on better fronts" in reason


def test_moasha_keeps_a_trial_on_the_first_front_even_with_a_low_dice():
    field = peers((0.8, 2e6), (0.85, 3e6), (0.9, 4e6))
    assert rung_verdict(MOASHA, 1, [0.2], (1e6,), field) is None  # the cheapest: nobody dominates it
    assert rung_verdict(MOASHA, 1, [0.95], (9e6,), field) is None  # the best Dice: nobody dominates it


def test_moasha_stops_only_beyond_the_top_third():
    # ranks are whole fronts (Syne Tune's rank share): a trial behind a first front of 4 stops, even
    # though only one of them dominates it
    wide_front = peers((0.9, 1e6), (0.5, 0.5e6), (0.95, 8e6), (0.6, 0.7e6))
    assert rung_verdict(MOASHA, 1, [0.8], (2e6,), wide_front) is not None
    # first front of 1, the trial on the second with 2 others, one trial behind: 1 of 5 ahead goes on
    field = peers((0.9, 1e6), (0.75, 1.5e6), (0.85, 3e6), (0.5, 9e6))
    assert rung_verdict(MOASHA, 1, [0.8], (2e6,), field) is None
    field.append(RungPoint(7, 0.95, (1.2e6,)))  # 2 of 6 ahead: exactly 1/3 still goes on
    assert rung_verdict(MOASHA, 1, [0.8], (2e6,), field) is None
    field.append(RungPoint(8, 0.97, (1.4e6,)))  # 3 of 7 ahead: stopped
    assert "3 on better fronts" in rung_verdict(MOASHA, 1, [0.8], (2e6,), field)


def test_moasha_ties_share_a_front_and_never_stop_each_other():
    same = [RungPoint(i, 0.6, (2e6,)) for i in range(6)]
    assert rung_verdict(MOASHA, 1, [0.6], (2e6,), same) is None


def test_moasha_waits_for_enough_peers_and_decides_only_at_rungs():
    strong = peers((0.9, 1e6), (0.9, 1e6))
    assert rung_verdict(MOASHA, 1, [0.1], (9e6,), strong) is None  # 2 peers < min_peers 3
    assert rung_verdict(MOASHA, 1, [0.1], (9e6,), strong + peers((0.9, 1e6))) is not None
    assert rung_verdict(MOASHA, 2, [0.1, 0.1], (9e6,), strong * 3) is None  # epoch 2 is not a rung


def test_moasha_ranks_by_every_cost_objective():
    # better Dice elsewhere but each peer costs more on the second objective: all on one front
    field = [RungPoint(i, 0.9, (1e6, 20.0)) for i in range(5)]
    assert rung_verdict(MOASHA, 1, [0.5], (2e6, 10.0), field) is None
    assert rung_verdict(MOASHA, 1, [0.5], (2e6, 30.0), field) is not None


# --- halving, the rule the rungs decide with by default -----------------------------------------

def test_halving_and_moasha_differ_where_they_should():
    # dearer peers with a better Dice: halving ignores them (only cheaper peers count), MO-ASHA
    # does not stop either (the trial is cheaper, so not dominated); cheaper better peers stop both
    dearer = peers((0.9, 9e6), (0.9, 9e6), (0.9, 9e6), (0.9, 9e6))
    assert rung_verdict(HALVING, 1, [0.3], (1e6,), dearer) is None
    assert rung_verdict(MOASHA, 1, [0.3], (1e6,), dearer) is None
    cheaper = peers((0.9, 0.5e6), (0.9, 0.5e6), (0.9, 0.5e6), (0.9, 0.5e6))
    assert rung_verdict(HALVING, 1, [0.3], (1e6,), cheaper) is not None
    assert rung_verdict(MOASHA, 1, [0.3], (1e6,), cheaper) is not None


def test_the_rung_dice_is_the_best_epoch_so_far():
    field = peers((0.8, 1e6), (0.8, 1e6), (0.8, 1e6))
    assert rung_verdict(MOASHA, 3, [0.85, 0.3, 0.2], (1e6,), field) is None  # epoch 1's 0.85 counts
    assert rung_verdict(MOASHA, 3, [0.5, 0.3, 0.2], (1e6,), field) is not None


# --- later rungs, none, and the flags ----------------------------------------------------------

def test_later_rungs_leave_early_epochs_alone():
    policy = early_stop_policy("halving", 10, (3, 6))
    field = peers((0.9, 1e6), (0.9, 1e6), (0.9, 1e6), (0.9, 1e6))
    assert policy.rungs == (3, 6)
    assert rung_verdict(policy, 1, [0.1], (5e6,), field) is None  # epoch 1 is noise: no rung there
    assert rung_verdict(policy, 3, [0.1, 0.1, 0.1], (5e6,), field) is not None


def test_policies_from_the_flags():
    assert early_stop_policy("none", 10) is None
    assert early_stop_policy("halving", 10) == RungPolicy((1, 3, 9))
    assert early_stop_policy("moasha", 10).to_dict() == {"rule": "moasha", "rungs": [1, 3, 9], "eta": 3,
                                                         "min_peers": 3}
    assert RungPolicy.for_epochs(10, first=3).rungs == (3, 9)
    with pytest.raises(ValueError, match="--early-stop-rungs 10 is not below --epochs 10"):
        early_stop_policy("moasha", 10, (3, 10))
    with pytest.raises(ValueError, match="unknown early-stopping rule 'asha'"):
        early_stop_policy("asha", 10)
    with pytest.raises(ValueError, match="bad early-stopping policy"):
        RungPolicy((1,), rule="none")


@pytest.mark.parametrize("value, rule", [(True, "halving"), (False, "none"), ("on", "halving"), ("off", "none"),
                                         *((r, r) for r in RULES)])
def test_the_config_takes_rule_names_and_the_old_switch(value, rule):
    assert SearchConfig(early_stop=value).early_stop == rule


@pytest.mark.parametrize("kwargs, needle", [
    ({"early_stop": "asha"}, "--early-stop must be one of halving, moasha, none (or on/off), got 'asha'"),
    ({"early_stop_rungs": "3,x"}, "--early-stop-rungs must be epochs such as 3,9, got '3,x'"),
    ({"early_stop_rungs": "6,3"}, "--early-stop-rungs must be increasing epochs >= 1, got 6,3"),
    ({"early_stop_rungs": "0"}, "--early-stop-rungs must be increasing epochs >= 1, got 0"),
    ({"early_stop_rungs": "3,10", "epochs": 10}, "--early-stop-rungs 10 is not below --epochs 10"),
    ({"early_stop_rungs": "3", "early_stop": "none"}, "--early-stop-rungs needs --early-stop halving or moasha"),
])
def test_bad_rules_and_rungs_are_one_line(kwargs, needle):
    with pytest.raises(SearchError, match="^" + needle.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig(**kwargs)


def test_rungs_survive_the_flags():
    from nas.cli.search import build_parser, config_from_args

    config = SearchConfig(early_stop="moasha", early_stop_rungs="2,4")
    assert config.early_stop_rungs == (2, 4)
    assert config.to_argv() == ["--early-stop", "moasha", "--early-stop-rungs", "2,4"]
    assert config_from_args(build_parser().parse_args(config.to_argv())) == config
