"""Trainer: Dice conventions, loss, best-epoch weights, determinism, that it actually learns."""
from __future__ import annotations

import pytest
import torch

from nas.data import load_data
from nas.training import TrainConfig, dice_focal_loss, dice_per_image, evaluate_dice, train_model
from search_spaces.resunet import ResUNetSpec, build_model

SPEC = ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 16))


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", image_size=32, seed=0, synthetic_train=16, synthetic_val=8)


def test_dice_conventions():
    empty = torch.zeros(1, 1, 4, 4)
    full = torch.ones(1, 1, 4, 4)
    half = torch.zeros(1, 1, 4, 4)
    half[..., :2, :] = 1
    batch_pred = torch.cat([empty, full, half, full])
    batch_true = torch.cat([empty, full, full, empty])
    assert dice_per_image(batch_pred, batch_true).tolist() == pytest.approx([1.0, 1.0, 2 * 8 / 24, 0.0])


def test_loss_is_lower_for_better_logits():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:5] = 1
    good = (target * 2 - 1) * 6
    bad = -good
    assert dice_focal_loss(good, target) < 0.1 < dice_focal_loss(bad, target)


def _train(data, epochs, seed=0):
    torch.manual_seed(seed)
    model = build_model(SPEC, data.in_channels, 1)
    config = TrainConfig(epochs=epochs, batch_size=4, patch_size=32, seed=seed, device="cpu")
    return model, train_model(model, data, config)


def test_best_epoch_weights_are_returned(data):
    model, result = _train(data, epochs=3)
    assert len(result.epoch_dice) == 3 and len(result.epoch_loss) == 3
    assert result.best_dice == max(result.epoch_dice)
    assert result.epoch_dice[result.best_epoch - 1] == result.best_dice
    model.load_state_dict(result.state_dict)
    scores = evaluate_dice(model, data, torch.device("cpu"))
    assert sum(scores) / len(scores) == pytest.approx(result.best_dice, abs=1e-6)
    assert result.images_per_second > 0 and result.seconds > 0


def test_training_is_deterministic_by_seed(data):
    _, first = _train(data, epochs=1, seed=5)
    _, second = _train(data, epochs=1, seed=5)
    assert first.epoch_loss == second.epoch_loss
    assert first.epoch_dice == second.epoch_dice


def test_it_learns(data):
    torch.manual_seed(0)
    untrained = build_model(SPEC, data.in_channels, 1)
    before = evaluate_dice(untrained, data, torch.device("cpu"))
    _, result = _train(data, epochs=6)
    assert result.best_dice > sum(before) / len(before) + 0.15
    assert result.epoch_loss[-1] < result.epoch_loss[0]


def test_nan_loss_fails_the_trial_clearly(data):
    from nas.training import TrainingError

    model = build_model(SPEC, data.in_channels, 1)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="nan"):
        train_model(model, data, TrainConfig(epochs=1, batch_size=4, patch_size=32, device="cpu"))
