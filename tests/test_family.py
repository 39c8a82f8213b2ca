"""The baseline family (issue 14): the planner's MAC targets and tolerance, members that rebuild from
JSON, the warm start that queues exactly the family once, the old behaviour with none, the finalist
stage and the report's family front."""
from __future__ import annotations

import json
import math

import pytest

from search_spaces import get_space
from search_spaces.family_designs import (DESIGNS, base_widths, design_template, planned_depth, scaled,
                                          space_point, spec_params)
from search_spaces.overrides import make_restriction

import nas.stages.family_planning as family
from nas.costs.measure import count_macs
from nas.results.family_records import family_fronts, family_name
from nas.results.records import TrialRecord
from nas.stages.family_planning import (TOLERANCE, FamilyMember, MacCounter, fit_width, mac_ladder, plan_family)

SPACE = get_space("resunet")
LOW, HIGH = 1 / (1 + TOLERANCE), 1 + TOLERANCE  # met within +25 % / -20 %


@pytest.fixture(scope="module")
def planned():
    """The family of the default space at 64 px."""
    return plan_family(SPACE, image_size=64, rungs=3)


def test_depth_is_planned_as_nnunet_plans_it():
    assert [planned_depth(side, 3, 6) for side in (16, 32, 64, 128, 512)] == [3, 4, 5, 6, 6]
    assert planned_depth(64, 3, 4) == 4 and planned_depth(8, 3, 6) == 3  # within the space's depth range


def test_base_widths_step_at_most_a_quarter():
    widths = base_widths()
    assert widths[:10] == [4, 5, 6, 7, 8, 10, 12, 14, 16, 20]
    assert all(b / a <= 1.25 for a, b in zip(widths, widths[1:]))


def test_ladder_is_geometric_between_the_range_ends():
    ladder = mac_ladder(10e6, 250e6, 3)
    assert ladder == [10_000_000, 50_000_000, 250_000_000]
    assert mac_ladder(4e6, 9e6, 1) == [6_000_000]


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_width_bisection_meets_every_target_within_the_tolerance_at_64px(design):
    macs = MacCounter(SPACE, 64, 1)
    template = design_template(design, SPACE.sample_spec, planned_depth(64, 3, 6))
    smallest = macs(scaled(template, 4))
    for target in (smallest * 1.1, smallest * 2.9, 37e6, 93e6, 240e6):
        spec, count = fit_width(template, target, macs)
        assert LOW <= count / target <= HIGH, (design, target, count)
        base = spec.encoder_widths[0]
        assert spec.encoder_widths == tuple(base * 2**i for i in range(5)) and base in base_widths()
        assert spec.decoder_widths == spec.encoder_widths[:-1] and spec.block == template.block


def test_planned_members_meet_their_targets_and_rebuild_from_json(planned):
    assert {m.design for m in planned} == set(DESIGNS) and len({m.name for m in planned}) == len(planned)
    by_design = {d: [m for m in planned if m.design == d] for d in DESIGNS}
    targets = [m.target_macs for m in by_design["resunet"]]
    assert targets == sorted(targets) and targets == [m.target_macs for m in by_design["unet"]]
    macs = MacCounter(SPACE, 64, 1)  # the range: the designs at the space's smallest and largest widths
    smallest = macs(space_point(SPACE.sample_spec, {**by_design["unet"][0].params, "depth": 3})[1])
    assert by_design["unet"][0].point_spec.encoder_widths == (8, 12, 18, 27, 40)
    assert targets[0] == smallest and targets[-1] == by_design["resunet"][-1].macs  # base 16, growth 2
    assert math.isclose(targets[1] / targets[0], targets[2] / targets[1], rel_tol=1e-3)  # geometric
    for member in planned:
        assert member.name == f"family-{member.design}-m{member.rung}" and member.spec.depth == 5
        assert LOW <= member.macs / member.target_macs <= HIGH
        again = FamilyMember.from_dict(json.loads(json.dumps(member.to_dict())), SPACE)
        assert again == member and again.spec == member.spec and again.params == member.params
        rebuilt = SPACE.spec_from_dict(json.loads(json.dumps(member.spec.to_dict())))
        assert count_macs(SPACE.build_model(rebuilt, 1, 1), (1, 1, 64, 64)) == member.macs
        # the space point: the spec its params give, exact when the space can say the planned widths
        assert space_point(SPACE.sample_spec, member.params)[1] == member.point_spec
        assert member.exact == (member.spec.encoder_widths[0] in (8, 12, 16))  # the space's base widths
    resunet = by_design["resunet"][0].spec
    assert (resunet.block, resunet.downsample, resunet.skip_fusion, resunet.upsample) == \
        ("preact", "strided", "concat", "bilinear_conv")  # resunet-standard as the space says it


def test_a_restriction_that_changes_the_design_leaves_it_out_and_depth_follows_a_fix():
    restriction = make_restriction(SPACE.dimensions, {"block": "plain", "depth": 3}, {})
    with pytest.raises(ValueError, match="resunet family does not fit the restriction: it changes its block"):
        design_template("resunet", SPACE.sample_spec, 5, restriction)
    unet = design_template("unet", SPACE.sample_spec, 5, restriction)
    assert unet.depth == 3 and unet.block == "plain"
    params, spec = space_point(SPACE.sample_spec, spec_params(scaled(unet, 4)), restriction)
    assert "depth" not in params and "block" not in params and spec.encoder_widths[0] == 8  # fixed, and clamped
    deep = make_restriction(SPACE.dimensions, {"depth": 5}, {})
    lines = []
    assert plan_family(SPACE, image_size=16, restriction=deep, log=lines.append) == [] and len(lines) == 2
    followed = make_restriction(SPACE.dimensions, {"norm": "group", "activation": "gelu"}, {})
    assert design_template("resunet", SPACE.sample_spec, 5, followed).norm == "group"  # still the design


def test_family_fronts_leave_the_family_out_of_the_searched_front():
    def record(number, dice, macs, member=None):
        metrics = {"dice": dice, "macs": int(macs), "trial": number, **({"family": member} if member else {})}
        return TrialRecord.from_metrics(number, "COMPLETE", metrics)

    records = [record(0, 0.80, 50e6, "family-unet-m1"), record(1, 0.70, 10e6, "family-unet-m0"),
               record(2, 0.75, 20e6), record(3, 0.60, 30e6), record(4, 0.85, 200e6, "family-unet-m2")]
    searched, fam = family_fronts(records)
    assert [r.number for r in searched.front] == [2] and [r.number for r in searched.dominated] == [3]
    assert [r.number for r in fam.front] == [1, 0, 4] and family_name(records[0]) == "family-unet-m1"


# ----------------------------------------------------------------------------- in a search
TINY = dict(epochs=1, image_size=32, seed=3, device="cpu", patches_per_epoch=8, family_rungs=1, fix={"depth": 3}, cost_strata=0)


def _study(out):
    import optuna

    from nas.engine.optuna_adapter.study import run_storage

    return optuna.load_study(study_name="resunet", storage=run_storage(out))


@pytest.mark.slow
def test_warm_start_queues_exactly_the_family_once_and_the_stages_know_it(tmp_path, capsys):
    import nas
    from nas.stages.baseline_training import baseline_records
    from nas.stages.finalist_training import entrants
    from nas.engine.optuna_adapter.warm_start import enqueue_start, family_plan
    from nas.results.family_records import family_records, searched_records
    from nas.results.pareto import DICE_MACS, pareto_front

    out = tmp_path / "run"
    result = nas.run_search(nas.SearchConfig(trials=2, out=out, **TINY))
    assert result.status == "completed"
    study = _study(out)
    plan = family_plan(study)
    assert [m["name"] for m in plan] == ["family-resunet-m0", "family-unet-m0"]
    trials = study.get_trials()
    cheapest_first = sorted(plan, key=lambda m: m["point_macs"])  # queued in one MAC order (nas.run.start)
    assert [t.user_attrs.get("family") for t in trials] == [m["name"] for m in cheapest_first]
    assert [t.params for t in trials] == [m["params"] for m in cheapest_first]  # the first trials: the family's points
    assert [t.user_attrs["spec"] for t in trials] == [m["point_spec"] for m in cheapest_first]
    assert not (out / "baselines").exists()  # --baselines family: the study holds them, none trained twice

    again = nas.run_search(nas.SearchConfig(trials=3, out=out, **TINY))  # resume with one more trial
    assert again.status == "completed" and "warm start:" not in capsys.readouterr().out.split("nas-search: space")[-1]
    trials = _study(out).get_trials()
    assert len(trials) == 3 and sum(bool(t.user_attrs.get("family")) for t in trials) == 2
    assert trials[2].user_attrs.get("family") is None and enqueue_start(_study(out), plan, budget=5) == []

    records = nas.open_run(out).records
    assert [family_name(r) for r in family_records(records)] == [m["name"] for m in cheapest_first]
    assert [r.number for r in searched_records(records)] == [2]
    front = pareto_front(searched_records(records), DICE_MACS).front
    items = entrants(front, baseline_records(out), 3, "resunet", [r for r in family_records(records) if r.finished])
    assert [(e.key, e.kind, e.family) for e in items] == [
        ("trial_0002", "finalist", None), ("trial_0000", "baseline", cheapest_first[0]["name"]),
        ("trial_0001", "baseline", cheapest_first[1]["name"])]
    page = (out / "report.html").read_text()
    assert "family front (2)" in page and "family-unet-m0" in page
    assert "family front (2)" in (out / "pareto_macs.svg").read_text()


@pytest.mark.slow
def test_without_warm_start_the_family_is_trained_as_baselines_once(tmp_path):
    import nas
    from nas.stages.baseline_training import baseline_records, train_family
    from nas.engine.optuna_adapter.warm_start import family_plan

    out = tmp_path / "run"
    assert nas.run_search(nas.SearchConfig(trials=1, out=out, warm_start="none", **TINY)).status == "completed"
    study = _study(out)
    assert study.get_trials()[0].user_attrs.get("family") is None
    records = baseline_records(out)
    assert sorted(r.params["family"] for r in records) == ["family-resunet-m0", "family-unet-m0"]
    metrics = json.loads((out / "baselines" / "family-unet-m0" / "metrics.json").read_text())
    assert metrics["kind"] == "family" and metrics["family"] == "family-unet-m0" and metrics["family_target_macs"] > 0
    assert "family front (2)" in (out / "report.html").read_text()
    members = [FamilyMember.from_dict(m, SPACE) for m in family_plan(study)]
    assert all(m.params is None for m in members)  # no warm start: no space points planned
    lines = []
    train_family(members, SPACE, None, None, out, log=lines.append)  # resumable: nothing is trained again
    assert lines == [f"baseline {m.name}: already trained ({out / 'baselines' / m.name})" for m in members]


def test_none_and_none_plan_nothing_and_train_nothing(tmp_path):
    from types import SimpleNamespace

    import nas
    from nas.run.family_run import family_wanted, train_family_baselines, warm_start_active
    from nas.run.start import start_search
    from nas.run.search_plan import study_settings

    config = nas.SearchConfig(trials=1, out=tmp_path, baselines="none", warm_start="none", cost_strata=0)
    argv = config.to_argv()
    assert config.baselines == ()
    assert argv[argv.index("--baselines") + 1] == argv[argv.index("--warm-start") + 1] == "none"
    assert not family_wanted(config) and not warm_start_active(config)
    plan = SimpleNamespace(config=config, out=tmp_path)
    assert start_search(plan, None, print) == []  # the study (None here) is never touched
    train_family_baselines(plan, [], None, print)
    assert not family_wanted(nas.SearchConfig(baselines="unet-16", warm_start="none"))
    both = nas.SearchConfig(baselines="family,unet-16", warm_start="none")
    assert both.baselines == ("family", "unet-16") and family_wanted(both)
    from nas.cli.search import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--baselines", "none"])).baselines == ()
    assert config_from_args(build_parser().parse_args([])).baselines == ("family",)
    from nas.run.search_plan import _check_settings

    with pytest.raises(nas.SearchError, match="unknown preset 'unet-17'.*\\(or family, or none\\)"):
        _check_settings(nas.SearchConfig(baselines="family,unet-17"), tmp_path / "run")
    with pytest.raises(nas.SearchError, match="--warm-start must be one of family, none"):
        _check_settings(nas.SearchConfig(warm_start="presets"), tmp_path / "run")
    assert warm_start_active(nas.SearchConfig()) and warm_start_active(nas.SearchConfig(backend="ray"))


def test_enqueue_is_budgeted_cheapest_first_and_never_twice():
    import optuna

    from nas.engine.optuna_adapter.warm_start import enqueue_start, family_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    plan = [{"name": f"family-unet-m{i}", "params": {"base_width": 8 + 4 * i}, "target_macs": i + 1} for i in range(3)]
    assert enqueue_start(study, plan, budget=2) == ["family-unet-m0", "family-unet-m1"]
    assert enqueue_start(study, plan, budget=2) == ["family-unet-m2"]  # a resume tops up, never repeats
    assert enqueue_start(study, plan, budget=5) == [] and family_trials(study) == {
        "family-unet-m0": 0, "family-unet-m1": 1, "family-unet-m2": 2}
    fresh = optuna.create_study(directions=["maximize", "minimize"])
    fresh.add_trial(optuna.trial.create_trial(values=[0.5, 1.0]))  # a study that searched already
    assert enqueue_start(fresh, plan, budget=3) == [] and family_trials(fresh) == {}


def test_warm_start_is_sized_to_a_timeout_and_never_to_a_trial_budget():
    import nas
    from nas.run.family_run import WARM_START_SHARE, warm_start_until

    assert warm_start_until(nas.SearchConfig()) is None  # --trials is the budget: every queued member runs
    assert warm_start_until(nas.SearchConfig(timeout=600, warm_start="none")) is None
    assert warm_start_until(nas.SearchConfig(timeout=600), now=1000.0) == 1000.0 + WARM_START_SHARE * 600


def test_a_member_due_after_its_share_of_the_timeout_is_skipped_untrained(tmp_path):
    import nas
    from nas.results.outcome import StopReason

    out = tmp_path / "run"
    result = nas.run_search(nas.SearchConfig(trials=2, out=out, timeout=0.001, **TINY))  # the share is long past
    trials = _study(out).get_trials()
    member = trials[0].user_attrs.get("family")
    assert member in ("family-resunet-m0", "family-unet-m0")  # the cheaper of the two, first
    first = nas.open_run(out).records[0]
    assert first.state == "PRUNED" and first.stop_reason == StopReason.BUDGET and first.result.quality.dice is None
    assert first.message == f"warm start past its share of --timeout: {member} not run"
    assert not (out / "trials" / "trial_0000").exists() and result.status != "failed"
