"""Contract tests every search space and every preset passes, plus the resunet space's own rules.

``ModelContract`` is the contract: JSON round trip, build, forward + backward, save -> reload ->
identical output, 30 % channel pruning with torch-pruning, ONNX export. ``SpaceContract`` runs it
on seeded samples of a registered space (widths capped at 16, 32 px); ``tests/test_presets.py``
runs it on every preset at a reduced input size.
"""
from __future__ import annotations

import dataclasses
import io
import json
import warnings

import numpy as np
import optuna
import pytest
import torch

from nas import load_checkpoint, save_checkpoint
from nas.data.loading import Normalization
from search_spaces import RandomSuggest, get_space, list_spaces
from search_spaces.resunet import ResUNetSpec, build_model
from search_spaces.resunet.pruning import pruning_setup, spec_from_model
from search_spaces.resunet.spec import SCHEMA_VERSION


def capped(spec: ResUNetSpec, cap: int = 16) -> ResUNetSpec:
    """The same architecture with every width capped (fast tests); still non-decreasing."""
    return dataclasses.replace(spec, encoder_widths=tuple(min(w, cap) for w in spec.encoder_widths),
                               decoder_widths=tuple(min(w, cap) for w in spec.decoder_widths))


def sample_input(spec: ResUNetSpec, in_channels: int, batch: int = 2, extra: int = 0) -> torch.Tensor:
    """Smallest cheap input: sides >= 2^depth (instance norm needs 2+ px at the bridge)."""
    side = max(32 if spec.spatial_dims == 2 else 16, 2 * spec.downsampling_factor) + extra
    return torch.randn(batch, in_channels, *(side,) * spec.spatial_dims)


class ModelContract:
    """Subclasses provide ``cases`` (ids) and ``case(id) -> (space_name, spec, in_channels)``."""

    cases: tuple = ()
    reload_cases: tuple = ()
    prune_cases: tuple = ()
    onnx_cases: tuple = ()

    def case(self, key) -> tuple[str, ResUNetSpec, int]:
        raise NotImplementedError

    def test_spec_round_trips_through_json(self, key):
        space_name, spec, _ = self.case(key)
        text = json.dumps(spec.to_dict())
        assert get_space(space_name).spec_from_dict(json.loads(text)) == spec

    def test_builds_and_trains_one_step(self, key):
        space_name, spec, in_ch = self.case(key)
        model = get_space(space_name).build_model(spec, in_ch, 2)
        x = sample_input(spec, in_ch)
        y = model(x)
        assert y.shape == (x.shape[0], 2, *x.shape[2:])
        logits, aux = model.forward_with_aux(x)
        assert len(aux) == (spec.depth - 2 if spec.deep_supervision else 0)
        assert all(a.shape == y.shape for a in aux)
        (logits.square().mean() + sum(a.square().mean() for a in aux)).backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_save_reload_gives_identical_output(self, reload_key, tmp_path):
        space_name, spec, in_ch = self.case(reload_key)
        model = get_space(space_name).build_model(spec, in_ch, 1).eval()
        folder = save_checkpoint(tmp_path / "ckpt", model, spec, space=space_name, in_channels=in_ch,
                                 out_channels=1, normalization=Normalization((0.5,) * in_ch, (0.2,) * in_ch))
        reloaded, reloaded_spec = load_checkpoint(folder)
        assert reloaded_spec == spec
        x = sample_input(spec, in_ch, batch=1, extra=3)
        with torch.no_grad():
            assert torch.equal(reloaded.eval()(x), model(x))

    def test_channel_pruning_keeps_output_shape_and_rebuilds_from_spec(self, prune_key):
        import torch_pruning as tp

        space_name, spec, in_ch = self.case(prune_key)
        model = get_space(space_name).build_model(spec, in_ch, 2)
        x = sample_input(spec, in_ch)
        before = sum(p.numel() for p in model.parameters())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                               pruning_ratio=0.3, **pruning_setup(model))
            pruner.step()
        assert sum(p.numel() for p in model.parameters()) < before
        model.eval()
        with torch.no_grad():
            y = model(x)
        assert y.shape == (x.shape[0], 2, *x.shape[2:])
        pruned = spec_from_model(model)
        rebuilt = build_model(ResUNetSpec.from_dict(json.loads(json.dumps(pruned.to_dict()))), in_ch, 2)
        rebuilt.load_state_dict(model.state_dict())  # strict: every shape is in the spec
        with torch.no_grad():
            torch.testing.assert_close(rebuilt.eval()(x), y)

    def test_onnx_export_keeps_dynamic_sizes(self, onnx_key):
        import onnxruntime as ort

        space_name, spec, in_ch = self.case(onnx_key)
        model = get_space(space_name).build_model(spec, in_ch, 1).eval()
        x = sample_input(spec, in_ch, batch=1)
        axes = {0: "batch", **{2 + i: f"s{i}" for i in range(spec.spatial_dims)}}
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, x, buffer, dynamo=False, input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": axes, "logits": axes})
        session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        odd = sample_input(spec, in_ch, batch=1, extra=5)  # not a multiple of the factor: padded
        got = session.run(None, {"image": odd.numpy()})[0]
        with torch.no_grad():
            expected = model(odd).numpy()
        assert got.shape == expected.shape == (1, 1, *odd.shape[2:])
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def pytest_generate_tests(metafunc):
    """Parametrize the contract's ``key`` / ``prune_key`` / ``onnx_key`` from the subclass."""
    for name, attr in (("key", "cases"), ("reload_key", "reload_cases"), ("prune_key", "prune_cases"),
                       ("onnx_key", "onnx_cases")):
        if name in metafunc.fixturenames and metafunc.cls is not None:
            values = list(getattr(metafunc.cls, attr))
            metafunc.parametrize(name, values, ids=str)


class SpaceContract(ModelContract):
    """Subclass with ``space_name`` set: the whole contract runs on seeded samples of that space."""

    space_name: str

    @pytest.fixture
    def space(self):
        return get_space(self.space_name)

    def case(self, seed):
        space = get_space(self.space_name)
        return self.space_name, capped(space.sample_spec(RandomSuggest(seed)), self.cap), 1

    cap = 8

    def test_many_samples_build_and_run(self, space):
        for seed in range(100, 100 + self.many):
            spec = capped(space.sample_spec(RandomSuggest(seed)), 8)
            model = space.build_model(spec, 1, 1).eval()
            x = sample_input(spec, 1, batch=1, extra=1)
            with torch.no_grad():
                assert model(x).shape == (1, 1, *x.shape[2:]), spec.summary()

    def test_seeded_sampling_is_deterministic(self, space):
        for seed in range(5):
            assert space.sample_spec(RandomSuggest(seed)) == space.sample_spec(RandomSuggest(seed))

    def test_many_samples_round_trip_and_validate(self, space):
        specs = [space.sample_spec(RandomSuggest(seed)) for seed in range(200)]
        for spec in specs:
            assert space.spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
            assert list(spec.encoder_widths) == sorted(spec.encoder_widths)  # non-decreasing
        assert len(set(specs)) > 150

    def test_sampling_uses_only_the_suggest_protocol(self, space):
        seen = RandomSuggest(3)
        spec = space.sample_spec(seen)
        replay = optuna.trial.FixedTrial(seen.params)
        assert space.sample_spec(replay) == spec

    def test_only_declared_dimensions_are_suggested_and_all_of_them_somewhere(self, space):
        declared = {dim.name: dim for dim in space.dimensions}
        seen_anywhere: set[str] = set()
        for seed in range(60):
            suggest = RandomSuggest(seed)
            space.sample_spec(suggest)
            assert set(suggest.params) <= set(declared)
            for name, value in suggest.params.items():
                dim = declared[name]
                if hasattr(dim, "choices"):
                    assert value in dim.choices
                else:
                    assert dim.low <= value <= dim.high
            unconditional = {n for n, d in declared.items() if not d.applies_when}
            assert unconditional <= set(suggest.params)
            seen_anywhere |= set(suggest.params)
        assert seen_anywhere == set(declared)

    def test_every_dimension_has_help(self, space):
        assert all(dim.help for dim in space.dimensions)


class TestResUNetSpace(SpaceContract):
    space_name = "resunet"
    cases = tuple(range(6))
    reload_cases = (0, 3)
    prune_cases = (2, 15)
    onnx_cases = (5,)
    many = 10

    def test_fixed_trial_gives_the_asked_architecture(self, space):
        trial = optuna.trial.FixedTrial({
            "depth": 4, "width_mode": "growth", "base_width": 12, "width_growth": 2.0,
            "blocks_per_stage": 2, "block": "inverted", "expansion": 3, "downsample": "strided",
            "dilation": "1-2-4", "aspp": True, "attention": "cbam", "attention_place": "decoder",
            "skip_fusion": "concat", "skip_gain": True, "upsample": "pixel_shuffle",
            "multiscale_input": True, "deep_supervision": True, "norm": "group",
            "activation": "silu", "dropout": 0.1})
        spec = space.sample_spec(trial)
        assert spec.encoder_widths == (12, 24, 48, 96) and spec.decoder_widths == (12, 24, 48)
        assert (spec.block, spec.expansion, spec.blocks_per_stage) == ("inverted", 3, 2)
        assert spec.bridge_dilation == 4 and spec.hybrid_dilation
        assert (spec.skip_attention, spec.attention_place) == ("cbam", "decoder")
        assert spec.bridge_dilations(4) == (1, 2, 4, 1)

    def test_per_stage_widths_never_shrink(self, space):
        trial = optuna.trial.FixedTrial({
            "depth": 5, "width_mode": "per_stage", "base_width": 8, "width_step_1": 1.5,
            "width_step_2": 1.0, "width_step_3": 2.0, "width_step_4": 1.5, "blocks_per_stage": 1,
            "block": "basic", "downsample": "maxpool", "dilation": "1", "aspp": False,
            "attention": "gate", "skip_fusion": "add", "skip_gain": False, "upsample": "transposed",
            "multiscale_input": False, "deep_supervision": False, "norm": "batch",
            "activation": "relu", "dropout": 0.0})
        spec = space.sample_spec(trial)
        assert spec.encoder_widths == (8, 12, 12, 24, 36)
        assert spec.attention_place == "skip"  # gate: not asked, skip-only


class TestResUNet3DSpace(SpaceContract):
    space_name = "resunet3d"
    cases = (1, 2)
    reload_cases = (2,)
    prune_cases = (4,)
    onnx_cases = (2,)
    many = 4

    def test_builds_3d_layers(self, space):
        spec = space.sample_spec(RandomSuggest(0))
        model = space.build_model(capped(spec, 8), 1, 1)
        assert spec.spatial_dims == 3
        assert any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
        assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def test_registry_lists_and_refuses_unknown_names():
    assert {"resunet", "resunet3d"} <= set(list_spaces())
    with pytest.raises(ValueError, match="unknown search space 'nope'.*resunet"):
        get_space("nope")


def _spec(**overrides) -> ResUNetSpec:
    fields = dict(encoder_widths=(8, 16, 32), decoder_widths=(8, 16))
    fields.update(overrides)
    return ResUNetSpec(**fields)


@pytest.mark.parametrize("overrides, message", [
    (dict(encoder_widths=(8,), decoder_widths=()), "depth"),
    (dict(encoder_widths=(), decoder_widths=()), "depth"),
    (dict(decoder_widths=(8,)), "one width per skip"),
    (dict(encoder_widths=(8, 0, 32)), "positive ints"),
    (dict(encoder_widths=(8, -16, 32)), "positive ints"),
    (dict(encoder_widths=(8, 16.5, 32)), "positive ints"),
    (dict(bridge_dilation=3), "bridge_dilation"),
    (dict(skip_attention="transformer"), "skip_attention"),
    (dict(block="transformer"), "block must be one of"),
    (dict(norm="layer"), "norm"),
    (dict(activation="tanh"), "activation"),
    (dict(spatial_dims=1), "spatial_dims"),
    (dict(dropout=1.0), "dropout"),
    (dict(expansion=0), "expansion"),
    (dict(hybrid_dilation=True), "hybrid_dilation"),
    (dict(skip_attention="gate", attention_place="decoder"), "gate"),
    (dict(upsample="bilinear"), "concat"),
    (dict(upsample_widths=(4, 16)), "equal the skip"),
    (dict(encoder_hidden_widths=((8,), (16,))), "encoder_hidden_widths"),
    (dict(block="bottleneck", encoder_hidden_widths=(((2,),), ((4,),), ((8,),))), "2 inner"),
    (dict(shortcuts=("identity",)), "shortcuts"),
    (dict(aspp=True, aspp_width=0), "aspp_width"),
    (dict(deep_supervision=1), "true or false"),
    (dict(schema_version=SCHEMA_VERSION + 1), "newer"),
])
def test_invalid_specs_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        _spec(**overrides)


def test_an_impossible_pinned_shortcut_is_refused_at_build():
    spec = _spec(shortcuts=("identity",) * 5)  # stage 0 maps 1 -> 8 channels: no identity
    with pytest.raises(ValueError, match="identity shortcut needs the shape kept"):
        build_model(spec, 1, 1)


def test_from_dict_refuses_unknown_missing_and_newer_fields():
    data = _spec().to_dict()
    with pytest.raises(ValueError, match="unknown field"):
        ResUNetSpec.from_dict({**data, "colour": "blue"})
    with pytest.raises(ValueError, match="missing field"):
        ResUNetSpec.from_dict({k: v for k, v in data.items() if k != "encoder_widths"})
    with pytest.raises(ValueError, match="newer"):
        ResUNetSpec.from_dict({**data, "schema_version": SCHEMA_VERSION + 1, "future": 1})


def test_schema_1_specs_still_load_as_the_basic_design():
    v1 = {"encoder_widths": [8, 16, 32], "decoder_widths": [8, 12], "blocks_per_stage": 1,
          "block": "basic", "bridge_dilation": 2, "skip_attention": "se", "se_reduction": 4,
          "downsample": "maxpool", "upsample": "transposed", "skip_fusion": "add", "schema_version": 1}
    spec = ResUNetSpec.from_dict(v1)
    assert spec.schema_version == SCHEMA_VERSION == 2
    assert (spec.norm, spec.activation, spec.attention_place, spec.spatial_dims) == ("batch", "relu", "skip", 2)
    assert spec == _spec(decoder_widths=(8, 12), bridge_dilation=2, skip_attention="se")


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


def test_strided_concat_bilinear_design():
    spec = _spec(block="preact", downsample="strided", upsample="bilinear", skip_fusion="concat")
    model = build_model(spec, 3, 1)
    assert isinstance(model.pool, torch.nn.Identity)
    assert model.encoder[1][0].conv1.stride == (2, 2) and model.encoder[1][0].shortcut[0].stride == (2, 2)
    assert isinstance(model.encoder[0][0].pre, torch.nn.Identity)  # the raw image is not pre-activated
    assert not isinstance(model.encoder[1][0].pre, torch.nn.Identity)
    assert model.decoder[0][0].conv1.in_channels == 32 + 16  # up-sampled bridge ++ skip
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules()) == 0


def test_hybrid_dilation_and_multiscale_input_widths():
    spec = _spec(block="basic", bridge_dilation=4, hybrid_dilation=True, blocks_per_stage=2,
                 multiscale_input=True)
    model = build_model(spec, 3, 1)
    bridge = model.encoder[-1]
    assert [c.dilation[0] for b in bridge for c in (b.conv1, b.conv2)] == [1, 2, 4, 1]
    assert model.encoder[1][0].conv1.in_channels == 8 + 3  # features ++ half-size image
    assert model.encoder[2][0].conv1.in_channels == 16 + 3


def test_deep_supervision_heads_only_in_forward_with_aux():
    spec = _spec(encoder_widths=(8, 8, 16, 16), decoder_widths=(8, 8, 16), deep_supervision=True)
    model = build_model(spec, 1, 3)
    x = torch.randn(1, 1, 37, 45)
    logits, aux = model.forward_with_aux(x)
    assert torch.equal(model(x), logits) if not model.training else model(x).shape == logits.shape
    assert [a.shape for a in aux] == [(1, 3, 37, 45)] * 2
