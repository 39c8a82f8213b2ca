"""Label maps downstream (issue 17): nas-predict, ONNX export, compression and the report of a K-class model.

One tiny K = 4 checkpoint (``synthetic:classes``, widths 4-8, 32 px, 1 epoch) is trained once per module;
every test reads it or copies it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import call
from nas.data.loading import load_data
from nas.data.synthetic import CLASS_NAMES
from nas.train.labels import labels_from_logits
from search_spaces.resunet import ResUNetSpec

SPEC = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,))
SIZE = 32


@pytest.fixture(scope="module")
def classes_data():
    return load_data("synthetic:classes", image_size=SIZE, seed=0, synthetic_train=8, synthetic_val=4,
                     synthetic_test=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, classes_data) -> Path:
    """A trained K = 4 checkpoint folder (metrics.json with class names and colours, threshold null)."""
    from nas.engine.trial import TrialSettings, train_and_save
    from nas.train.trainer import TrainConfig
    from search_spaces import get_space

    folder = tmp_path_factory.mktemp("k4") / "trial_0000"
    settings = TrialSettings(image_size=SIZE, train=TrainConfig(epochs=1, batch_size=4, patch_size=SIZE,
                                                                foreground_fraction=0.5), latency_repeats=1)
    train_and_save(SPEC, get_space("resunet"), classes_data, settings, folder)
    return folder


def _images(folder: Path, data, count: int = 2) -> Path:
    folder.mkdir(parents=True)
    for index in range(count):
        pixels = (data.val_images[index][0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{data.val_names[index]}.png")
    return folder


# --- nas-predict ---------------------------------------------------------------------------------

def test_predict_writes_label_maps_and_class_coloured_overlays(tmp_path, capsys, checkpoint, classes_data):
    from nas.cli.predict import main
    from nas.deploy.checkpoint import load_checkpoint, read_checkpoint_info
    from nas.train.inference import sliding_window_logits

    inputs = _images(tmp_path / "in", classes_data)
    code, out, err = call(capsys, main, "--checkpoint", checkpoint, "--input", inputs, "--out", tmp_path / "out",
                          "--overlay")
    assert code == 0, err
    assert "4 classes, label = argmax (0 background, 1 curve, 2 blob, 3 region)" in out
    info = read_checkpoint_info(checkpoint)
    colours = info.metrics["class_colours"]
    model, _ = load_checkpoint(checkpoint)
    for path in sorted(inputs.iterdir()):
        written = np.array(Image.open(tmp_path / "out" / path.name))
        assert written.dtype == np.uint8 and written.shape == (SIZE, SIZE) and written.max() <= 3
        image = torch.from_numpy(np.array(Image.open(path), dtype=np.float32)[None] / 255.0)
        logits = sliding_window_logits(model, image, normalization=info.normalization, patch_size=SIZE)
        assert np.array_equal(written, labels_from_logits(logits[0]).numpy()[0])  # value = class index, argmax
        overlay = np.array(Image.open(tmp_path / "out" / f"{path.stem}_overlay.png").convert("RGB")).astype(int)
        grey = np.array(Image.open(path)).astype(int)
        for value in range(1, 4):  # each class tinted halfway towards its own colour
            where = written == value
            if where.any():
                expected = np.round(0.5 * grey[where][:, None] + 0.5 * np.array(colours[value])[None])
                assert np.abs(overlay[where] - expected).max() <= 1
        assert np.array_equal(overlay[written == 0], np.repeat(grey[written == 0][:, None], 3, axis=1))


def test_predict_refuses_threshold_for_k_classes(tmp_path, capsys, checkpoint, classes_data):
    from nas.cli.predict import main

    inputs = _images(tmp_path / "in", classes_data, count=1)
    code, _, err = call(capsys, main, "--checkpoint", checkpoint, "--input", inputs, "--out", tmp_path / "out",
                        "--threshold", "0.3")
    last = err.strip().splitlines()[-1]  # the usage, then one line
    assert code == 2 and last.startswith("nas-predict: error: --threshold is for binary models; ")
    assert last.endswith("has 4 classes and predicts the argmax")
    assert not (tmp_path / "out").exists()


# --- export and the model card -------------------------------------------------------------------

def test_onnx_export_of_a_k_class_model_keeps_k_channels_and_the_argmax(tmp_path, capsys, checkpoint):
    import onnxruntime as ort

    from nas.cli.export import main
    from nas.deploy.checkpoint import load_checkpoint
    from nas.deploy.model_card import write_model_card

    folder = shutil.copytree(checkpoint, tmp_path / "trial_0000")
    code, out, err = call(capsys, main, "--checkpoint", folder, "--format", "onnx")
    assert code == 0, err
    assert "labels (logit > 0, or the argmax of K classes) agree on" in out
    assert "label = argmax over the 4 logit channels (0 background, 1 curve, 2 blob, 3 region)" in out
    model, _ = load_checkpoint(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 40, 36, generator=torch.Generator().manual_seed(5))
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.inference_mode():
        expected = model(x)
    assert got.shape == (3, 4, 40, 36)
    agree = (labels_from_logits(got) == labels_from_logits(expected).numpy()).mean()
    assert agree >= 0.999
    card = write_model_card(folder).read_text()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "prediction = argmax over the channels" in card and "Prediction = argmax over the 4 logit channels" in card
    assert "sigmoid(logit) >" not in card and "## Classes" in card
    curve = metrics["per_class"]["curve"]
    assert f"| 1 | curve | {', '.join(map(str, metrics['class_colours'][1]))} | {curve['dice']:.4f} | " \
           f"{curve['iou']:.4f} |" in card
    assert f"Mean IoU over the foreground classes (validation, argmax): {metrics['miou']:.4f}" in card


def test_label_parity_check_refuses_an_export_whose_argmax_differs():
    from nas.deploy.export import ExportError, _verify

    model = torch.nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 1.0 + 1e-5, 0.0, 0.0]).view(4, 1, 1, 1))
        model.bias.zero_()

    def swapped(x):  # logits within the tolerance, but channels 0 and 1 (a near tie) exchanged
        with torch.inference_mode():
            return model(x)[:, [1, 0, 2, 3]].numpy()

    with pytest.raises(ExportError, match="labels differ from PyTorch's"):
        _verify(swapped, model.eval(), [(1, 1, 8, 8)], tolerance=1e-3)
