"""Compression stage: channel pruning over the whole space, distillation, INT8/FP16 ONNX, the CLI and its gate."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compress.finetune import distillation_loss, finetune
from compress.index import compressed_records, read_index
from compress.prune import PruningError, macs_of, prune_channels, stem_conv
from compress.quantize import export_precisions, session
from nas import load_checkpoint, save_checkpoint
from nas.data.loading import Normalization, load_data
from nas.results.trial_result import RecordKind
from nas.train.trainer import TrainConfig, train_model
from search_spaces.resunet import ResUNetSpec, build_model

X = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))

VARIANTS = [dict(block=b) for b in ("basic", "bottleneck", "preact", "inverted", "plain")] + [
    dict(skip_attention=a, attention_place=p) for a in ("se", "scse", "cbam") for p in ("skip", "decoder")] + [
    dict(skip_attention="gate"), dict(upsample="pixel_shuffle", skip_fusion="concat"),
    dict(upsample="bilinear", skip_fusion="concat"), dict(upsample="bilinear_conv", blocks_per_stage=2),
    dict(aspp=True, deep_supervision=True, multiscale_input=True, norm="group"),
    dict(norm="instance", downsample="strided", bridge_dilation=2)]


def tiny(**fields) -> ResUNetSpec:
    return ResUNetSpec(encoder_widths=(8, 16, 16), decoder_widths=(8, 16), **fields)


def shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fields", VARIANTS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_pruning_every_block_and_attention_rebuilds_from_its_spec(fields, tmp_path):
    spec = tiny(**fields)
    torch.manual_seed(0)
    model = build_model(spec, 1, 1).eval()
    pruned, new_spec = prune_channels(model, spec, importance="magnitude", ratio=0.4, ratio_of="channels",
                                      round_to=1, example_input=X)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert model.spec == spec and shapes(model) == shapes(build_model(spec, 1, 1))  # the input is untouched
    rebuilt = build_model(ResUNetSpec.from_dict(json.loads(json.dumps(new_spec.to_dict()))), 1, 1)
    assert shapes(rebuilt) == shapes(pruned)  # the spec spells every pruned width
    pruned.eval()
    with torch.no_grad():
        y = pruned(X)
    assert y.shape == (2, 1, 32, 32)
    assert stem_conv(pruned).out_channels == stem_conv(model).out_channels  # the input stem is kept
    assert pruned.head.out_channels == 1
    folder = save_checkpoint(tmp_path / "ckpt", pruned, new_spec, space="resunet", in_channels=1, out_channels=1,
                             normalization=Normalization((0.5,), (0.2,)))
    reloaded, reloaded_spec = load_checkpoint(folder)
    assert reloaded_spec == new_spec
    with torch.no_grad():
        torch.testing.assert_close(reloaded(X), y)


@pytest.mark.parametrize("importance", ["magnitude", "bn-scale", "random", "taylor"])
def test_macs_ratio_lands_within_tolerance(importance):
    spec = tiny()
    torch.manual_seed(0)
    model = build_model(spec, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missed target warns: fail on it
        pruned, _ = prune_channels(model, spec, importance=importance, ratio=0.5, round_to=1, example_input=X,
                                   loss_fn=lambda m: m(X).square().mean())
    reduction = 1 - macs_of(pruned, X) / macs_of(model, X)
    assert abs(reduction - 0.5) <= 0.03


def test_round_to_keeps_multiples_and_global_pruning_runs():
    spec = ResUNetSpec(encoder_widths=(16, 32, 32), decoder_widths=(16, 32))
    model = build_model(spec, 1, 1)
    pruned, new_spec = prune_channels(model, spec, ratio=0.5, ratio_of="channels", round_to=8, example_input=X)
    assert all(w % 8 == 0 for w in (*new_spec.encoder_widths, *new_spec.decoder_widths))
    assert new_spec.encoder_widths != spec.encoder_widths
    _, global_spec = prune_channels(model, spec, ratio=0.5, global_pruning=True, iterative_steps=2, round_to=1,
                                    example_input=X)
    assert global_spec != spec


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_outside_open_unit_interval_is_refused(ratio):
    with pytest.raises(PruningError, match=r"in \(0, 1\)"):
        prune_channels(build_model(tiny(), 1, 1), ratio=ratio, example_input=X)


def test_taylor_without_a_loss_and_unknown_importance_are_refused():
    model = build_model(tiny(), 1, 1)
    with pytest.raises(PruningError, match="loss_fn"):
        prune_channels(model, importance="taylor", ratio=0.3, example_input=X)
    with pytest.raises(PruningError, match="unknown importance"):
        prune_channels(model, importance="l7", ratio=0.3, example_input=X)


def test_distillation_losses():
    a = torch.randn(2, 1, 8, 8)
    assert float(distillation_loss(a, a, "mse")) == 0.0
    assert abs(float(distillation_loss(a, a, "kl"))) < 1e-5
    assert float(distillation_loss(a, -a, "kl")) > 0.1
    with pytest.raises(ValueError, match="unknown distillation"):
        distillation_loss(a, a, "l1")


@pytest.fixture(scope="module")
def small_data():
    return load_data("synthetic", image_size=32, seed=0, synthetic_train=16, synthetic_val=4)


def test_distilled_finetune_trains_and_keeps_best_weights(small_data):
    teacher = build_model(tiny(), 1, 1).eval()
    student, _ = prune_channels(teacher, ratio=0.5, ratio_of="channels", round_to=1, example_input=X)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = finetune(student, small_data, TrainConfig(epochs=2, batch_size=8, patch_size=32, device="cpu"),
                      teacher=teacher, distill_weight=0.5, distill_loss="kl")
    assert len(result.epoch_dice) == 2 and 1 <= result.best_epoch <= 2
    assert all(np.isfinite(result.epoch_loss))
    assert any(not torch.equal(before[k], v) for k, v in result.state_dict.items())


def test_int8_and_fp16_onnx_run_and_agree_with_fp32(small_data, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny(), 1, 1).eval()
    out = export_precisions(model, tmp_path, small_data, input_size=32, calibration_patches=8, latency_repeats=3)
    precisions = out["precisions"]
    assert set(precisions) == {"fp32", "fp16", "int8"}
    for name, file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"), ("fp16", "model.fp16.onnx")):
        assert (tmp_path / file).stat().st_size == precisions[name]["size_bytes"] > 0
    assert precisions["int8"]["error"] is None and precisions["int8"]["agreement_with_fp32"] >= 0.9
    assert precisions["int8"]["latency_ms"] > 0 and 0 <= precisions["int8"]["dice"] <= 1
    assert out["float_nodes"] == []  # transposed convs included
    got = session(tmp_path / "model.int8.onnx").run(None, {"image": X[:1].numpy()})[0]
    assert got.shape == (1, 1, 32, 32)
    # every conv reads int8 weights through a DequantizeLinear, and no fp32 copy of a weight is kept
    graph = onnx.load(str(tmp_path / "model.int8.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    produced_by = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(produced_by[n.input[1]].op_type == "DequantizeLinear" for n in convs)
    assert all(inits[produced_by[n.input[1]].input[0]].dtype == np.int8 for n in convs)
    fp32_weights = sum(a.nbytes for a in inits.values() if a.dtype == np.float32)
    assert fp32_weights < 0.05 * precisions["fp32"]["size_bytes"]  # only scales left in float
    assert precisions["int8"]["size_bytes"] < precisions["fp32"]["size_bytes"] / 2.5  # graph overhead: tiny model


def test_int8_can_leave_transposed_convs_in_float(small_data, tmp_path):
    from compress.quantize import calibration_batches, quantize_int8
    from nas.deploy.export import export_onnx

    export_onnx(build_model(tiny(), 1, 1).eval(), tmp_path / "model.onnx", input_size=32, in_channels=1,
                spatial_dims=2)
    batches = calibration_batches(small_data, 32, 4, seed=0)
    floats = quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx", batches, keep_transposed_float=True)
    graph = onnx.load(str(tmp_path / "model.int8.onnx")).graph
    transposed = [n for n in graph.node if n.op_type == "ConvTranspose"]
    assert len(floats) == len(transposed) == 2
    produced_by = {o: n.op_type for n in graph.node for o in n.output}
    assert all(produced_by.get(n.input[1]) != "DequantizeLinear" for n in transposed)


# --------------------------------------------------------------------------------------------- CLI

def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from nas.cli.compress import main

    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder with one trained checkpoint in best/ (the CLI reads only the folder and --data)."""
    run = tmp_path_factory.mktemp("run")
    data = load_data("synthetic", image_size=32, seed=0)
    spec = ResUNetSpec(encoder_widths=(16, 16, 32), decoder_widths=(16, 16))
    torch.manual_seed(0)
    model = build_model(spec, 1, 1)
    result = train_model(model, data, TrainConfig(epochs=3, patch_size=32, device="cpu"))
    model.load_state_dict(result.state_dict)
    save_checkpoint(run / "best" / "trial_0003", model.eval(), spec, space="resunet", in_channels=1,
                    out_channels=1, normalization=data.normalization, metrics={"dice": result.best_dice, "trial": 3})
    return run


@pytest.mark.slow
def test_cli_compresses_a_run_and_the_gate_rejects_a_big_loss(trained_run, capsys):
    code, out, err = run_cli(capsys, "--run", str(trained_run), "--data", "synthetic", "--image-size", "32",
                             "--ratios", "0.3,0.75", "--round-to", "1", "--finetune-epochs", "1", "--distill",
                             "--max-dice-drop", "15")
    assert code == 0, err
    variants = {v["name"]: v for v in read_index(trained_run)}
    assert set(variants) == {"trial_0003_magnitude_r0.3", "trial_0003_magnitude_r0.75"}
    for variant in variants.values():
        metrics = variant["metrics"]
        assert metrics["kind"] == "compressed" and metrics["parent_trial"] == 3
        assert variant["kept"] == (metrics["dice_drop_points"] <= 15)
        folder = trained_run / "compressed" / variant["name"]
        assert folder.is_dir() == variant["kept"]  # a rejected variant is listed, not written
    kept = [v for v in variants.values() if v["kept"]]
    assert kept, "the mild 0.3 variant should survive a 15-point gate"
    folder = trained_run / kept[0]["checkpoint"]
    model, spec = load_checkpoint(folder)
    assert spec.to_dict() == kept[0]["spec"]
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["quantization"]["precisions"]["int8"]["size_bytes"] == (folder / "model.int8.onnx").stat().st_size
    records = compressed_records(trained_run, first_number=1000)
    assert [r.number for r in records] == list(range(1000, 1000 + len(kept)))
    assert all(r.kind == RecordKind.COMPRESSED and r.result.provenance["kind"] == "compressed" and r.finished
               for r in records)


def test_cli_gate_rejects_when_every_point_counts(trained_run, capsys, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "--checkpoint", str(trained_run / "best" / "trial_0003"), "--data", "synthetic",
                             "--image-size", "32", "--ratios", "0.75", "--round-to", "1", "--finetune-epochs", "0",
                             "--max-dice-drop", "0", "--no-quantize", "--out", str(out_dir))
    assert code == 0, err
    assert "rejected" in out and not any(out_dir.glob("trial_*"))


@pytest.mark.parametrize("args, message", [
    (["--run", "{tmp}/nope"], "no such run directory"),
    (["--run", "{tmp}"], "no checkpoints"),
    (["--checkpoint", "{tmp}/bare"], "spec.json: missing"),
    (["--checkpoint", "{tmp}/bare", "--ratios", "0.5,1"], r"in \(0, 1\)"),
    (["--checkpoint", "{tmp}/bare", "--ratios", "0"], r"in \(0, 1\)"),
    (["--checkpoint", "{tmp}/bare", "--importance", "l7"], "--importance"),
])
def test_cli_bad_input_is_one_line_exit_2_nothing_written(args, message, tmp_path, capsys):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "model.safetensors").write_bytes(b"")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("nas-compress: error:") and len([l for l in lines if "error" in l]) == 1
    assert re.search(message, lines[-1])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
