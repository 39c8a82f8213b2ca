"""``nas-predict``: masks for any image size, ONNX agrees with PyTorch, bad input writes nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas import read_checkpoint_info, save_checkpoint
from nas.data.loading import Normalization
from nas.deploy.export import export_onnx
from nas.train.inference import sliding_window_logits
from nas.cli.predict import main as predict_main
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

SPEC = ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 16))


def _image(height: int, width: int, seed: int, channels: int = 1) -> np.ndarray:
    """A uint8 image with smooth structure plus noise, so the masks are not trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 127 + 90 * np.sin(xx / 7.0 + seed) * np.cos(yy / 11.0)
    array = (base[..., None] + rng.normal(0, 20, (height, width, channels))).clip(0, 255).astype(np.uint8)
    return array[..., 0] if channels == 1 else array


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint with its ONNX export; metrics say costs were measured at 32 px (the default patch)."""
    torch.manual_seed(0)
    model = get_space("resunet").build_model(SPEC, 1, 1).eval()
    folder = save_checkpoint(tmp_path_factory.mktemp("predict") / "trial_0003", model, SPEC, space="resunet",
                             in_channels=1, out_channels=1, normalization=Normalization((0.5,), (0.25,)),
                             metrics={"dice": 0.7, "input_shape": [1, 1, 32, 32]})
    export_onnx(folder, folder / "model.onnx", input_size=32)
    return folder


@pytest.fixture()
def images(tmp_path) -> Path:
    """PNG (non-square, larger than the 32 px patch), JPEG and TIFF grey images."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_image(70, 101, 0)).save(folder / "wide.png")
    Image.fromarray(_image(45, 38, 1)).save(folder / "photo.jpg", quality=95)
    Image.fromarray(_image(33, 64, 2)).save(folder / "scan.tif")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _median_probability(checkpoint: Path, path: Path) -> float:
    """A threshold that splits this image's prediction about in half, so the masks compare something."""
    from nas import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    image = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255.0)[None]  # (1, H, W)
    logits = sliding_window_logits(model, image, normalization=read_checkpoint_info(checkpoint).normalization,
                                   patch_size=32)
    return float(logits.sigmoid().median())


def test_masks_for_every_image_same_stems_0_255(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    threshold = _median_probability(checkpoint, images / "wide.png")
    assert predict_main(["--checkpoint", str(checkpoint), "--input", str(images), "--out", str(out),
                         "--threshold", str(threshold), "--overlay", "--overlap", "0.25"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{suffix}" for stem in ("wide", "photo", "scan") for suffix in (".png", "_overlay.png"))
    mask = np.asarray(Image.open(out / "wide.png"))
    assert mask.shape == (70, 101) and set(np.unique(mask).tolist()) == {0, 255}
    assert 0.2 < (mask == 255).mean() < 0.8
    assert np.asarray(Image.open(out / "photo.png")).shape == (45, 38)
    overlay = Image.open(out / "wide_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (101, 70)
    assert "wrote 3 mask(s)" in capsys.readouterr().out


@pytest.mark.parametrize("patch", [[], ["--image-size", "48"]], ids=["export-size", "other-size"])
def test_onnx_prediction_agrees_with_pytorch(checkpoint, images, tmp_path, patch):
    """The same windows through onnxruntime and PyTorch; 48 px exercises the dynamic ONNX height/width."""
    threshold = str(_median_probability(checkpoint, images / "wide.png"))  # half the pixels near it
    common = ["--checkpoint", str(checkpoint), "--input", str(images / "wide.png"), "--threshold", threshold, *patch]
    assert predict_main([*common, "--out", str(tmp_path / "pt")]) == 0
    assert predict_main([*common, "--out", str(tmp_path / "onnx"), "--onnx"]) == 0
    torch_mask = np.asarray(Image.open(tmp_path / "pt" / "wide.png"))
    onnx_mask = np.asarray(Image.open(tmp_path / "onnx" / "wide.png"))
    assert (torch_mask == onnx_mask).mean() > 0.999


def _bad_case(case: str, checkpoint: Path, images: Path, tmp_path: Path) -> list[str]:
    args = {"--checkpoint": str(checkpoint), "--input": str(images / "wide.png")}
    if case == "missing_input":
        args["--input"] = str(tmp_path / "nope.png")
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "readme.txt").write_text("no images here")
        args["--input"] = str(tmp_path / "empty")
    elif case == "unreadable_image":
        (images / "broken.png").write_bytes(b"\x89PNG not really")
        args["--input"] = str(images)
    elif case == "rgb_into_grey_model":
        Image.fromarray(_image(40, 40, 3, channels=3)).save(images / "colour.png")
        args["--input"] = str(images)
    elif case == "not_a_checkpoint":
        args["--checkpoint"] = str(images)
    elif case == "onnx_missing":
        folder = tmp_path / "copy"
        folder.mkdir()
        for name in ("spec.json", "model.safetensors", "metrics.json"):
            (folder / name).write_bytes((checkpoint / name).read_bytes())
        args["--checkpoint"] = str(folder)
        return [*sum(([k, v] for k, v in args.items()), []), "--onnx"]
    elif case == "bad_threshold":
        return [*sum(([k, v] for k, v in args.items()), []), "--threshold", "1.5"]
    return sum(([k, v] for k, v in args.items()), [])


@pytest.mark.parametrize("case", ["missing_input", "empty_dir", "unreadable_image", "rgb_into_grey_model",
                                  "not_a_checkpoint", "onnx_missing", "bad_threshold"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(checkpoint, images, tmp_path, capsys, case):
    out = tmp_path / "out"
    args = [*_bad_case(case, checkpoint, images, tmp_path), "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        predict_main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("nas-predict: error: ") and captured.out == ""
    assert not out.exists()


# ----------------------------------------------------------------------------- never overwrite an input

def _overwrite_case(case: str, images: Path, tmp_path: Path) -> list[str]:
    """Arguments whose outputs would land on an input image (or on each other)."""
    if case == "same_folder":
        return ["--input", str(images), "--out", str(images)]
    if case == "same_folder_spelled_otherwise":
        return ["--input", str(images), "--out", f"{images}/../{images.name}/."]
    if case == "symlink_to_the_input_folder":
        (tmp_path / "link").symlink_to(images, target_is_directory=True)
        return ["--input", str(images), "--out", str(tmp_path / "link")]
    if case == "a_file_into_its_own_folder":
        return ["--input", str(images / "wide.png"), "--out", str(images)]
    if case == "an_output_file_that_links_to_an_input":
        (tmp_path / "masks").mkdir()
        (tmp_path / "masks" / "wide.png").symlink_to(images / "wide.png")
        return ["--input", str(images), "--out", str(tmp_path / "masks")]
    # an input named like another input's overlay: two outputs with one name
    Image.fromarray(_image(20, 20, 4)).save(images / "wide_overlay.png")
    return ["--input", str(images), "--out", str(tmp_path / "masks"), "--overlay"]


@pytest.mark.parametrize("case, message", [
    ("same_folder", "is the input folder"), ("same_folder_spelled_otherwise", "is the input folder"),
    ("symlink_to_the_input_folder", "is the input folder"), ("a_file_into_its_own_folder", "is the input folder"),
    ("an_output_file_that_links_to_an_input", "wide.png would overwrite the input image"),
    ("stems_collide", "two outputs would be named wide_overlay.png"),
])
def test_outputs_never_overwrite_an_input(checkpoint, images, tmp_path, capsys, case, message):
    from test_bad_inputs import assert_refused, snapshot

    args = _overwrite_case(case, images, tmp_path)
    before = snapshot(tmp_path)
    code = None
    try:
        code = predict_main(["--checkpoint", str(checkpoint), *args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert_refused(code, captured.err, "nas-predict", message)
    assert snapshot(tmp_path) == before and captured.out == ""
