"""Issue 13: an epoch that covers the data, a threshold chosen on validation, a test split that
selection never sees, and the finalist statistics (intervals, Kendall tau, verdicts) on plain numbers."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nas.data.loading import SegmentationData, load_data
from nas.data.normalization import Normalization
from nas.data.patches import describe_epoch, describe_foreground, epoch_patches, foreground_share
from nas.data.splits import carve
from nas.results import finalist_stats as stats
from nas.results.pareto import DICE_MACS, pareto_front
from nas.results.records import TrialRecord
from nas.train.threshold import best_threshold, choose_threshold, logit
from search_spaces import get_space
from search_spaces.resunet.spec import ResUNetSpec

TINY = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,), block="plain")


def _data(shapes, test: int = 0) -> SegmentationData:
    images = [torch.rand(1, *shape) for shape in shapes]
    masks = [(image > 0.7).float() for image in images]
    return SegmentationData(name="t", source="t", train_images=images, train_masks=masks, val_images=images[:1],
                            val_masks=masks[:1], val_names=["v"], in_channels=1,
                            normalization=Normalization((0.5,), (0.25,)))


# ----------------------------------------------------------------------------- an epoch that covers the data

def test_an_epoch_shows_the_training_area_once_at_least_one_patch_per_image():
    data = _data([(100, 100), (60, 50), (40, 40)])
    # ceil((10000 + 3000 + 1600) / 32^2) = ceil(14.26) = 15
    assert epoch_patches(data, 32) == 15
    # the patch is never larger than the smallest training side: 40 px -> ceil(14600 / 1600) = 10
    assert epoch_patches(data, 64) == 10
    assert epoch_patches(_data([(20, 20)] * 4), 64) == 4  # small images: still one patch per image
    volumes = _data([(8, 16, 16), (8, 16, 16)])
    assert epoch_patches(volumes, 8) == math.ceil(2 * 8 * 16 * 16 / 8 ** 3)
    assert "15 patches of 32 px" in describe_epoch(data, 32) and "14,600 px" in describe_epoch(data, 32)
    assert describe_epoch(data, 32, 7) == "epoch: 7 patch(es) (--patches-per-epoch)"


def test_the_header_says_how_sparse_the_foreground_is_counting_only_inside_the_fov():
    mask = torch.zeros(1, 10, 10)
    mask[0, :1, :] = 1  # 10 of 100 px
    fov = torch.zeros(1, 10, 10)
    fov[0, :5, :] = 1  # 10 of the 50 px inside the FOV
    data = _data([(10, 10)])
    sparse = dataclasses.replace(data, train_masks=[mask])
    assert foreground_share(sparse) == pytest.approx(0.1)
    assert "10.0% of training pixels" in describe_foreground(sparse, 0.0)
    assert "consider --foreground-fraction" in describe_foreground(sparse, 0.0)
    assert "consider" not in describe_foreground(sparse, 0.5)  # the user chose already
    dense = dataclasses.replace(sparse, train_fovs=[fov])
    assert foreground_share(dense) == pytest.approx(0.2) and "consider" not in describe_foreground(dense, 0.0)
    labels = dataclasses.replace(data, train_masks=[mask * 3])  # a label map: any class > 0 is foreground
    assert foreground_share(labels) == pytest.approx(0.1)


def test_the_default_synthetic_task_keeps_one_patch_per_image_and_its_study_settings(tmp_path):
    """`make search` keeps its front: 96 images of 64 px in 64 px patches is still 96 patches an
    epoch, and the study's settings gain no key, so runs made before resume unchanged."""
    import nas
    from nas.run.search_plan import data_settings, prepare

    plan = prepare(nas.SearchConfig(out=tmp_path / "run"))
    assert len(plan.data.train_images) == 96 and plan.data.train_images[0].shape == (1, 64, 64)
    assert epoch_patches(plan.data, 64) == 96
    assert data_settings(plan) == {}
    assert plan.config.recipe().patches_per_epoch is None and not (tmp_path / "run").exists()


def test_the_trainer_draws_the_covering_epoch_unless_told_otherwise(monkeypatch):
    import nas.train.trainer as trainer

    seen = []

    def fake_batches(data, **kwargs):
        seen.append(kwargs["patches_per_epoch"])
        return iter(())

    monkeypatch.setattr(trainer, "iterate_train_batches", fake_batches)
    data = _data([(64, 64), (64, 32)])
    model = get_space("resunet").build_model(TINY, 1, 1)
    trainer.train_model(model, data, trainer.TrainConfig(epochs=1, patch_size=16, device="cpu"))
    trainer.train_model(model, data, trainer.TrainConfig(epochs=1, patch_size=16, device="cpu", patches_per_epoch=5))
    assert seen == [math.ceil((64 * 64 + 64 * 32) / 16 ** 2), 5]


# ----------------------------------------------------------------------------- a threshold chosen on validation

def test_the_threshold_maximises_validation_dice_and_ties_go_to_the_closest_to_half():
    truth = torch.zeros(1, 8, 8)
    truth[:, :, :4] = 1
    probability = torch.where(truth > 0, torch.tensor(0.42), torch.tensor(0.17))  # all below 0.5
    logits = [torch.logit(probability)]
    choice = choose_threshold(logits, [truth], [])
    # 0.20 .. 0.40 all score Dice 1; the tie goes to 0.40, the closest to 0.5
    assert choice.threshold == pytest.approx(0.4) and choice.dice == 1.0 and choice.dice_at_half == 0.0
    assert choice.metrics() == {"threshold": 0.4, "dice_at_threshold": 1.0, "dice_at_half": 0.0}
    assert best_threshold({0.45: 0.8, 0.55: 0.8, 0.3: 0.7}) == 0.45
    assert best_threshold({0.3: 0.7, 0.5: 0.7}) == 0.5
    assert logit(0.5) == 0.0 and logit(0.0) == -math.inf and logit(1.0) == math.inf
    # an image without foreground does not vote (its empty-vs-empty 1.0 would favour predicting nothing)
    empty = [torch.zeros(1, 8, 8), truth]
    both = choose_threshold([torch.full((1, 8, 8), -5.0), logits[0]], empty, [])
    assert both.threshold == pytest.approx(0.4) and both.dice == 1.0


def test_a_stored_threshold_reaches_the_model_card_and_nas_predict(tmp_path, capsys):
    from PIL import Image

    from nas.cli.predict import main as predict_main
    from nas.deploy.checkpoint import save_checkpoint
    from nas.deploy.model_card import render_model_card

    model = get_space("resunet").build_model(TINY, 1, 1).eval()
    folder = save_checkpoint(tmp_path / "ckpt", model, TINY, space="resunet", in_channels=1, out_channels=1,
                             normalization=Normalization((0.5,), (0.25,)),
                             metrics={"dice": 0.5, "threshold": 0.3, "dice_at_half": 0.5, "input_shape": [1, 1, 16, 16],
                                      "quality": {"val": {"dice": 0.61}, "test": {"dice": 0.58}}})
    card = render_model_card(folder)
    assert "sigmoid(logit) > 0.3" in card and "test Dice (held-out images) at threshold 0.3 | 0.5800" in card
    Image.fromarray((torch.rand(16, 16) * 255).byte().numpy()).save(tmp_path / "x.png")
    assert predict_main(["--checkpoint", str(folder), "--input", str(tmp_path / "x.png"), "--out",
                         str(tmp_path / "masks")]) == 0
    assert "threshold 0.3 (stored with the model)" in capsys.readouterr().out
    assert predict_main(["--checkpoint", str(folder), "--input", str(tmp_path / "x.png"), "--out",
                         str(tmp_path / "masks2"), "--threshold", "0.7"]) == 0
    assert "threshold 0.7 (--threshold)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a test split selection never sees

def test_a_folder_without_test_gets_a_seeded_test_split_and_tiny_folders_none():
    pool = {"all": ([f"s{i}" for i in range(20)], list(range(20)), list(range(20)), [])}
    note, fraction = carve(pool, seed=3, val_fraction=0.25, test_fraction=None)
    sizes = {k: len(v[0]) for k, v in pool.items()}
    assert sizes == {"train": 11, "val": 5, "test": 4} and fraction == 0.2 and "held out by --seed 3" in note
    assert not set(pool["test"][0]) & (set(pool["train"][0]) | set(pool["val"][0]))
    again = {"all": ([f"s{i}" for i in range(20)], list(range(20)), list(range(20)), [])}
    carve(again, seed=3, val_fraction=0.25, test_fraction=None)
    assert again["test"][0] == pool["test"][0]  # seeded
    tiny = {"all": ([f"s{i}" for i in range(8)], list(range(8)), list(range(8)), [])}
    note, fraction = carve(tiny, seed=0, val_fraction=0.25, test_fraction=None)
    assert "test" not in tiny and fraction == 0.0 and "fewer than 10" in note
    # the tiny folder keeps exactly the validation split it had before test splits existed
    import numpy as np
    assert tiny["val"][0] == sorted(f"s{i}" for i in np.random.default_rng(0).permutation(8)[:2])
    forced = {"all": ([f"s{i}" for i in range(8)], list(range(8)), list(range(8)), [])}
    assert carve(forced, seed=0, val_fraction=0.25, test_fraction=0.25)[1] == 0.25 and len(forced["test"][0]) == 2


def _adversarial(data: SegmentationData) -> SegmentationData:
    """The same data whose test split is built to mislead: inverted masks on noise images."""
    return dataclasses.replace(data, test_images=[torch.rand_like(x) for x in data.test_images],
                               test_masks=[1 - m for m in data.test_masks])


def test_selection_reads_only_validation_never_test():
    """Best epoch, threshold and validation quality are the same whatever the test split holds; the
    Pareto ranking and the finalist's deployed seed ignore test numbers made adversarial."""
    from nas.stages.finalist_training import choose_seed
    from nas.engine.trial import assess
    from nas.train.trainer import TrainConfig, train_model

    data = load_data("synthetic", image_size=32, seed=0, synthetic_train=8, synthetic_val=4, synthetic_test=4)
    config = TrainConfig(epochs=2, batch_size=4, patch_size=32, device="cpu", seed=0)
    outcomes = []
    for variant in (data, _adversarial(data)):
        torch.manual_seed(0)
        model = get_space("resunet").build_model(TINY, 1, 1)
        result = train_model(model, variant, config)
        model.load_state_dict(result.state_dict)
        outcomes.append((result, assess(model.eval(), variant, torch.device("cpu"), config)))
    (first, (q1, c1, _)), (second, (q2, c2, _)) = outcomes
    assert (first.best_epoch, first.epoch_dice) == (second.best_epoch, second.epoch_dice)
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert c1 == c2 and q1["val"] == q2["val"] and q1["test"] != q2["test"]

    def record(number, val, test, macs):
        return TrialRecord.from_metrics(number, "COMPLETE", {"quality": {"val": {"dice": val}, "test": {"dice": test}}},
                                        dice=val, macs=macs)
    records = [record(0, 0.8, 0.1, 100), record(1, 0.7, 0.9, 50), record(2, 0.6, 0.99, 80)]
    assert pareto_front(records, DICE_MACS).numbers == frozenset({0, 1})  # trial 2's test Dice does not save it
    rows = [{"seed": 0, "val_dice": 0.70, "dice": 0.1}, {"seed": 1, "val_dice": 0.72, "dice": 0.9},
            {"seed": 2, "val_dice": 0.74, "dice": 0.2}]
    assert choose_seed(rows)["seed"] == 1  # the median by validation, whatever test says


# ----------------------------------------------------------------------------- statistics and verdicts

def test_intervals_tau_and_verdicts_on_constructed_numbers():
    steady = [[0.8, 0.8, 0.8, 0.8]] * 3
    assert stats.bootstrap_ci(steady) == pytest.approx((0.8, 0.8))
    low, high = stats.bootstrap_ci([[0.6, 0.7, 0.8, 0.9], [0.62, 0.72, 0.82, 0.92]])
    assert low < 0.76 < high and 0.6 <= low and high <= 0.92
    assert stats.difference_ci(steady, [[0.7] * 4] * 2) == pytest.approx((0.1, 0.1))
    assert stats.mean_std([0.7, 0.8, 0.9]) == pytest.approx((0.8, 0.1))
    assert stats.kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0 and stats.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert stats.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert stats.kendall_tau([1], [2]) is None and stats.kendall_tau([1, 1], [2, 3]) is None

    baseline = stats.Contender("unet-16", 0.80, macs=1e9, latency_ms=10.0, params=1e6)
    small = stats.Contender("trial 3", 0.79, macs=1e8, latency_ms=2.0, params=1e5)
    mid = stats.Contender("trial 5", 0.81, macs=5e8, latency_ms=5.0, params=5e5)
    big = stats.Contender("trial 9", 0.85, macs=2e9, latency_ms=20.0, params=2e6)
    # trial 3 is cheapest but may be 0.03 worse: not a match; trial 5's lower end is within the margin
    verdict = stats.verdict(baseline, [big, small, mid],
                            {"trial 3": (-0.03, 0.01), "trial 5": (-0.005, 0.03), "trial 9": (0.02, 0.08)})
    assert verdict.finalist == "trial 5" and verdict.savings == {"macs": 2.0, "latency": 2.0, "params": 2.0}
    assert "2.0x fewer MACs" in verdict.text and "[-0.005, +0.030]" in verdict.text
    only_big = stats.verdict(baseline, [big], {"trial 9": (0.02, 0.08)})
    assert only_big.finalist == "trial 9" and "2.0x more MACs" in only_big.text
    none = stats.verdict(baseline, [small], {"trial 3": (-0.03, 0.01)})
    assert none.finalist is None and none.text.startswith("no finalist matches unet-16") and "trial 3" in none.text
    assert stats.verdict(baseline, [], {}).text == "no finalist matches unet-16 (Dice 0.800)"


def test_nas_export_names_the_stored_threshold(tmp_path, capsys):
    from nas.cli.export import main as export_main
    from nas.deploy.checkpoint import save_checkpoint

    model = get_space("resunet").build_model(TINY, 1, 1).eval()
    folder = save_checkpoint(tmp_path / "ckpt", model, TINY, space="resunet", in_channels=1, out_channels=1,
                             normalization=Normalization((0.5,), (0.25,)),
                             metrics={"dice": 0.5, "threshold": 0.35, "input_shape": [1, 1, 16, 16]})
    assert export_main(["--checkpoint", str(folder), "--format", "onnx"]) == 0
    assert "foreground where sigmoid(logits) > 0.35" in capsys.readouterr().out
