"""Channel pruning through every attention variant and block type, and the bn-scale collapse regression."""
from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from compress.finetune import finetune
from compress.prune import prune_channels
from nas.data.loading import load_data
from nas.train.trainer import TrainConfig, evaluate_dice, train_model
from search_spaces.resunet import ResUNetSpec, build_model

X = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
BLOCKS = ("basic", "bottleneck", "preact", "inverted", "plain")
ATTENTIONS = [
    dict(skip_attention="scse", attention_place="skip"), dict(skip_attention="scse", attention_place="decoder"),
    dict(skip_attention="cbam", attention_place="skip"), dict(skip_attention="cbam", attention_place="decoder"),
    dict(skip_attention="gate"), dict(skip_attention="gate", skip_fusion="concat"),
    dict(skip_attention="se", attention_place="decoder", skip_fusion="concat")]


def shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("attention", ATTENTIONS, ids=lambda f: "-".join(map(str, f.values())))
def test_stage_widths_behind_attention_are_pruned_and_rebuild_exactly(block, attention):
    spec = ResUNetSpec(encoder_widths=(8, 16, 16), decoder_widths=(8, 16), block=block, **attention)
    torch.manual_seed(0)
    model = build_model(spec, 1, 1).eval()
    pruned, new_spec = prune_channels(model, spec, ratio=0.4, ratio_of="channels", round_to=1, example_input=X)
    # every stage loses channels: before, a one-channel gate conv in the group blocked it
    assert all(a < b for a, b in zip(new_spec.encoder_widths, spec.encoder_widths))
    assert all(a < b for a, b in zip(new_spec.decoder_widths, spec.decoder_widths))
    rebuilt = build_model(ResUNetSpec.from_dict(json.loads(json.dumps(new_spec.to_dict()))), 1, 1)
    assert shapes(rebuilt) == shapes(pruned)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        y = pruned.eval()(X)
        torch.testing.assert_close(rebuilt.eval()(X), y)
    assert y.shape == (2, 1, 32, 32) and torch.isfinite(y).all()


@pytest.mark.parametrize("attention", ["none", "se", "scse", "gate"])
def test_pruning_dead_channels_through_attention_keeps_the_function(attention):
    """Channels that are exactly zero carry nothing: removing them (and what reads them) changes no output."""
    import torch_pruning as tp

    from search_spaces.resunet.pruning import pruning_setup, spec_from_model

    spec = ResUNetSpec(encoder_widths=(8, 16, 16), decoder_widths=(8, 16), block="plain", skip_fusion="concat",
                       skip_attention=attention)
    torch.manual_seed(0)
    model = build_model(spec, 1, 1).eval()
    conv2, bn2 = model.encoder[0][0].conv2, model.encoder[0][0].bn2
    dead = [1, 5]
    with torch.no_grad():
        conv2.weight[dead] = 0
        bn2.bias[dead] = 0
        bn2.running_mean[dead] = 0
        before = model(X)
    setup = pruning_setup(model)
    graph = tp.DependencyGraph().build_dependency(
        model, X, forward_fn=setup["forward_fn"], output_transform=setup["output_transform"],
        customized_pruners=setup["customized_pruners"])
    graph.get_pruning_group(conv2, tp.prune_conv_out_channels, idxs=dead).prune()
    assert spec_from_model(model).encoder_widths == (6, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(X), before, rtol=1e-5, atol=1e-5)


def test_bn_scale_pruning_then_finetuning_does_not_collapse():
    """Regression: |gamma| alone removed every channel voting for foreground -> Dice 0 even after fine-tuning."""
    data = load_data("synthetic", image_size=32, seed=0, synthetic_train=16, synthetic_val=4)
    config = TrainConfig(epochs=3, patch_size=32, batch_size=8, device="cpu", seed=0)
    spec = ResUNetSpec(encoder_widths=(16, 32, 64, 64), decoder_widths=(16, 32, 64))
    torch.manual_seed(0)
    parent = build_model(spec, 1, 1)
    parent.load_state_dict(train_model(parent, data, config).state_dict)
    scores = evaluate_dice(parent.eval(), data, torch.device("cpu"), config=config)
    parent_dice = sum(scores) / len(scores)
    assert parent_dice > 0.3  # the parent learned something to lose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned, _ = prune_channels(parent, spec, importance="bn-scale", ratio=0.5, round_to=8,
                                   example_input=torch.zeros(1, 1, 32, 32))
    assert (pruned.head.weight > 0).any() and (pruned.head.weight < 0).any()  # both votes survive
    result = finetune(pruned, data, dataclasses.replace(config, epochs=2))
    assert result.best_dice > 0.5 * parent_dice
