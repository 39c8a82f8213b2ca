"""Label maps end to end (issue 17): data -> model -> training -> metrics, with the binary path unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data.errors import DataError
from nas.data.loading import load_data
from nas.data.patches import iterate_train_batches
from nas.data.synthetic import CLASS_NAMES, make_synthetic
from nas.train.labels import labels_from_logits
from nas.train.multiclass import (class_dice_per_image, confusion_matrix, dice_focal_loss_classes, mean_class_dice,
                                  multiclass_quality)
from search_spaces.resunet import ResUNetSpec, build_model

SPEC = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,))


def _write_pair(root: Path, stem: str, labels: np.ndarray, palette: bool = False) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem) + int(labels.sum()))
    Image.fromarray((rng.uniform(0, 255, labels.shape)).astype(np.uint8)).save(root / "images" / f"{stem}.png")
    mask = Image.fromarray(labels.astype(np.uint8))
    if palette:
        mask = mask.convert("P")
        mask.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * (253 * 3))  # indices, not grey levels
    mask.save(root / "masks" / f"{stem}.png")


def _labels(seed: int, side: int = 16, classes: int = 3) -> np.ndarray:
    """A label map with every class 0..classes-1 present (horizontal bands, then noise)."""
    labels = np.zeros((side, side), dtype=np.uint8)
    for value in range(1, classes):
        labels[value * 3:value * 3 + 2, 2:12] = value
    labels[np.random.default_rng(seed).uniform(size=labels.shape) < 0.05] = classes - 1
    return labels


def _folder(root: Path, count: int = 4, classes: int = 3, palette: bool = False) -> Path:
    for index in range(count):
        _write_pair(root, f"im{index}", _labels(index, classes=classes), palette=palette and index % 2 == 0)
    return root


# --- data --------------------------------------------------------------------------------------

def test_png_and_palette_label_maps_are_read_as_classes(tmp_path):
    data = load_data(str(_folder(tmp_path / "d", palette=True)), image_size=16, seed=0)
    assert data.num_classes == 3 and data.class_names == ("background", "class_1", "class_2")
    assert len(data.class_colours) == 3 and data.class_colours[0] == (0, 0, 0)
    originals = {f"im{i}": _labels(i) for i in range(4)}
    for name, mask in zip(data.train_names + data.val_names, data.train_masks + data.val_masks):
        assert mask.shape == (1, 16, 16) and mask.dtype == torch.float32
        assert np.array_equal(mask[0].numpy(), originals[name])  # palette indices, not grey levels


def test_classes_json_names_colours_and_declared_count(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "classes.json").write_text(json.dumps([
        {"name": "background", "value": 0, "colour": [0, 0, 0]},
        {"name": "vessel", "value": 1, "colour": [255, 0, 0]}, {"name": "lesion", "value": 2}]))
    data = load_data(str(root), image_size=16, seed=0)
    assert data.class_names == ("background", "vessel", "lesion") and data.class_colours[1] == (255, 0, 0)
    declared = load_data(str(_folder(tmp_path / "e")), image_size=16, seed=0, num_classes=5)
    assert declared.num_classes == 5  # more classes than the masks show is allowed when declared


@pytest.mark.parametrize("suffix", [".npy", ".nii.gz"])
def test_label_volumes(tmp_path, suffix):
    root = tmp_path / "v"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for index in range(3):
        labels = np.zeros((6, 8, 8), dtype=np.int16)
        labels[1:3, 1:4, 1:4], labels[3:5, 4:7, 4:7] = 1, 2
        image = np.random.default_rng(index).uniform(size=(6, 8, 8)).astype(np.float32)
        if suffix == ".npy":
            np.save(root / "images" / f"c{index}.npy", image)
            np.save(root / "masks" / f"c{index}.npy", labels)
        else:
            nibabel = pytest.importorskip("nibabel")
            for sub, array in (("images", image), ("masks", labels)):  # NIfTI stores (x, y, z)
                nibabel.save(nibabel.Nifti1Image(array.T, np.eye(4)), str(root / sub / f"c{index}.nii.gz"))
    data = load_data(str(root), image_size=8, seed=0)
    assert data.num_classes == 3 and data.spatial_dims == 3
    assert set(torch.unique(data.train_masks[0]).tolist()) == {0.0, 1.0, 2.0}


def test_binary_masks_stay_binary_exactly(tmp_path):
    root = tmp_path / "b"
    for index in range(3):
        _write_pair(root, f"im{index}", (_labels(index) > 0).astype(np.uint8) * 255)
    data = load_data(str(root), image_size=16, seed=0)
    assert data.num_classes == 2 and data.class_names == ("background", "foreground")
    assert all(set(torch.unique(m).tolist()) <= {0.0, 1.0} for m in data.train_masks + data.val_masks)


@pytest.mark.parametrize("case, expected", [
    ("outside", "im1.png has label value 3 outside the 3 declared classes (0..2"),
    ("only_val", "class 2 ('class_2') appears in validation image 'v0'"),
    ("json_broken", "cannot read"),
    ("json_repeat", "value 1 is declared twice"),
    ("gap", "labels 2 never appear"),
])
def test_label_errors_are_one_line(tmp_path, case, expected):
    root = _folder(tmp_path / "d")
    declared = None
    if case == "outside":
        labels = _labels(1)
        labels[0, 0] = 3
        _write_pair(root, "im1", labels)
        declared = 3
    elif case == "only_val":
        root = tmp_path / "s"
        for index in range(2):
            _write_pair(root / "train", f"t{index}", np.minimum(_labels(index), 1))
        _write_pair(root / "val", "v0", _labels(5))
    elif case == "json_broken":
        (root / "classes.json").write_text("[{")
    elif case == "json_repeat":
        (root / "classes.json").write_text(json.dumps([{"name": "a", "value": 1}, {"name": "b", "value": 1}]))
    elif case == "gap":
        for index in range(4):
            labels = _labels(index)
            labels[labels == 2] = 3
            _write_pair(root, f"im{index}", labels)
    with pytest.raises(DataError) as error:
        load_data(str(root), image_size=16, seed=0, num_classes=declared)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_synthetic_classes_is_deterministic_and_has_four_classes():
    images, masks = make_synthetic(6, 64, 3, "classes")
    again = make_synthetic(6, 64, 3, "classes")
    assert np.array_equal(images, again[0]) and np.array_equal(masks, again[1])
    assert images.shape == masks.shape == (6, 1, 64, 64) and set(np.unique(masks).tolist()) == {0, 1, 2, 3}
    data = load_data("synthetic:classes", image_size=32, seed=0, synthetic_train=4, synthetic_val=2)
    assert data.num_classes == 4 and data.class_names == CLASS_NAMES
    with pytest.raises(DataError, match="--num-classes 3 but synthetic:classes has 4"):
        load_data("synthetic:classes", image_size=32, seed=0, synthetic_train=4, synthetic_val=2, num_classes=3)


def test_foreground_patches_pick_the_class_first(tmp_path):
    """A class of 1 pixel is centred as often as one covering half the image."""
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[:, :32] = 1
    labels[50, 50] = 2
    _write_pair(tmp_path / "d", "a", labels)
    _write_pair(tmp_path / "d", "b", labels)
    data = load_data(str(tmp_path / "d"), image_size=64, seed=0)
    rare = [bool((y == 2).any()) for _, y in iterate_train_batches(
        data, patch_size=8, batch_size=1, seed=0, epoch=1, patches_per_epoch=200, foreground_fraction=1.0)]
    assert 0.35 < np.mean(rare) < 0.65  # about half the patches (a pixel draw would hit it 1 in 2049)


# --- model, labels, loss, metrics ------------------------------------------------------------------

def test_spec_head_and_json():
    four = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,), num_classes=4)
    assert build_model(four, 1, 1)(torch.zeros(2, 1, 16, 16)).shape == (2, 4, 16, 16)
    assert build_model(SPEC)(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    assert "num_classes" not in SPEC.to_dict() and four.to_dict()["num_classes"] == 4
    assert ResUNetSpec.from_dict(four.to_dict()) == four and ResUNetSpec.from_dict(SPEC.to_dict()).num_classes == 2
    with pytest.raises(ValueError, match="num_classes"):
        ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,), num_classes=1)


def test_labels_from_logits_binary_and_argmax():
    binary = torch.tensor([[[-1.0, 0.1], [2.0, -0.2]]])  # (1, 2, 2)
    assert labels_from_logits(binary).tolist() == [[[0, 1], [1, 0]]]
    assert labels_from_logits(binary, 0.9).tolist() == [[[0, 0], [0, 0]]]
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 2, 0, 0], logits[0, 1, 0, 1] = 5.0, 5.0
    assert labels_from_logits(logits).tolist() == [[[[2, 1]]]]
    assert labels_from_logits(logits.numpy()).tolist() == [[[[2, 1]]]]
    with pytest.raises(ValueError, match="2 channels"):
        labels_from_logits(torch.zeros(1, 2, 4, 4))


def test_per_class_metrics_and_confusion_by_hand():
    truth = [np.array([[0, 1, 1], [2, 2, 0]]), np.array([[1, 1, 0], [0, 0, 0]])]
    guess = [np.array([[0, 1, 2], [2, 2, 1]]), np.array([[1, 0, 0], [0, 0, 2]])]
    # image 1: class 1 tp 1, fp 1, fn 1 -> Dice 2/4; class 2 tp 2, fp 1 -> 4/5; image 2: class 1 -> 2/3; class 2 absent
    assert class_dice_per_image(guess, truth, 3) == [[0.5, 0.8], [2 / 3, None]]
    assert mean_class_dice(guess, truth, 3) == pytest.approx(((0.5 + 2 / 3) / 2 + 0.8) / 2)
    assert confusion_matrix(guess, truth, 3) == [[4, 1, 1], [1, 2, 1], [0, 0, 2]]
    quality = multiclass_quality(guess, truth, ("background", "a", "b"))
    assert quality["per_class"]["a"]["dice"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert quality["per_class"]["a"]["iou"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert quality["per_class"]["b"]["iou"] == pytest.approx(2 / 3)
    assert quality["dice"] == pytest.approx(mean_class_dice(guess, truth, 3))
    assert quality["miou"] == pytest.approx(((1 / 3 + 1 / 2) / 2 + 2 / 3) / 2)


def test_class_weights_scale_the_focal_term_of_their_class():
    target = torch.tensor([[[[0, 1], [2, 2]]]], dtype=torch.float32)
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 3.0  # everything predicted background: classes 1 and 2 are wrong
    plain = float(dice_focal_loss_classes(logits, target, focal_weight=1.0))
    heavier = dice_focal_loss_classes(logits, target, focal_weight=1.0, class_weights=torch.tensor([1.0, 1.0, 4.0]))
    lighter = dice_focal_loss_classes(logits, target, focal_weight=1.0, class_weights=torch.tensor([4.0, 1.0, 1.0]))
    assert float(heavier) > plain and float(lighter) == pytest.approx(plain, abs=1e-3)  # background is right: its focal term ~0
    with pytest.raises(ValueError, match="2 class weights for 3 classes"):
        dice_focal_loss_classes(logits, target, class_weights=torch.tensor([1.0, 2.0]))


def test_class_loss_is_low_for_right_logits_and_respects_the_fov():
    target = torch.tensor([[[[0, 1], [2, 2]]]], dtype=torch.float32)
    right = torch.nn.functional.one_hot(target[:, 0].long(), 3).movedim(-1, 1).float() * 20 - 10
    assert dice_focal_loss_classes(right, target) < 0.2 < dice_focal_loss_classes(-right, target)
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    dice_focal_loss_classes(logits, target, weight=torch.ones(1, 1, 2, 2)).backward()
    assert torch.isfinite(logits.grad).all()


# --- training -----------------------------------------------------------------------------------

def test_k_class_trial_trains_and_stores_per_class_metrics(tmp_path):
    from nas.deploy.checkpoint import load_checkpoint
    from nas.engine.trial import TrialSettings, train_and_save
    from nas.train.trainer import TrainConfig
    from search_spaces import get_space

    data = load_data("synthetic:classes", image_size=32, seed=0, synthetic_train=8, synthetic_val=4, synthetic_test=2)
    settings = TrialSettings(image_size=32, train=TrainConfig(epochs=1, batch_size=4, patch_size=32, foreground_fraction=0.5,
                                                              class_weights=(0.5, 1.0, 4.0, 2.0)), latency_repeats=1)
    metrics = train_and_save(SPEC, get_space("resunet"), data, settings, tmp_path / "ckpt").to_dict()
    assert metrics["num_classes"] == 4 and metrics["class_names"] == list(CLASS_NAMES)
    assert metrics["threshold"] is None and "dice_at_half" not in metrics
    assert set(metrics["per_class"]) == {"curve", "blob", "region"}
    assert metrics["dice"] == pytest.approx(metrics["quality"]["val"]["dice"])
    assert metrics["miou"] == pytest.approx(metrics["quality"]["val"]["miou"])
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == 4 * 32 * 32
    assert set(metrics["quality"]) == {"val", "test"}
    model, spec = load_checkpoint(tmp_path / "ckpt")
    assert spec.num_classes == 4 and model(torch.zeros(1, 1, 32, 32)).shape == (1, 4, 32, 32)


def test_binary_trial_keeps_its_keys_and_adds_the_class_ones(tmp_path):
    from nas.engine.trial import TrialSettings, train_and_save
    from nas.train.trainer import TrainConfig
    from search_spaces import get_space

    data = load_data("synthetic", image_size=32, seed=0, synthetic_train=4, synthetic_val=2, synthetic_test=0)
    settings = TrialSettings(image_size=32, train=TrainConfig(epochs=1, batch_size=4, patch_size=32),
                             latency_repeats=1)
    metrics = train_and_save(SPEC, get_space("resunet"), data, settings, tmp_path / "ckpt").to_dict()
    assert 0.05 <= metrics["threshold"] <= 0.95 and "confusion" not in metrics["quality"]["val"]
    assert metrics["miou"] == metrics["quality"]["val"]["iou"] and metrics["num_classes"] == 2
    assert list(metrics["per_class"]) == ["foreground"] and np.array(metrics["confusion"]).sum() == 2 * 32 * 32
    assert "num_classes" not in json.loads((tmp_path / "ckpt" / "spec.json").read_text())["spec"]


def test_num_classes_flag_is_checked_before_anything_is_written(tmp_path, capsys):
    from conftest import call

    from nas.cli.search import main

    code, _, err = call(capsys, main, "--data", "synthetic:classes", "--num-classes", "3", "--out", tmp_path / "r")
    assert code == 2 and err.strip().splitlines()[-1] == (
        "nas-search: error: --num-classes 3 but synthetic:classes has 4 classes")
    code, _, err = call(capsys, main, "--num-classes", "1", "--out", tmp_path / "r")
    assert code == 2 and "--num-classes" in err.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("data, weights, message", [
    ("synthetic:classes", "1,2,3", "--class-weights has 3 weight(s) but the data has 4 classes "
                                   "(background, curve, blob, region)"),
    ("synthetic", "1,2", "--class-weights has 2 weight(s) but the data has 2 classes (binary: no class weights)"),
    ("synthetic", "1,-2", "--class-weights must be finite positive numbers, got '1,-2'"),
])
def test_class_weights_flag_must_fit_the_data(tmp_path, capsys, data, weights, message):
    from conftest import call

    from nas.cli.search import main

    code, _, err = call(capsys, main, "--data", data, "--class-weights", weights, "--out", tmp_path / "r")
    assert code == 2 and err.strip().splitlines()[-1] == f"nas-search: error: {message}"
    assert not (tmp_path / "r").exists()
