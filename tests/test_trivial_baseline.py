"""The trivial predictors (one label everywhere): hand-computed Dice, the same numbers as the models'
Dice code, ``trivial.json`` from a tiny search, the header line, the report's line and finalist row,
and an old run without the file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_FIX, call
from torch import nn

import nas
from nas.data.loading import load_data
from nas.train.trivial import constant_dice, trivial_baselines
from reports.finalists import finalists_section
from reports.trivial import split_block, trivial_level, trivial_line

FIX = TINY_FIX  # one tiny architecture: the corner conftest's tiny_run is trained in
LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_run_v0"
BINARY = ("background", "foreground")


def mask(pixels: list[list[int]]) -> torch.Tensor:
    return torch.tensor(pixels, dtype=torch.float32)[None]  # (1, H, W)


def filled(count: int, value: int = 1, side: int = 4) -> torch.Tensor:
    """A side x side mask whose first ``count`` pixels (row-major) hold ``value``."""
    flat = torch.zeros(side * side)
    flat[:count] = value
    return flat.reshape(1, side, side)


def test_binary_mostly_foreground_and_an_empty_image_by_hand():
    # 12 and 8 of 16 pixels foreground, and one image with nothing to find
    masks = [filled(12), filled(8), filled(0)]
    out = constant_dice(masks, [], BINARY)
    # all-foreground: 2*12/(16+12) and 2*8/(16+8); the empty image (Dice 0 here) is left out of the mean
    assert out["constants"]["all-foreground"] == pytest.approx((24 / 28 + 16 / 24) / 2)
    # all-background scores 0 on every scored image; its "1.0" on the empty image is left out too
    assert out["constants"]["all-background"] == 0.0
    assert (out["best"], out["dice"]) == ("all-foreground", out["constants"]["all-foreground"])
    assert (out["images"], out["scored_images"], out["num_classes"]) == (3, 2, 2) and "per_class" not in out


def test_the_fov_limits_what_is_scored():
    truth = filled(12)
    fov = filled(8)  # only the first 8 pixels count: all foreground inside
    assert constant_dice([truth], [fov], BINARY)["dice"] == pytest.approx(1.0)
    fov = mask([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])  # 4 foreground, 4 background inside
    assert constant_dice([truth], [fov], BINARY)["dice"] == pytest.approx(2 * 4 / (8 + 4))


def test_three_class_label_map_by_hand():
    # image 1: 4 px of class 1, 8 px of class 2, 4 px background; image 2: no class 1, 4 px of class 2
    one = mask([[1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2], [0, 0, 0, 0]])
    two = mask([[2, 2, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    out = constant_dice([one, two], [], ("background", "a", "b"))
    class_a = 2 * 4 / (4 + 16)  # image 1 only (image 2 has no class a)
    class_b = (2 * 8 / (8 + 16) + 2 * 4 / (4 + 16)) / 2
    assert out["per_class"] == pytest.approx({"a": class_a, "b": class_b})
    # the mean class Dice of predicting one class everywhere: the other class scores 0
    assert out["constants"] == pytest.approx({"all-background": 0.0, "all-a": class_a / 2, "all-b": class_b / 2})
    assert out["best"] == "all-b" and out["dice"] == pytest.approx(class_b / 2)
    assert trivial_line({"split": "val", **out}) == ("trivial predictors on validation: all-b mean class Dice 0.27, "
                                                     "all-a 0.20, all-background 0.00")
    assert trivial_level(out, "dice:a") == ("all-a (trivial)", pytest.approx(class_a))
    assert trivial_level(out, "miou") is None and trivial_level(None, "dice") is None


class Constant(nn.Module):
    """A 'model' whose logits ignore the image: the highest one for ``label`` everywhere."""

    def __init__(self, classes: int, label: int) -> None:
        super().__init__()
        self.classes, self.label = classes, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classes == 2:
            return torch.full((x.shape[0], 1, *x.shape[2:]), 3.0 if self.label else -3.0)
        logits = torch.zeros(x.shape[0], self.classes, *x.shape[2:])
        logits[:, self.label] = 5.0
        return logits


@pytest.mark.parametrize("source", ["synthetic", "synthetic:classes"])
def test_the_same_numbers_as_the_models_dice(source):
    """A model that predicts one label everywhere gets, from the trainer's validation Dice, exactly the
    number the trivial block claims for that constant."""
    from nas.train.trainer import validation_dice
    from nas.train.trivial import constant_name

    data = load_data(source, image_size=32, seed=0)
    block = trivial_baselines(data)["splits"]["val"]
    for label in range(data.num_classes):
        model = Constant(data.num_classes, label)
        measured = validation_dice(model, data, torch.device("cpu"))
        assert block["constants"][constant_name(data.class_names, label)] == pytest.approx(measured, abs=1e-12)
    assert set(trivial_baselines(data)["splits"]) == {"val", "test"}


def tiny(out: Path) -> nas.SearchConfig:
    """2 trials x 1 epoch of one tiny architecture at 32 px, no family: conftest's ``tiny_run``."""
    return nas.SearchConfig(trials=2, epochs=1, image_size=32, seed=0, device="cpu", early_stop="none", fix=FIX,
                            baselines=(), warm_start="none", out=out)


@pytest.fixture
def tiny_search(tiny_run) -> Path:
    """The session's tiny run (conftest.py), made with ``tiny()``'s settings: read it, or copy it first."""
    return tiny_run


def test_a_search_writes_trivial_json_and_says_it(tiny_search, tmp_path, capfd):
    stored = json.loads((tiny_search / "trivial.json").read_text())
    data = load_data("synthetic", image_size=32, seed=0)
    assert stored == json.loads(json.dumps(trivial_baselines(data)))  # the run's own splits, both of them
    assert set(stored["splits"]) == {"val", "test"} and stored["splits"]["val"]["images"] == len(data.val_masks)
    # a resume prints the same header line and leaves the file as it is (same data, same numbers)
    run = tmp_path / "run"
    shutil.copytree(tiny_search, run)  # the resume rewrites the report: on a copy of the shared run
    before = (run / "trivial.json").stat().st_mtime_ns
    capfd.readouterr()
    nas.run_search(tiny(run))
    printed = capfd.readouterr().out
    value = stored["splits"]["val"]["constants"]["all-foreground"]
    assert f"trivial predictors on validation: all-foreground Dice {value:.2f}, all-background 0.00" in printed
    assert (run / "trivial.json").stat().st_mtime_ns == before


def test_the_report_draws_the_line_and_states_it(tiny_search):
    html = (tiny_search / "report.html").read_text(encoding="utf-8")
    value = json.loads((tiny_search / "trivial.json").read_text())["splits"]["val"]["dice"]
    assert f"all-foreground (trivial) {value:.3f}" in html  # the dashed line's legend on the Dice plots
    assert f"<b>Trivial predictors on validation:</b> all-foreground Dice {value:.3f}, all-background 0.000" in html
    payload = json.loads(html.split('id="report-data">', 1)[1].split("</script>", 1)[0])
    line = [t for t in payload["plots"]["plot-macs"]["traces"] if "(trivial)" in t["name"]]
    assert len(line) == 1 and line[0]["line"]["dash"] == "dash" and line[0]["y"] == [value, value]
    assert "all-foreground (trivial)" in (tiny_search / "pareto_macs.svg").read_text()  # the static figure too


def test_an_old_run_without_the_file_still_reports(tmp_path, capsys):
    from nas.cli.report import main

    run = tmp_path / "legacy"
    shutil.copytree(LEGACY, run)
    code, _, err = call(capsys, main, "--run", run, "--no-overlays")
    assert code == 0, err
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "(trivial)" not in html and "Trivial predictors" not in html  # nothing shown, nothing computed
    assert not (run / "trivial.json").exists()


def test_the_finalist_table_shows_the_trivial_dice_of_its_split():
    trivial = {"splits": {"val": {"split": "val", "best": "all-foreground", "dice": 0.87},
                          "test": {"split": "test", "best": "all-foreground", "dice": 0.8612}}}
    summary = {"settings": {"split": "test"}, "entrants": [
        {"label": "trial 3", "kind": "finalist", "dice": 0.9, "std": 0.01, "search_dice": 0.88}]}
    html = finalists_section(summary, trivial)  # an older finalists.json: the run's trivial.json fills in
    assert '<tr class="trivial"><td>all-foreground (trivial)</td><td>trivial</td><td>—</td><td>0.861</td>' in html
    summary["trivial"] = {"split": "test", "best": "all-foreground", "dice": 0.5}  # the stage's own block wins
    assert "<td>0.500</td>" in finalists_section(summary, trivial)
    assert "(trivial)" not in finalists_section(summary | {"trivial": None}, None)
    assert split_block(trivial, "test")["dice"] == 0.8612 and split_block({"splits": {}}, "val") is None


@pytest.mark.slow
def test_nas_finalize_keeps_the_test_floor_beside_the_finalists(tiny_search, tmp_path, capsys):
    from nas.cli.finalize import main

    run = tmp_path / "run"
    shutil.copytree(tiny_search, run)
    right = json.loads((run / "trivial.json").read_text())
    stale = json.loads(json.dumps(right))
    stale["splits"]["test"]["dice"] = 0.123  # a file that does not match the data is computed again
    (run / "trivial.json").write_text(json.dumps(stale))
    code, out, err = call(capsys, main, "--run", run, "--finalists", "1", "--final-epochs", "1", "--final-seeds", "1",
                          "--device", "cpu", "--no-overlays")
    assert code == 0, err
    summary = json.loads((run / "finalists" / "finalists.json").read_text())
    test = json.loads((run / "trivial.json").read_text())["splits"]["test"]
    assert summary["trivial"] == test == right["splits"]["test"]
    assert f"trivial predictors on test: all-foreground Dice {test['dice']:.3f}" in out
    assert f"<td>all-foreground (trivial)</td><td>trivial</td><td>—</td><td>{test['dice']:.3f}</td>" in \
        (run / "report.html").read_text(encoding="utf-8")
