"""Cost strata (issue 25): the first proposals cover the space's MAC range, cheapest first."""
from __future__ import annotations

import math

import pytest
import torch

from search_spaces import get_space
from search_spaces.overrides import make_restriction

from nas.costs.measure import count_macs, count_macs_on_meta
from nas.engine.strata import draw_strata


_KNOWN: dict = {}


def _macs(space, size=64):
    def macs_of(spec):  # memoised: the tests draw the same architectures more than once
        if spec not in _KNOWN:
            with torch.device("meta"):
                model = space.build_model(spec, 1, 1)
            _KNOWN[spec] = count_macs_on_meta(model, (1, 1, size, size))
        return _KNOWN[spec]
    return macs_of


def test_the_meta_count_equals_the_dispatch_count():
    from search_spaces import RandomSuggest

    space = get_space("resunet")
    macs_of = _macs(space, 96)
    for seed in range(3):
        spec = space.sample_spec(RandomSuggest(seed))
        if 96 // spec.downsampling_factor >= 2:
            assert macs_of(spec) == count_macs(space.build_model(spec, 1, 1), (1, 1, 96, 96)), spec.summary()


def test_every_stratum_is_covered_cheapest_first_and_the_draw_is_seeded():
    space = get_space("resunet")
    macs_of = _macs(space)
    fits = lambda spec: 64 // spec.downsampling_factor >= 2  # noqa: E731
    strata = draw_strata(space, count=5, seed=3, macs_of=macs_of, fits=fits, pool=20)
    assert [s.index for s in strata] == sorted(s.index for s in strata)
    assert [s.macs for s in strata] == sorted(s.macs for s in strata)
    assert len(strata) >= 4  # 20 uniform draws leave at most one of 5 log-MAC strata empty here
    # the spread is the pool's: the cheapest and the costliest stratum are a decade or more apart
    assert math.log10(strata[-1].macs / strata[0].macs) > 1.0
    again = draw_strata(space, count=5, seed=3, macs_of=macs_of, fits=fits, pool=20)
    assert [s.params for s in again] == [s.params for s in strata]
    other = draw_strata(space, count=5, seed=4, macs_of=macs_of, fits=fits, pool=20)
    assert [s.params for s in other] != [s.params for s in strata]
    # the params rebuild the architecture they were drawn as
    from search_spaces.family_designs import space_point

    for stratum in strata:
        assert space_point(space.sample_spec, stratum.params)[1].summary() == stratum.summary


def test_what_the_run_cannot_train_is_never_queued_and_a_fix_holds():
    space = get_space("resunet")
    macs_of = _macs(space)
    limit = 20e6
    strata = draw_strata(space, count=3, seed=0, macs_of=macs_of, pool=9, max_macs=limit,
                         fits=lambda spec: 64 // spec.downsampling_factor >= 2,
                         restriction=make_restriction(space.dimensions, {"depth": 3}, {}))
    assert strata and all(s.macs <= limit for s in strata)
    assert all("depth" not in s.params for s in strata)  # fixed dimensions never reach the sampler
    assert draw_strata(space, count=0, seed=0, macs_of=macs_of) == []
    assert draw_strata(space, count=3, seed=0, macs_of=macs_of, fits=lambda spec: False, pool=6) == []
    deep = draw_strata(space, count=2, seed=0, pool=4, fits=lambda spec: spec.depth < 5,
                       macs_of=lambda spec: (_ for _ in ()).throw(AssertionError("counted")) if spec.depth >= 5 else 1)
    assert all(s.macs == 1 for s in deep)  # what does not fit is never counted


def test_the_start_queue_merges_family_and_strata_cheapest_first_and_never_twice(monkeypatch):
    """What ``nas-search`` queues before its sampler: family members and cost strata in one MAC order,
    labelled apart (a stratum is a searched trial: never a family member), topped up on resume."""
    from types import SimpleNamespace

    import numpy as np
    import optuna

    import nas
    import nas.run.start as start
    from nas.costs.constraints import Constraints
    from nas.engine.optuna_adapter.warm_start import start_name
    from search_spaces.overrides import Restriction

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space("resunet")
    members = [SimpleNamespace(name=f"family-unet-m{i}", rung=i, design="unet", macs=m, point_macs=m,
                               to_dict=lambda i=i, m=m: {"name": f"family-unet-m{i}", "params": {"base_width": 8 + i},
                                                         "target_macs": m})
               for i, m in enumerate((20e6, 80e6))]
    monkeypatch.setattr(start, "study_family", lambda plan, study, log: members)
    plan = SimpleNamespace(config=nas.SearchConfig(trials=20, cost_strata=3, seed=1), space=space,
                           data=SimpleNamespace(in_channels=1, train_images=[np.zeros((1, 64, 64))]),
                           constraints=Constraints(), restriction=Restriction())
    study = optuna.create_study(directions=["maximize", "minimize"])
    lines: list[str] = []
    assert start.start_search(plan, study, lines.append, macs_of=_macs(space)) == members
    queued = study.get_trials(deepcopy=False)
    names = [start_name(t) for t in queued]
    assert len(names) == 5 and set(names) >= {"family-unet-m0", "family-unet-m1", "stratum-0", "stratum-1"}
    macs = {t.user_attrs.get("family") or t.user_attrs["cost_stratum"]: t for t in queued}
    assert all("family" not in macs[n].user_attrs for n in names if n.startswith("stratum"))
    order = [20e6 if n == "family-unet-m0" else 80e6 if n == "family-unet-m1" else None for n in names]
    strata = draw_strata(space, count=3, seed=1, macs_of=_macs(space))
    by_name = {s.name: s.macs for s in strata}
    order = [o if o is not None else by_name[n] for o, n in zip(order, names)]
    assert order == sorted(order)  # one queue, cheapest first
    assert lines[0].startswith("start: 5 trial(s) queued cheapest first")
    # a resume of a study that ran only start trials queues nothing twice
    assert start.start_search(plan, study, lines.append, macs_of=_macs(space)) == members
    assert len(study.get_trials(deepcopy=False)) == 5


@pytest.mark.slow
def test_a_search_runs_its_strata_first_cheapest_first_as_searched_trials(tmp_path, capsys):
    import optuna

    import nas
    from nas.engine.optuna_adapter.study import run_storage
    from nas.results.family_records import searched_records

    out = tmp_path / "run"
    result = nas.run_search(nas.SearchConfig(trials=2, out=out, epochs=1, image_size=32, seed=3, device="cpu",
                                             patches_per_epoch=8, fix={"depth": 3, "base_width": 8}, cost_strata=2,
                                             warm_start="none", baselines="none"))
    assert result.status == "completed"
    assert "start: 2 trial(s) queued cheapest first" in capsys.readouterr().out
    study = optuna.load_study(study_name=None, storage=run_storage(out))
    trials = study.get_trials()
    assert [t.user_attrs.get("cost_stratum") for t in trials] == ["stratum-0", "stratum-1"]
    assert not any(t.user_attrs.get("family") for t in trials)
    records = nas.open_run(out).records
    assert [r.number for r in searched_records(records)] == [0, 1]  # searched trials, not baselines
    assert records[0].macs < records[1].macs


def test_the_default_start_is_pinned_to_the_replay_that_chose_it():
    """The defaults ``--cost-strata 6`` with ``--warm-start family`` were chosen on the tabulated benchmark's
    30-seed replay against the previous default (``engine-nostrata``), random search and Syne Tune's MOASHA:
    benchmarks/RESULTS.md, section "The search earns its compute". Change them only with a new replay."""
    from pathlib import Path

    from nas.bench.experiment import ARMS
    from nas.run.search_config import SearchConfig

    assert SearchConfig().cost_strata == 6 and SearchConfig().warm_start == "family"
    assert SearchConfig().sampler == "tpe" and SearchConfig().early_stop == "halving"
    assert ARMS["engine-nostrata"].cost_strata == 0 and ARMS["engine"].cost_strata is None
    results = (Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert "## The search earns its compute" in results and "engine-nostrata" in results
