"""Trainer: Dice conventions, loss, best-epoch weights, determinism, that it actually learns."""
from __future__ import annotations

import copy

import pytest
import torch

from nas.data.loading import load_data
from nas.train.trainer import TrainConfig, dice_focal_loss, dice_per_image, evaluate_dice, train_model
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
    from nas.train.trainer import TrainingError

    model = build_model(SPEC, data.in_channels, 1)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="nan"):
        train_model(model, data, TrainConfig(epochs=1, batch_size=4, patch_size=32, device="cpu"))


# ---------------------------------------------------------------------------------------------
# engine options


def _config(**overrides):
    return TrainConfig(**{"epochs": 1, "batch_size": 4, "patch_size": 32, "device": "cpu", **overrides})


def test_warmup_cosine_schedule():
    from nas.train.trainer import warmup_cosine

    values = [warmup_cosine(step, 100, 0.1) for step in range(100)]
    assert values[0] == pytest.approx(0.04) and values[10] == pytest.approx(1.0)
    assert max(values) == pytest.approx(1.0) and values[-1] < 0.01
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))  # rising during warm-up
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then falling


def test_cpu_bf16_autocast_channels_last_and_peak_memory(data):
    torch.manual_seed(0)
    model = build_model(SPEC, data.in_channels, 1)
    result = train_model(model, data, _config(epochs=1, cpu_bf16=True, channels_last=True))
    assert all(torch.isfinite(torch.tensor(result.epoch_loss)))
    assert result.peak_memory_bytes is None  # CPU
    assert all(t.is_contiguous() for t in result.state_dict.values())  # safetensors-ready
    model.load_state_dict(result.state_dict)
    scores = evaluate_dice(model, data, torch.device("cpu"))
    assert sum(scores) / len(scores) == pytest.approx(result.best_dice, abs=1e-6)


def test_channels_last_matches_the_default_layout(data):
    _, plain = _train(data, epochs=1)
    torch.manual_seed(0)
    model = build_model(SPEC, data.in_channels, 1)
    nhwc = train_model(model, data, TrainConfig(epochs=1, batch_size=4, patch_size=32, device="cpu",
                                                channels_last=True))
    assert nhwc.epoch_loss == pytest.approx(plain.epoch_loss, rel=1e-4)


def test_gradient_checkpointing_gives_the_same_losses_and_refuses_other_models(data):
    from nas.train.trainer import gradient_checkpointing

    _, plain = _train(data, epochs=1)
    torch.manual_seed(0)
    model = build_model(SPEC, data.in_channels, 1)
    checkpointed = train_model(model, data, _config(epochs=1, grad_checkpointing=True))
    assert checkpointed.epoch_loss == pytest.approx(plain.epoch_loss, rel=1e-4)
    assert "forward" not in vars(model.encoder[0])  # the override is removed afterwards
    with pytest.raises(ValueError, match="encoder"):
        with gradient_checkpointing(torch.nn.Conv2d(1, 1, 1)):
            pass


class _AuxModel(torch.nn.Module):
    """Tiny model with a deep-supervision head, to check the trainer uses ``forward_with_aux``."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 1, 1)
        self.aux_head = torch.nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def forward_with_aux(self, x):
        features = torch.relu(self.body(x))
        return self.head(features), [self.aux_head(features)]


def test_early_stopping_on_validation_dice(data):
    torch.manual_seed(0)
    frozen = _AuxModel()  # no BatchNorm: with lr 0 its validation Dice never changes
    result = train_model(frozen, data, _config(epochs=5, lr=0.0, early_stop_patience=2, aux_weight=0.0))
    assert len(result.epoch_dice) == 3 and result.stopped_early and result.best_epoch == 1
    assert not train_model(_AuxModel(), data, _config(epochs=2, lr=0.0)).stopped_early  # default: off


def test_deep_supervision_trains_the_aux_head(data):
    torch.manual_seed(0)
    model = _AuxModel()
    before = model.aux_head.weight.detach().clone()
    train_model(model, data, _config())
    assert not torch.equal(before, model.aux_head.weight)
    untouched = _AuxModel()
    before = untouched.aux_head.weight.detach().clone()
    train_model(untouched, data, _config(aux_weight=0.0))
    assert torch.equal(before, untouched.aux_head.weight)


def test_fov_weight_ignores_pixels_outside():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:4, 2:4] = 1
    weight = torch.zeros_like(target)
    weight[..., :, :5] = 1
    logits = (target * 2 - 1) * 5
    noisy = logits.clone()
    noisy[..., :, 5:] = 7.0  # confident false positives outside the FOV
    clean = float(dice_focal_loss(logits, target, weight=weight))
    assert float(dice_focal_loss(noisy, target, weight=weight)) == pytest.approx(clean)
    assert dice_focal_loss(noisy, target) > dice_focal_loss(logits, target)


def test_training_with_fov_and_quality_report(data):
    from nas.train.trainer import evaluate_quality

    fov_data = copy.copy(data)
    fov_data.train_fovs = [torch.ones_like(m) for m in data.train_masks]
    fov_data.val_fovs = [torch.ones_like(m) for m in data.val_masks]
    torch.manual_seed(0)
    model = build_model(SPEC, data.in_channels, 1)
    result = train_model(model, fov_data, _config(epochs=1, foreground_fraction=0.5, brightness=0.1,
                                                  contrast=0.1, elastic=2.0))
    model.load_state_dict(result.state_dict)
    quality = evaluate_quality(model, fov_data, torch.device("cpu"))
    assert quality["dice"] == pytest.approx(result.best_dice, abs=1e-6)
    assert quality["size_strata"]["small"]["count"] > 0 and 0 <= quality["hd95"]


def test_large_images_validate_by_sliding_window(data):
    pointwise = torch.nn.Conv2d(1, 1, 1).eval()  # same logits whichever window sees a pixel
    direct = evaluate_dice(pointwise, data, torch.device("cpu"))
    windowed = evaluate_dice(pointwise, data, torch.device("cpu"),
                             config=TrainConfig(patch_size=16, sliding_window_above=16))
    assert windowed == pytest.approx(direct, abs=1e-6)


def test_3d_training_step_and_metrics():
    from nas.train.trainer import evaluate_quality

    volumes = load_data("synthetic:volumes", image_size=32, seed=0, synthetic_train=8, synthetic_val=4)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 1))
    result = train_model(model, volumes, _config(epochs=2, patch_size=16, batch_size=2, foreground_fraction=0.5,
                                                 channels_last=True))
    assert len(result.epoch_loss) == 2 and 0 <= result.best_dice <= 1
    quality = evaluate_quality(model, volumes, torch.device("cpu"))
    assert set(quality) >= {"dice", "iou", "precision", "sensitivity", "specificity", "hd95", "size_strata"}


def test_trial_metrics_carry_json_safe_quality_for_val_and_test(data):
    import json

    from nas.engine.trial import TrialSettings, evaluate_spec
    from nas.io import json_safe
    from search_spaces import get_space

    with_test = copy.copy(data)
    with_test.test_images, with_test.test_masks = data.val_images[:3], data.val_masks[:3]
    with_test.test_names = data.val_names[:3]
    settings = TrialSettings(image_size=32, train=_config(), latency_warmup=0, latency_repeats=1)
    outcome = evaluate_spec(SPEC, get_space("resunet"), with_test, settings)
    metrics = outcome.metrics()
    json.dumps(metrics, allow_nan=False)  # raises on NaN
    quality = metrics["quality"]
    assert set(quality) == {"val", "test"}
    for split in quality.values():
        assert set(split) >= {"dice", "iou", "precision", "sensitivity", "specificity", "hd95", "size_strata"}
        assert set(split["size_strata"]) == {"small", "medium", "large"}
        assert set(split["size_strata"]["small"]) == {"count", "detected", "dice"}
    assert quality["val"]["dice"] == pytest.approx(metrics["dice"], abs=1e-6)
    assert metrics["train_peak_memory_bytes"] is None and metrics["epochs_run"] == 1
    assert json_safe({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}


def test_extra_loss_hook_joins_the_training_loss(data):
    seen = []

    def extra(x, logits):
        seen.append((tuple(x.shape), tuple(logits.shape)))
        return logits.new_tensor(5.0)

    torch.manual_seed(0)
    model = build_model(SPEC, data.in_channels, 1)
    config = TrainConfig(epochs=1, batch_size=4, patch_size=32, seed=0, device="cpu")
    with_extra = train_model(model, data, config, extra_loss=extra)
    _, plain = _train(data, epochs=1)
    assert seen and all(x[0] == logits[0] and logits[1] == 1 for x, logits in seen)
    assert with_extra.epoch_loss[0] == pytest.approx(plain.epoch_loss[0] + 5.0, rel=1e-4)
