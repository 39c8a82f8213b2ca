"""The 3D space through the whole flow (issue 16): search, report, best/, nas-export, nas-predict.

One tiny search (two 16^3 architectures, one epoch) is shared by the steps; each step is a test of
its own, so a failure names the step that broke.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import call

from nas.cli.export import main as export_main
from nas.cli.predict import main as predict_main
from nas.cli.search import main as search_main

FIXED = ["depth=3", "width_mode=growth", "base_width=8", "width_growth=1.5", "blocks_per_stage=1", "block=basic",
         "dilation=1", "aspp=False", "attention=none", "skip_fusion=add", "skip_gain=False", "upsample=transposed",
         "multiscale_input=False", "deep_supervision=False", "norm=group", "activation=relu", "dropout=0.0"]


@pytest.fixture(scope="module")
def run3d(tmp_path_factory) -> tuple[Path, str, str]:
    """``(run dir, stdout, stderr)`` of ``nas-search --space resunet3d --data synthetic:volumes``."""
    out = tmp_path_factory.mktemp("run3d") / "run"
    args = ["--space", "resunet3d", "--data", "synthetic:volumes", "--trials", "2", "--epochs", "1",
            "--image-size", "16", "--batch-size", "4", "--device", "cpu", "--out", str(out), "--early-stop", "off",
            "--sampler", "random", *sum((["--fix", f] for f in FIXED), [])]  # only downsample varies
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = search_main(args)
        except SystemExit as exit_:
            code = exit_.code
    assert code == 0, stderr.getvalue()[-2000:]
    return out, stdout.getvalue(), stderr.getvalue()


@pytest.mark.slow
def test_search_report_and_best_of_a_3d_space(run3d):
    out, stdout, stderr = run3d
    rows = (out / "trials.csv").read_text().splitlines()
    assert sum(",COMPLETE," in row for row in rows) == 2, rows
    best = sorted((out / "best").glob("trial_*"))
    assert best and all((folder / "model.onnx").is_file() for folder in best)
    metrics = json.loads((best[0] / "metrics.json").read_text())
    assert metrics["input_shape"] == [1, 1, 16, 16, 16]
    assert metrics["onnx"]["sha256"] and metrics["onnx"]["weights_sha256"] == metrics["weights_sha256"]
    assert "unavailable" not in stderr, stderr  # the prediction overlays of volumes (middle slices) too
    page = (out / "report.html").read_text()
    assert "Predictions on validation images" in page
    for folder in best:
        assert str(out / "best" / folder.name) in stdout


@pytest.mark.slow
def test_nas_export_writes_a_checked_onnx_of_a_3d_model(run3d, tmp_path, capsys):
    out, _, _ = run3d
    folder = sorted((out / "best").glob("trial_*"))[0]
    code, stdout, err = call(capsys, export_main, "--checkpoint", folder, "--format", "onnx",
                             "--out", tmp_path / "m.onnx", "--image-size", "12", "16", "20")
    assert code == 0, err
    assert "1x1x12x16x20" in stdout and (tmp_path / "m.onnx").is_file()


def _volume(tmp_path: Path) -> np.ndarray:
    return np.random.default_rng(0).random((18, 20, 23)).astype(np.float32)


@pytest.mark.slow
def test_nas_predict_segments_an_npy_volume_with_pytorch_and_onnx(run3d, tmp_path, capsys):
    out, _, _ = run3d
    folder = sorted((out / "best").glob("trial_*"))[0]
    np.save(tmp_path / "case.npy", _volume(tmp_path))
    masks = {}
    for engine in ("pt", "onnx"):
        code, stdout, err = call(capsys, predict_main, "--checkpoint", folder, "--input", tmp_path / "case.npy",
                                 "--out", tmp_path / engine, "--overlay", *(["--onnx"] if engine == "onnx" else []))
        assert code == 0, err
        masks[engine] = np.load(tmp_path / engine / "case.npy")
        assert (tmp_path / engine / "case_overlay.png").is_file()
    assert masks["pt"].shape == (18, 20, 23) and masks["pt"].dtype == np.uint8
    assert set(np.unique(masks["pt"]).tolist()) <= {0, 1}
    assert (masks["pt"] == masks["onnx"]).mean() > 0.999


@pytest.mark.slow
def test_nas_predict_keeps_a_nifti_volume_s_format_and_affine(run3d, tmp_path, capsys):
    nibabel = pytest.importorskip("nibabel")
    out, _, _ = run3d
    folder = sorted((out / "best").glob("trial_*"))[0]
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    nibabel.save(nibabel.Nifti1Image(_volume(tmp_path).T, affine), str(tmp_path / "ct.nii.gz"))
    code, _, err = call(capsys, predict_main, "--checkpoint", folder, "--input", tmp_path / "ct.nii.gz",
                        "--out", tmp_path / "masks")
    assert code == 0, err
    mask = nibabel.load(str(tmp_path / "masks" / "ct.nii.gz"))
    assert mask.shape == (23, 20, 18) and np.allclose(mask.affine, affine)
    assert set(np.unique(np.asarray(mask.dataobj)).tolist()) <= {0, 1}


def test_volume_windows_blend_to_the_whole_volume_forward():
    """A pointwise model gives the same logits through cubic windows as in one forward pass."""
    from nas.data.normalization import Normalization
    from nas.deploy.volume_predict import volume_logits

    model = torch.nn.Conv3d(1, 1, 1).eval()
    volume = torch.rand(1, 9, 13, 20)
    norm = Normalization((0.4,), (0.2,))
    windowed = volume_logits(model, volume, normalization=norm, patch_size=8, overlap=0.5, batch_size=3)
    with torch.no_grad():
        whole = model(norm.apply(volume[None], spatial_dims=3))[0]
    assert windowed.shape == (1, 9, 13, 20)
    assert torch.allclose(windowed, whole, atol=1e-5)


def test_a_2d_input_for_a_3d_model_is_one_line(tmp_path):
    from nas.data.errors import DataError
    from nas.deploy.volume_predict import list_volumes

    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"a\.png is not a volume .*the model is 3D"):
        list_volumes(tmp_path / "a.png")
    with pytest.raises(DataError, match="no volumes in"):
        list_volumes(tmp_path)
