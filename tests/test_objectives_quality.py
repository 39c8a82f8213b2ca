"""Any stored quality measure as the first objective (issue 17): parsing, values, data checks, fronts, a real search."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import call

from nas.data.dataset import SegmentationData
from nas.data.normalization import Normalization
from nas.engine.job import report_objectives
from nas.engine.objectives import Objectives
from nas.results.pareto import Objective, pareto_front
from nas.results.records import TrialRecord

STRATA = {"small": {"count": 3, "detected": 0.5, "dice": 0.4}, "medium": {"count": 0, "detected": None, "dice": None},
          "large": {"count": 0, "detected": None, "dice": None}}
METRICS = {"dice": 0.7, "macs": 1000, "latency_ms": 2.0, "miou": 0.55,
           "quality": {"val": {"dice": 0.7, "iou": 0.5, "hd95": 3.5, "size_strata": STRATA}},
           "per_class": {"vessel": {"dice": 0.61, "iou": 0.44}, "Lesion": {"dice": 0.3, "iou": 0.2}}}


@pytest.mark.parametrize("text, names, directions", [
    ("dice_small,macs", ("dice_small", "macs"), ["maximize", "minimize"]),
    ("miou,macs", ("miou", "macs"), ["maximize", "minimize"]),
    ("dice:Lesion, macs", ("dice:Lesion", "macs"), ["maximize", "minimize"]),
    ("hd95,macs,latency", ("hd95", "macs", "latency"), ["minimize", "minimize", "minimize"]),
    ("DICE,MACS", ("dice", "macs"), ["maximize", "minimize"]),
])
def test_quality_objectives_parse_with_directions(text, names, directions):
    objectives = Objectives.parse(text)
    assert objectives.names == names and objectives.directions == directions and objectives.quality == names[0]


@pytest.mark.parametrize("text, message", [
    ("iou,macs", "unknown objective 'iou'"),
    ("macs,miou", "one quality measure"),
    ("miou,dice,macs", "one quality measure"),
    ("dice:,macs", "unknown objective 'dice:'"),
    ("hd95", "one quality measure"),
])
def test_bad_quality_objectives_are_one_line(text, message):
    with pytest.raises(ValueError, match=message) as error:
        Objectives.parse(text)
    assert "\n" not in str(error.value)


def test_values_come_from_the_stored_metrics():
    assert Objectives.parse("miou,macs").values(METRICS) == (0.55, 1000.0)
    assert Objectives.parse("dice_small,macs").values(METRICS) == (0.4, 1000.0)
    assert Objectives.parse("hd95,latency").values(METRICS) == (3.5, 2.0)
    assert Objectives.parse("dice:Lesion,macs").values(METRICS) == (0.3, 1000.0)
    older = {key: value for key, value in METRICS.items() if key != "miou"}
    assert Objectives.parse("miou,macs").values(older) == (0.5, 1000.0)  # a binary run before miou: its IoU
    with pytest.raises(KeyError, match="dice:nerve"):
        Objectives.parse("dice:nerve,macs").values(METRICS)


def _data(masks: list[torch.Tensor], names=("background", "foreground")) -> SegmentationData:
    images = [torch.zeros_like(m) for m in masks]
    return SegmentationData(name="t", source="t", train_images=images, train_masks=masks, val_images=images,
                            val_masks=masks, val_names=[str(i) for i in range(len(masks))], in_channels=1,
                            normalization=Normalization((0.0,), (1.0,)), num_classes=len(names), class_names=names)


def test_the_data_must_be_able_to_score_the_quality_objective():
    large = torch.zeros(1, 32, 32)
    large[0, 4:24, 4:24] = 1
    binary = _data([large])
    with pytest.raises(ValueError, match="no object under 8 px") as error:
        Objectives.parse("dice_small,macs").check_data(binary)
    assert "\n" not in str(error.value)
    small = large.clone()
    small[0, 28:30, 28:30] = 1
    Objectives.parse("dice_small,macs").check_data(_data([small]))
    labels = large.clone()
    labels[0, 28:30, 28:30] = 2
    three = _data([labels], ("background", "organ", "lesion"))
    Objectives.parse("dice:lesion,macs").check_data(three)
    Objectives.parse("dice_small,macs").check_data(three)  # the lesion is small
    with pytest.raises(ValueError, match="no class 'vessel'; its classes are organ, lesion"):
        Objectives.parse("dice:vessel,macs").check_data(three)
    with pytest.raises(ValueError, match="no validation mask has class 'lesion'"):
        Objectives.parse("dice:lesion,macs").check_data(_data([large], ("background", "organ", "lesion")))


def _record(number: int, macs: int, hd95: float, vessel: float, state: str = "COMPLETE") -> TrialRecord:
    metrics = {**METRICS, "macs": macs, "quality": {"val": {"dice": 0.7, "iou": 0.5, "hd95": hd95}},
               "per_class": {"vessel": {"dice": vessel}}}
    return TrialRecord.from_metrics(number, state, metrics)


def test_fronts_follow_the_quality_objective():
    records = [_record(0, 100, 5.0, 0.2), _record(1, 200, 2.0, 0.9), _record(2, 300, 3.0, 0.5),
               _record(3, 50, 1.0, 0.99, state="FAIL")]
    hd95 = pareto_front(records, report_objectives(Objectives.parse("hd95,macs")))
    assert [r.number for r in hd95.front] == [0, 1] and [r.number for r in hd95.dominated] == [2]
    assert [r.number for r in hd95.unfinished] == [3]  # a failed trial's quality never competes
    vessel = pareto_front(records, report_objectives(Objectives.parse("dice:vessel,macs")))
    assert [r.number for r in vessel.front] == [0, 1]
    assert records[1].measure("dice:vessel") == 0.9 and records[1].hd95 == 2.0 and records[1].miou == 0.55
    assert records[3].measure("hd95") is None
    with pytest.raises(ValueError, match="not a TrialRecord measure"):
        Objective("dice:", "maximize")


def test_record_json_keeps_the_class_metrics():
    flat = {**METRICS, "num_classes": 3, "class_names": ["background", "vessel", "Lesion"],
            "confusion": [[5, 1, 0], [1, 3, 0], [0, 0, 2]]}
    record = TrialRecord.from_metrics(4, "COMPLETE", flat)
    again = TrialRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again.result.to_dict() == flat and again.result.quality.confusion[0] == (5, 1, 0)
    assert again.result.quality.class_names == ("background", "vessel", "Lesion")


@pytest.mark.slow
def test_a_k_class_search_with_a_class_objective_resumes(tmp_path, capsys):
    """nas-search on synthetic:classes, ranked by one class's Dice, extended by a rerun, then finalised."""
    from nas.cli.search import main

    fix = {"depth": 3, "base_width": 8, "blocks_per_stage": 1, "block": "plain", "width_mode": "growth",
           "width_growth": 1.5, "aspp": False, "attention": "none", "multiscale_input": False, "deep_supervision": False}
    flags = [arg for name, value in fix.items() for arg in ("--fix", f"{name}={value}")]
    base = ["--data", "synthetic:classes", "--epochs", "1", "--image-size", "32", "--seed", "1", "--device", "cpu",
            "--objectives", "dice:blob,macs", "--out", tmp_path / "run", *flags]
    code, out, err = call(capsys, main, *base, "--trials", "1")
    assert code == 0, err
    code, out, err = call(capsys, main, *base, "--trials", "2")
    assert code == 0, err
    run = tmp_path / "run"
    import csv

    with open(run / "trials.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["state"] == "COMPLETE"]
    assert len(rows) == 2
    best = sorted((run / "best").iterdir())
    assert best
    metrics = json.loads((best[0] / "metrics.json").read_text())
    assert metrics["num_classes"] == 4 and set(metrics["per_class"]) == {"curve", "blob", "region"}
    assert metrics["threshold"] is None and np.array(metrics["confusion"]).shape == (4, 4)
    assert json.loads((best[0] / "spec.json").read_text())["spec"]["num_classes"] == 4
    from nas.cli.finalize import main as finalize

    code, out, err = call(capsys, finalize, "--run", run, "--finalists", "1", "--final-epochs", "1",
                          "--final-seeds", "1", "--device", "cpu", "--no-overlays")
    assert code == 0, err
    assert "by argmax" in out and (run / "finalists" / "finalists.json").is_file()
    code, _, err = call(capsys, main, *base, "--trials", "2", "--objectives", "dice:nerve,macs")
    assert code == 2 and err.strip().splitlines()[-1] == (
        "nas-search: error: --objectives dice:nerve: the data has no class 'nerve'; its classes are curve, blob, region")
