"""Exports match PyTorch (ONNX via onnxruntime, TorchScript), the CLI refuses bad input, the card is real."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from nas import load_checkpoint, save_checkpoint
from nas.data.loading import Normalization
from nas.deploy.export import ExportError, export_onnx, export_torchscript
from nas.cli.export import main as export_main
from nas.deploy.model_card import prepare_deployment, write_model_card
from search_spaces import get_space, list_spaces
from search_spaces.resunet import ResUNetSpec

SPEC = ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 16))
METRICS = {"dice": 0.8123, "best_epoch": 4, "params": 27361, "macs": 20545536, "flops": 41091072,
           "latency_ms": 1.234, "latency_device": "cpu (2 threads)", "input_shape": [1, 1, 64, 64],
           "dice_definition": "foreground, per image, mean over validation images, best epoch"}


def make_checkpoint(folder: Path, in_channels: int = 1, metrics: dict | None = None) -> Path:
    torch.manual_seed(0)
    model = get_space("resunet").build_model(SPEC, in_channels, 1).eval()
    norm = Normalization(mean=(0.45,) * in_channels, std=(0.2,) * in_channels)
    return save_checkpoint(folder, model, SPEC, space="resunet", in_channels=in_channels, out_channels=1,
                           normalization=norm, metrics=METRICS if metrics is None else metrics)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("export") / "trial_0001")


def _torch_logits(folder: Path, x: torch.Tensor) -> np.ndarray:
    model, _ = load_checkpoint(folder)
    with torch.no_grad():
        return model(x).numpy()


def test_onnx_matches_pytorch_at_other_sizes(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "m.onnx", input_size=64)
    assert result.dynamic_spatial and all(diff < 1e-4 for diff in result.checks.values())
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((3, 1, 45, 77), (1, 1, 64, 96)):  # a non-multiple of 4 and a multiple, batch 3 and 1
        x = torch.randn(shape)
        got = session.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, _torch_logits(checkpoint, x), atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch(checkpoint, tmp_path):
    result = export_torchscript(checkpoint, tmp_path / "m.ts", input_size=(48, 40))
    traced = torch.jit.load(str(tmp_path / "m.ts"))
    x = torch.randn(2, 1, 53, 70)
    with torch.no_grad():
        np.testing.assert_allclose(traced(x).numpy(), _torch_logits(checkpoint, x), atol=1e-4)
    assert result.format == "torchscript" and result.checks


class _SizeFrozen(nn.Module):
    """Reshapes with Python ints, so a trace is only valid at the traced size."""

    in_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[2]), int(x.shape[3])
        return self.conv(x).reshape(-1, height * width).reshape(-1, 1, height, width)


class _Noisy(nn.Module):
    in_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


def test_size_frozen_model_is_exported_with_fixed_height_width(tmp_path):
    result = export_onnx(_SizeFrozen(), tmp_path / "m.onnx", input_size=32)
    assert not result.dynamic_spatial and "fixed" in result.note
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[2:] == [32, 32]


def test_export_that_does_not_match_is_not_written(tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(_Noisy(), tmp_path / "m.onnx", input_size=16)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_into_the_folder_and_prints_the_check(tmp_path, capsys):
    folder = make_checkpoint(tmp_path / "ck")
    assert export_main(["--checkpoint", str(folder), "--format", "onnx"]) == 0
    assert (folder / "model.onnx").is_file() and "vs PyTorch" in capsys.readouterr().out
    assert export_main(["--checkpoint", str(folder), "--format", "torchscript", "--input-size", "40", "56",
                        "--output", str(tmp_path / "elsewhere" / "net.ts")]) == 0
    assert (tmp_path / "elsewhere" / "net.ts").is_file() and not (folder / "model.ts").exists()
    assert export_main(["--checkpoint", str(folder), "--format", "safetensors",
                        "--output", str(tmp_path / "w.safetensors")]) == 0
    assert (tmp_path / "w.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


@pytest.mark.parametrize("case", ["not_a_folder", "corrupt_weights", "corrupt_spec", "bad_size", "bad_format"])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    folder = make_checkpoint(tmp_path / "ck")
    args = ["--checkpoint", str(folder), "--format", "onnx"]
    if case == "not_a_folder":
        args[1] = str(tmp_path / "missing")
    elif case == "corrupt_weights":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[-5] ^= 0xFF
        (folder / "model.safetensors").write_bytes(bytes(data))
    elif case == "corrupt_spec":
        (folder / "spec.json").write_text("{not json")
    elif case == "bad_size":
        args += ["--input-size", "4"]
    else:
        args[3] = "tflite"
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        export_main(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("nas-export: error: ")
    assert sorted(p.name for p in folder.iterdir()) == before


def test_model_card_carries_the_real_numbers(tmp_path):
    folder = make_checkpoint(tmp_path / "trial_0007")
    result = prepare_deployment(folder)
    assert result.dynamic_spatial
    card = (folder / "README.md").read_text()
    for text in ("0.8123", "27,361", "20,545,536", "41,091,072", "1.23 ms on cpu (2 threads)", "64x64",
                 "nas.load_checkpoint", "nas-predict --checkpoint trial_0007", "mean = [0.45]", "std = [0.2]",
                 "`model.onnx`", "`model.safetensors`", "`spec.json`", "`metrics.json`", "encoder_widths"):
        assert text in card, text
    assert {"spec.json", "model.safetensors", "model.onnx", "metrics.json", "README.md"} <= {
        p.name for p in folder.iterdir()}
    load_checkpoint(folder)  # the extra files do not disturb loading


def test_model_card_counts_costs_when_metrics_lack_them(tmp_path):
    folder = make_checkpoint(tmp_path / "ck", metrics={"dice": 0.5})
    card = write_model_card(folder).read_text()
    model, _ = load_checkpoint(folder)
    params = sum(p.numel() for p in model.parameters())
    assert f"| parameters | {params:,} |" in card and "not measured" in card
    assert json.loads((folder / "metrics.json").read_text())["dice"] == 0.5


def test_volume_checkpoint_exports_with_dynamic_depth_height_width(tmp_path):
    if "resunet3d" not in list_spaces():
        pytest.skip("this tree has no 3D search space (resunet3d)")
    spec = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,), spatial_dims=3)
    model = get_space("resunet3d").build_model(spec, 1, 1).eval()
    folder = save_checkpoint(tmp_path / "vol", model, spec, space="resunet3d", in_channels=1, out_channels=1,
                             normalization=Normalization((0.5,), (0.2,)), metrics={"input_shape": [1, 1, 16, 16, 16]})
    result = export_onnx(folder, folder / "model.onnx")
    assert result.input_size == (16, 16, 16) and result.dynamic_spatial
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 1, 9, 20, 13)
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], _torch_logits(folder, x), atol=1e-4)


def test_deployment_of_an_unexportable_model_writes_the_card_and_warns(tmp_path, monkeypatch):
    folder = make_checkpoint(tmp_path / "ck")

    def refuse(*args, **kwargs):
        raise ExportError("exported model differs from PyTorch at input (1, 1, 64, 64)")

    monkeypatch.setattr("nas.deploy.model_card.export_onnx", refuse)
    with pytest.warns(UserWarning, match="no ONNX export"):
        assert prepare_deployment(folder) is None
    assert not (folder / "model.onnx").exists()
    assert "No ONNX export: exported model differs" in (folder / "README.md").read_text()
