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


# --- compression ---------------------------------------------------------------------------------

def test_distillation_kl_is_over_the_class_softmax_for_k_channels():
    from compress.finetune import distillation_loss

    teacher = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    student = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    assert distillation_loss(teacher, teacher, "kl").item() == pytest.approx(0.0, abs=1e-6)
    p, q = (teacher / 2).softmax(1), (student / 2).softmax(1)  # temperature 2, then x T^2
    by_hand = 4 * (p * (p.log() - q.log())).sum(1).mean()
    assert distillation_loss(student, teacher, "kl").item() == pytest.approx(by_hand.item(), rel=1e-5)
    binary = distillation_loss(student[:, :1], teacher[:, :1], "kl")  # one channel: the sigmoid path
    pt, qt = (teacher[:, :1] / 2).sigmoid(), (student[:, :1] / 2).sigmoid()
    sigmoid_kl = 4 * (pt * (pt / qt).log() + (1 - pt) * ((1 - pt) / (1 - qt)).log()).mean()
    assert binary.item() == pytest.approx(sigmoid_kl.item(), rel=1e-4)


def test_pruning_distillation_and_int8_of_a_k_class_model_gate_on_mean_class_dice(tmp_path, checkpoint,
                                                                                     classes_data):
    from compress.pipeline import CompressOptions, compress_checkpoint
    from nas.deploy.checkpoint import load_checkpoint, read_checkpoint_info
    from nas.train.multiclass import mean_class_dice
    from nas.train.trainer import TrainConfig, predict_masks

    options = CompressOptions(ratios=(0.5,), ratio_of="channels", round_to=2, finetune_epochs=1, distill=True,
                              distill_loss="kl", max_dice_drop=100.0, image_size=SIZE,
                              train=TrainConfig(batch_size=4, seed=0))
    entries = compress_checkpoint(checkpoint, classes_data, tmp_path / "compressed", options, log=lambda _: None)
    (entry,) = entries
    assert entry["kept"] and entry["spec"]["num_classes"] == 4
    _, masks, fovs = classes_data.split("val")

    def class_mean(model) -> float:  # the K-class Dice by its own definition, not through the pipeline
        return mean_class_dice(predict_masks(model, classes_data, torch.device("cpu")), masks, 4, fovs)

    parent, _ = load_checkpoint(checkpoint)
    metrics = entry["metrics"]
    assert metrics["parent_dice"] == pytest.approx(class_mean(parent))
    folder = tmp_path / "compressed" / entry["name"]
    model, spec = load_checkpoint(folder)
    assert spec.num_classes == 4 and read_checkpoint_info(folder).out_channels == 4
    assert metrics["macs"] < metrics["parent_macs"] and model(torch.zeros(1, 1, SIZE, SIZE)).shape[1] == 4
    assert metrics["dice"] == pytest.approx(class_mean(model))
    assert metrics["dice_drop_points"] == pytest.approx(100 * (metrics["parent_dice"] - metrics["dice"]))
    assert "per class the mean" in metrics["dice_definition"]
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["class_names"] == list(CLASS_NAMES) and stored["class_colours"] == \
        json.loads((checkpoint / "metrics.json").read_text())["class_colours"]
    int8 = metrics["quantization"]["precisions"]["int8"]
    assert int8["error"] is None and 0.0 <= int8["dice"] <= 1.0 and int8["agreement_with_fp32"] > 0.9
    assert metrics["quantization"]["precisions"]["fp32"]["dice"] == pytest.approx(metrics["dice"], abs=1e-6)
    gated = compress_checkpoint(checkpoint, classes_data, tmp_path / "gated",
                                CompressOptions(**{**options.__dict__, "max_dice_drop": 0.0, "quantize": False,
                                                   "finetune_epochs": 0, "distill": False}), log=lambda _: None)
    assert gated[0]["kept"] == (gated[0]["metrics"]["dice_drop_points"] <= 0.0)


# --- the report ----------------------------------------------------------------------------------

def _record(number: int, metrics: dict, **extra):
    from nas.results.outcome import TrialState
    from nas.results.records import TrialRecord

    return TrialRecord.from_metrics(number, TrialState.COMPLETE, {**metrics, **extra}, spec=SPEC.to_dict(),
                                    checkpoint=f"trials/trial_{number:04d}")


def test_report_of_a_k_class_run_shows_class_bars_confusion_and_coloured_overlays(tmp_path, checkpoint,
                                                                                     classes_data):
    from nas.deploy.overlays import prediction_overlays
    from reports import render_report
    from reports.fmt import esc

    metrics = json.loads((checkpoint / "metrics.json").read_text())
    record = _record(0, metrics)
    overlays = prediction_overlays(tmp_path, lambda: classes_data, image_size=SIZE, folders=[checkpoint])
    assert overlays[0]["classes"] == [[n, c] for n, c in zip(CLASS_NAMES, metrics["class_colours"])]
    page = render_report([record], tmp_path / "report.html", title="k4", config={"data": "synthetic:classes"},
                         overlays=overlays, exported={0: "best/trial_0000"}).read_text()
    assert "Per-class Dice and IoU (validation, argmax)" in page and "Confusion matrix (validation pixels)" in page
    for value, name in enumerate(CLASS_NAMES[1:], start=1):
        r, g, b = metrics["class_colours"][value]
        dice = metrics["per_class"][name]["dice"]
        assert f'<span class="bar" style="width:{dice * 8:.2f}em;background:rgb({r},{g},{b})"></span>{dice:.3f}' in page
    for row in metrics["confusion"]:
        assert all(f">{count:,}</td>" in page for count in row)
    assert f"validation mIoU</th><td>{metrics['miou']:.4f}" in page
    assert "red: wrong class or false positive" in page and esc("region") in page


def test_report_labels_a_non_dice_quality_objective(tmp_path):
    from nas.results.pareto import Objective
    from reports import render_report

    def strata(small: float) -> dict:
        return {"quality": {"val": {"dice": 0.5, "size_strata": {"small": {"count": 3, "detected": 0.5, "dice": small}}}}}

    records = [_record(n, {"dice": 0.6 + n / 100, "macs": 1000 * (n + 1), "params": 10, **strata(0.2 + n / 10)})
               for n in range(3)]
    small = render_report(records, tmp_path / "a.html", title="t", config={},
                          front_objectives=(Objective("dice_small", "maximize"), Objective("macs", "minimize"))
                          ).read_text()
    assert '"text":"Small-object Dice (validation, objects < 8 px)"' in small.replace("\\u003c", "<")
    assert "Small-object Dice (validation, objects < 8 px) vs MACs (the search" in small.replace("\\u003c", "<")
    assert "Pareto front, small-object Dice vs MACs" in small
    hd95 = [_record(n, {"dice": 0.6, "macs": 1000 * (n + 1), "params": 10,
                        "quality": {"val": {"dice": 0.6, "hd95": 5.0 - n}}}) for n in range(3)]
    page = render_report(hd95, tmp_path / "b.html", title="t", config={},
                         front_objectives=(Objective("hd95", "minimize"), Objective("macs", "minimize"))).read_text()
    assert '"text":"HD95 (validation, px; lower is better)"' in page
    assert "<th>HD95 (lower is better)</th>" in page  # the trials table's column for the run's objective
    assert all(f'<td class="num">{5.0 - n:.2f}</td>' in page for n in range(3))
    plain = render_report(hd95, tmp_path / "c.html", title="t", config={}).read_text()
    assert "plot-objective" not in plain and "HD95 (lower is better)" not in plain  # a Dice run's page as before


# --- ranking by the run's quality objective ------------------------------------------------------

def test_one_finalist_is_the_best_by_the_quality_objective():
    from nas.stages.finalist_training import spread
    from nas.results.pareto import Objective

    front = [_record(n, {"dice": dice, "macs": 100 * (n + 1), "quality": {"val": {"dice": dice, "hd95": hd95}}})
             for n, (dice, hd95) in enumerate([(0.5, 9.0), (0.8, 4.0), (0.7, 2.5)])]
    assert [r.number for r in spread(front, 1)] == [1]  # Dice, as before
    assert [r.number for r in spread(front, 1, Objective("hd95", "minimize"))] == [2]
    assert [r.number for r in spread(front, 2, Objective("hd95", "minimize"))] == [0, 2]  # both ends, any objective


def test_study_records_take_no_dice_from_a_non_dice_first_objective(tmp_path):
    import optuna

    from nas.engine.optuna_adapter.study import CONFIG_ATTR, study_records

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for first, expected in (("miou,macs", None), ("dice,macs", 0.61)):
        study = optuna.create_study(directions=["maximize", "minimize"])
        study.set_user_attr(CONFIG_ATTR, {"objectives": first})
        study.add_trial(optuna.trial.create_trial(values=[0.61, 1000.0], user_attrs={"metrics": {"macs": 1000}}))
        (record,) = study_records(study)
        assert record.dice == expected  # a missing Dice is filled from values[0] only when that value is Dice


def test_predict_writes_a_k_class_volume_as_class_indices(tmp_path, capsys):
    from nas import save_checkpoint
    from nas.cli.predict import main
    from nas.data.normalization import Normalization
    from nas.deploy.volume_predict import volume_logits
    from search_spaces.resunet import build_model

    spec = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,), spatial_dims=3, num_classes=3)
    torch.manual_seed(0)
    model = build_model(spec, 1).eval()  # untrained: only the label rule and the file format are checked
    norm = Normalization((0.5,), (0.25,))
    folder = save_checkpoint(tmp_path / "trial_0001", model, spec, space="resunet3d", in_channels=1, out_channels=3,
                             normalization=norm, metrics={"input_shape": [1, 1, 8, 8, 8], "threshold": None})
    (tmp_path / "in").mkdir()
    volume = np.random.default_rng(0).uniform(size=(10, 9, 12)).astype(np.float32)
    np.save(tmp_path / "in" / "case.npy", volume)
    code, out, err = call(capsys, main, "--checkpoint", folder, "--input", tmp_path / "in", "--out", tmp_path / "out",
                          "--overlay")
    assert code == 0, err
    written = np.load(tmp_path / "out" / "case.npy")
    logits = volume_logits(model, torch.from_numpy(volume)[None], normalization=norm, patch_size=8)
    assert written.dtype == np.uint8 and written.shape == (10, 9, 12)
    assert np.array_equal(written, labels_from_logits(logits, spatial_dims=3).numpy()[0])
    assert (tmp_path / "out" / "case_overlay.png").is_file() and "classes 0:" in out


def test_static_figures_add_the_front_of_a_non_dice_objective(tmp_path):
    from nas.results.pareto import DICE_MACS, Objective
    from reports import save_static_figures

    records = [_record(n, {"dice": 0.6, "macs": 1000 * (n + 1), "params": 10, "latency_ms": 1.0,
                           "quality": {"val": {"dice": 0.6, "hd95": 5.0 - n}}}) for n in range(3)]
    objectives = (Objective("hd95", "minimize"), Objective("macs", "minimize"))
    paths = save_static_figures(records, tmp_path, formats=("svg",), objectives=objectives)
    assert [p.name for p in paths][-1] == "pareto_objectives.svg"
    assert "HD95 (validation, px; lower is better)" in (tmp_path / "pareto_objectives.svg").read_text()
    assert len(save_static_figures(records, tmp_path / "d", formats=("svg",), objectives=DICE_MACS)) == 3
