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
