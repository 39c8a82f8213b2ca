"""The benchmark loader, its Syne Tune blackbox and the surrogate, on a tiny fake table (no training)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from nas.bench.load import encode_params, load_table, spec_fields
from nas.bench.surrogate import cross_validate, fit_surrogate
from search_spaces import RandomSuggest, get_space
from search_spaces.presets import get_preset

EPOCHS = 10


def _row(arch_id: str, kind: str, spec, params, seed: int, rng: np.random.Generator) -> dict:
    """A row of the table's schema whose numbers follow the spec's size, plus seed noise."""
    spec_json = json.dumps(spec.to_dict())
    size = sum(w * w for w in spec.encoder_widths) * spec.blocks_per_stage
    macs, param_count = size * 4096, size * 9
    quality = 0.55 + 0.08 * math.log10(size) - 0.05 * (spec.block == "plain") + rng.normal(0, 0.01)
    curve = [quality * (1 - math.exp(-(e + 1) / 3)) + rng.normal(0, 0.005) for e in range(EPOCHS)]
    test = [c + 0.02 + rng.normal(0, 0.005) for c in curve]
    cpu = [macs / 4e8 * (1.2 if e == 0 else 1.0) + 0.3 for e in range(EPOCHS)]
    best = int(np.argmax(curve))
    return {"task": "synthetic", "arch_id": arch_id, "kind": kind, "seed": seed, "spec_key": spec_json,
            "spec": spec_json, "params": json.dumps(params) if params is not None else None, "macs": macs,
            "flops": 2 * macs, "param_count": param_count, "latency_ms": macs / 1e7, "latency_spread": 0.01,
            "latency_ms_search": macs / 1e7, "train_memory_mb": size / 1e3, "val_dice": curve, "test_dice": test,
            "loss": [1 - c for c in curve], "epoch_wall_s": cpu, "epoch_cpu_s": cpu,
            "final_val_dice": curve[best], "best_epoch": best + 1, "threshold": 0.5, "final_test_dice": test[best],
            "total_wall_s": sum(cpu) + 1, "total_cpu_s": sum(cpu) + 1, "train_wall_s": sum(cpu),
            "train_cpu_s": sum(cpu), "torch_threads": 1, "machine": "test", "torch": "x", "data_fingerprint": "f",
            "built_at": "2026-01-01T00:00:00Z"}


def fake_table() -> pd.DataFrame:
    """28 sampled architectures (every 10th with seeds 1 and 2) and one preset: 35 rows."""
    rng = np.random.default_rng(0)
    space = get_space("resunet")
    rows = []
    for i in range(28):
        suggest = RandomSuggest(seed=i)
        spec = space.sample_spec(suggest)
        for seed in ((0, 1, 2) if i % 10 == 0 else (0,)):
            rows.append(_row(f"s{i:04d}", "sample", spec, dict(suggest.params), seed, rng))
    rows.append(_row("preset-unet-16", "preset", get_preset("unet-16").spec, None, 0, rng))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return fake_table()


def test_load_table_reads_parquet_and_journal_and_dedupes(frame, tmp_path):
    head, tail = frame.iloc[:20], frame.iloc[15:]  # rows 15..19 in both: the parquet's copy wins
    head.to_parquet(tmp_path / "synthetic.parquet", index=False)
    changed = tail.assign(final_val_dice=-1.0)
    (tmp_path / "synthetic.journal.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in changed.to_dict("records")) + '{"cut by a kill', encoding="utf-8")
    table = load_table("synthetic", root=tmp_path)
    assert len(table) == len(frame)
    assert not table.duplicated(["arch_id", "seed"]).any()
    assert (table.iloc[:20]["final_val_dice"] >= 0).all()
    with pytest.raises(ValueError, match="unknown benchmark task"):
        load_table("nope", root=tmp_path)
    with pytest.raises(ValueError, match="no benchmark table"):
        load_table("isbi", root=tmp_path)


def test_encode_params_handles_presets_and_samples(frame):
    preset = get_preset("resunet-standard").spec  # bilinear: not a space point
    extra = pd.DataFrame([{"spec": json.dumps(preset.to_dict()), "macs": 10**9, "param_count": 8 * 10**6}])
    encoded = encode_params(pd.concat([frame[["spec", "macs", "param_count"]], extra], ignore_index=True))
    assert encoded.notna().all().all()
    assert list(encode_params(extra).columns) == list(encoded.columns)  # fixed one-hot levels
    last = encoded.iloc[-1]
    assert last["depth"] == 4 and last["width_3"] == 512 and last["width_4"] == 0 and last["width_5"] == 0
    assert last["upsample=bilinear"] == 1 and last["block=preact"] == 1 and last["log10_macs"] == 9
    assert spec_fields(preset)["skip_fusion"] == "concat"


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # Syne Tune 0.16's own set_index under pandas 3
def test_blackbox_answers_a_tabulated_configuration(frame):
    pytest.importorskip("syne_tune.blackbox_repository", reason="syne-tune is an optional dependency")
    from nas.bench.load import to_blackbox, with_surrogate

    blackbox = to_blackbox(frame)
    assert blackbox.objectives_evaluations.shape == (29, 1, EPOCHS, 5)
    config = blackbox.all_configurations()[3]
    row = frame[(frame["arch_id"] == blackbox.arch_ids[3]) & (frame["seed"] == 0)].iloc[0]
    at5 = blackbox.objective_function(config, fidelity={"epoch": 5}, seed=0)
    assert at5["val_dice"] == pytest.approx(row["val_dice"][4])
    assert at5["elapsed_cpu_s"] == pytest.approx(sum(row["epoch_cpu_s"][:5]))
    assert at5["macs"] == row["macs"]
    sample = {name: domain.sample(random_state=np.random.RandomState(0))
              for name, domain in blackbox.configuration_space.items()}
    assert set(sample) == set(config)  # a scheduler can sample the space
    surrogate = with_surrogate(blackbox)
    curve = surrogate.objective_function({**config, "width_0": config["width_0"] + 1}, seed=0)
    assert curve.shape == (EPOCHS, 5) and np.all(np.diff(curve[:, 2]) > 0)  # cumulative seconds keep growing
    answer = surrogate.objective_function(config, fidelity=5, seed=0)  # one fidelity: one value per objective
    assert answer == pytest.approx(dict(zip(blackbox.objectives_names, surrogate.objective_function(config)[4])))


def test_surrogate_fits_and_predicts(frame):
    surrogate = fit_surrogate(frame, model="ridge")
    predicted = surrogate.predict(frame.iloc[:4])
    assert list(predicted.columns) == ["final_val_dice", "final_test_dice", "val_dice", "epoch_cpu_s"]
    assert len(predicted) == 4 and all(len(c) == EPOCHS for c in predicted["val_dice"])
    assert all(min(c) > 0 for c in predicted["epoch_cpu_s"])
    bare = surrogate.predict([get_preset("unet-16").spec])  # a bare spec: costs counted on the meta device
    assert len(bare) == 1 and 0 <= bare["final_test_dice"].iloc[0] <= 1


def test_cross_validate_reports_finite_scores(frame):
    report = cross_validate(frame, folds=4, models=("ridge", "knn", "rf"))
    assert report["n_architectures"] == 29 and report["best"] in ("ridge", "knn", "rf")
    targets = {"final_val_dice", "final_test_dice", "val_dice@1", "val_dice@3", "val_dice@9", "log10_epoch_cpu_s"}
    for scores in report["models"].values():
        assert targets <= set(scores)
        assert all(math.isfinite(scores[t]["kendall_tau"]) and math.isfinite(scores[t]["r2"]) for t in targets)
    noise = report["noise_floor"]
    assert noise["n_architectures"] == 3 and noise["seeds_compared"] == 2
    assert all(math.isfinite(noise[t]["kendall_tau"]) for t in targets)
    # the ceiling: the mean of seeds 1 and 2 as a predictor of seed 0, and each model against the seed mean
    zero = frame[frame.seed == 0].set_index("arch_id")["final_test_dice"]
    others = frame[frame.seed != 0].groupby("arch_id")["final_test_dice"].mean()
    from scipy.stats import kendalltau
    assert math.isclose(noise["final_test_dice_ceiling"]["kendall_tau"],
                        kendalltau(zero.loc[others.index], others).statistic)
    assert all(-1 <= s["final_test_dice"]["kendall_tau_vs_seed_mean"] <= 1 for s in report["models"].values())


def test_predict_one_is_predict_for_one_architecture(frame):
    """The replay's one-row fast path gives the frame path's numbers (the random forest's trees called directly)."""
    surrogate = fit_surrogate(frame, "rf")
    row = frame.iloc[3]
    one = surrogate.predict_one(row["spec"], row["macs"], row["param_count"])
    many = surrogate.predict(frame.iloc[[3]]).iloc[0]
    assert one["final_test_dice"] == pytest.approx(many["final_test_dice"], abs=1e-9)
    assert np.allclose(one["val_dice"], many["val_dice"]) and np.allclose(one["epoch_cpu_s"], many["epoch_cpu_s"])


def test_tree_fast_paths_are_sklearn_bit_for_bit(frame):
    """The replay's one-row predictions (nas.bench.trees) equal sklearn's exactly: the cost model's boosted
    trees and the surrogate's forest, on proposals the table lacks, and a NaN sent where sklearn sends it."""
    from nas.bench.costs import fit_cost_model, proxies
    from nas.bench.load import encode_row
    from nas.bench.trees import ForestRows, boosted_rows

    model = fit_cost_model(frame)
    surrogate = fit_surrogate(frame, "rf")
    forest = surrogate.estimator.regressor_
    space = get_space("resunet")
    for i in range(40):
        spec = space.sample_spec(RandomSuggest(seed=1000 + i))
        row = encode_row(spec, 1, 1)
        row["proxy_macs"], row["proxy_params"] = proxies(spec)
        x = np.array([[row.get(column, 0.0) for column in model.columns]])
        exact = (int(round(10 ** model.macs.predict(x)[0])), int(round(10 ** model.params.predict(x)[0])))
        assert model(spec) == exact
        assert boosted_rows(model.macs).predict(x) == model.macs.predict(x)[0]
        z = encode_row(spec, *exact)
        xs = np.array([[z.get(column, 0.0) for column in surrogate.columns]])
        trees = np.mean([t.tree_.predict(xs.astype(np.float32)) for t in forest.estimators_], axis=0).reshape(1, -1)
        assert np.array_equal(ForestRows(forest).predict(xs), trees)
        assert surrogate.predict_one(spec, *exact) == _sklearn_predict_one(surrogate, xs)
    xs[0, ::3] = np.nan
    trees = np.mean([t.tree_.predict(xs.astype(np.float32)) for t in forest.estimators_], axis=0).reshape(1, -1)
    assert np.array_equal(ForestRows(forest).predict(xs), trees)
    x[0, ::3] = np.nan
    assert boosted_rows(model.macs).predict(x) == model.macs.predict(x)[0]


def _sklearn_predict_one(surrogate, x):
    """``Surrogate.predict_one`` as it was before the fast path: sklearn's trees one call each."""
    forest = surrogate.estimator.regressor_
    z = np.mean([t.tree_.predict(x.astype(np.float32)) for t in forest.estimators_], axis=0).reshape(1, -1)
    y = surrogate.estimator.transformer_.inverse_transform(z)[0]
    e = surrogate.epochs
    dice = np.clip(y[:2 + e], 0.0, 1.0)
    return {"final_val_dice": float(dice[0]), "final_test_dice": float(dice[1]), "val_dice": list(dice[2:]),
            "epoch_cpu_s": list(10.0 ** y[2 + e:])}
