"""``--search-seed``: the sampler and the cost strata reseeded, the data and the training left to ``--seed``."""
from __future__ import annotations

import optuna

import nas
from nas.engine.optuna_adapter.study import run_storage
from nas.run.search_config import SearchConfig


def _search(out, **seeds):
    config = SearchConfig(trials=1, out=out, epochs=1, image_size=32, device="cpu", patches_per_epoch=8,
                          fix={"depth": 3, "base_width": 8}, cost_strata=1, warm_start="none", baselines="none",
                          seed=3, **seeds)
    assert nas.run_search(config).status == "completed"
    study = optuna.load_study(study_name=None, storage=run_storage(out))
    records = nas.open_run(out).records
    return [t.params for t in study.get_trials()], [r.dice for r in records], study.user_attrs


def test_the_search_seed_moves_the_proposals_not_the_data_or_the_training(tmp_path):
    params, dice, attrs = _search(tmp_path / "a")
    same_params, same_dice, same_attrs = _search(tmp_path / "b", search_seed=3)
    other_params, _, other_attrs = _search(tmp_path / "c", search_seed=11)
    assert (same_params, same_dice) == (params, dice)  # --search-seed 3 is --seed 3's own search
    assert other_params != params  # other cost strata drawn
    assert attrs == same_attrs == other_attrs  # the same data (its fingerprint) and settings in the study
    assert SearchConfig(search_seed=11).to_argv() == ["--search-seed", "11"]
    assert SearchConfig(seed=5).sampler_seed == 5 and SearchConfig(seed=5, search_seed=0).sampler_seed == 0
