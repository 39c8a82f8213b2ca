"""Contract tests every search space passes: sample, JSON round trip, build, forward/backward."""
from __future__ import annotations

import json

import optuna
import pytest
import torch

from search_spaces import RandomSuggest, get_space, list_spaces
from search_spaces.resunet import ResUNetSpec, build_model
from search_spaces.resunet.spec import SCHEMA_VERSION


class SpaceContract:
    """Subclass with ``space_name`` set: the whole contract runs for that space."""

    space_name: str

    @pytest.fixture
    def space(self):
        return get_space(self.space_name)

    @pytest.mark.parametrize("seed", range(8))
    def test_sampled_spec_round_trips_through_json(self, space, seed):
        spec = space.sample_spec(RandomSuggest(seed))
        text = json.dumps(spec.to_dict())
        assert space.spec_from_dict(json.loads(text)) == spec

    @pytest.mark.parametrize("seed", range(6))
    def test_sampled_spec_builds_and_trains_one_step(self, space, seed):
        spec = space.sample_spec(RandomSuggest(seed))
        model = space.build_model(spec, 1, 1)
        x = torch.randn(2, 1, 48, 48)
        y = model(x)
        assert y.shape == (2, 1, 48, 48)
        y.square().mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_sampling_uses_only_the_suggest_protocol(self, space):
        seen = RandomSuggest(3)
        spec = space.sample_spec(seen)
        replay = optuna.trial.FixedTrial(seen.params)
        assert space.sample_spec(replay) == spec

    def test_every_dimension_is_suggested(self, space):
        seen = RandomSuggest(0)
        space.sample_spec(seen)
        assert set(seen.params) == {dim.name for dim in space.dimensions}

    def test_sampled_specs_vary(self, space):
        specs = {space.sample_spec(RandomSuggest(seed)) for seed in range(20)}
        assert len(specs) > 5


class TestResUNetSpace(SpaceContract):
    space_name = "resunet"

    def test_dimensions_cover_the_declared_ranges(self, space):
        dims = {dim.name: dim for dim in space.dimensions}
        assert (dims["depth"].low, dims["depth"].high) == (3, 5)
        assert (dims["base_width"].low, dims["base_width"].high) == (8, 32)
        assert tuple(dims["bridge_dilation"].choices) == (1, 2, 4)
        assert tuple(dims["skip_attention"].choices) == ("none", "se")

    def test_fixed_trial_gives_the_asked_architecture(self, space):
        trial = optuna.trial.FixedTrial(
            {"depth": 4, "base_width": 12, "bridge_dilation": 2, "skip_attention": "se"})
        spec = space.sample_spec(trial)
        assert spec.encoder_widths == (12, 24, 48, 96)
        assert spec.decoder_widths == (12, 24, 48)
        assert spec.bridge_dilation == 2 and spec.skip_attention == "se"


def test_registry_lists_and_refuses_unknown_names():
    assert "resunet" in list_spaces()
    with pytest.raises(ValueError, match="unknown search space 'nope'.*resunet"):
        get_space("nope")


def _spec(**overrides) -> ResUNetSpec:
    fields = dict(encoder_widths=(8, 16, 32), decoder_widths=(8, 16))
    fields.update(overrides)
    return ResUNetSpec(**fields)


@pytest.mark.parametrize("overrides, message", [
    (dict(encoder_widths=(8,), decoder_widths=()), "depth"),
    (dict(decoder_widths=(8,)), "one width per skip"),
    (dict(encoder_widths=(8, 0, 32)), "positive ints"),
    (dict(encoder_widths=(8, 16.5, 32)), "positive ints"),
    (dict(bridge_dilation=3), "bridge_dilation"),
    (dict(skip_attention="cbam"), "skip_attention"),
    (dict(block="transformer"), "block"),
    (dict(schema_version=SCHEMA_VERSION + 1), "newer"),
])
def test_invalid_specs_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        _spec(**overrides)


def test_from_dict_refuses_unknown_missing_and_newer_fields():
    data = _spec().to_dict()
    with pytest.raises(ValueError, match="unknown field"):
        ResUNetSpec.from_dict({**data, "colour": "blue"})
    with pytest.raises(ValueError, match="missing field"):
        ResUNetSpec.from_dict({k: v for k, v in data.items() if k != "encoder_widths"})
    with pytest.raises(ValueError, match="newer"):
        ResUNetSpec.from_dict({**data, "schema_version": SCHEMA_VERSION + 1, "future": 1})


def test_spec_is_frozen_and_hashable():
    spec = _spec()
    with pytest.raises(AttributeError):
        spec.bridge_dilation = 2
    assert hash(spec) == hash(ResUNetSpec.from_dict(spec.to_dict()))


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (64, 48)])
def test_any_input_size_gives_logits_of_the_same_size(size):
    model = build_model(_spec(encoder_widths=(8, 16, 32, 64), decoder_widths=(8, 16, 32)), 3, 2)
    assert model(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_the_design_is_what_the_spec_says():
    spec = _spec(encoder_widths=(8, 16, 32, 64), decoder_widths=(8, 16, 24), skip_attention="se",
                 bridge_dilation=4)
    model = build_model(spec, 1, 1)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (64, 32, (2, 2)), (24, 16, (2, 2)), (16, 8, (2, 2))]
    bridge = model.encoder[-1][0]
    assert bridge.conv1.dilation == (4, 4) and model.encoder[0][0].conv1.dilation == (1, 1)
    # identity shortcut only where the width is unchanged
    assert isinstance(model.encoder[1][0].shortcut, torch.nn.Sequential)
    # decoder runs deepest first: level 2 maps the 32-wide skip sum to 24 (projection), level 0 keeps 8
    assert isinstance(model.decoder[0][0].shortcut, torch.nn.Sequential)
    assert isinstance(model.decoder[2][0].shortcut, torch.nn.Identity)
