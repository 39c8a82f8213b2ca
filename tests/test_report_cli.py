"""``nas-report`` on a hand-built study with one real checkpoint; importance and overlays adapters."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from nas import save_checkpoint
from nas.engine.optuna_adapter.importance import param_importances
from nas.engine.optuna_adapter.study import open_study
from nas.deploy.overlays import FN, FP, TP, grid_png, overlay_row, prediction_overlays, validation_data
from nas.cli.report import main as report_main
from nas.run.settings import RunSettings
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

NAS_REPORT = Path(sys.executable).parent / "nas-report"
SPEC = ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 16))
CONFIG = {"space": "resunet", "data": "synthetic", "epochs": 1, "image_size": 32, "batch_size": 4, "seed": 0}
SETTINGS = RunSettings.from_dict(CONFIG)


def synthetic_validation():
    return validation_data("synthetic", image_size=32, seed=0)
DISTRIBUTIONS = {"depth": optuna.distributions.IntDistribution(3, 5),
                 "base_width": optuna.distributions.IntDistribution(8, 32, step=4)}


def metrics(number: int, dice: float, macs: int) -> dict:
    return {"dice": dice, "macs": macs, "flops": 2 * macs, "params": macs // 500, "latency_ms": 1.0 + number,
            "latency_device": "cpu (2 threads)", "seconds": 3.0 + number, "best_epoch": 1,
            "epoch_dice": [dice / 2, dice], "train_device": "cpu", "trial": number,
            "input_shape": [1, 1, 32, 32]}


def make_run(run: Path, n_trials: int = 6) -> Path:
    """A study like nas-search's: search_config attr, metrics/spec/checkpoint user attrs; trial 0 has weights."""
    run.mkdir(parents=True, exist_ok=True)
    study = open_study(f"sqlite:///{run / 'study.db'}", "resunet", 0, CONFIG)
    rng = np.random.default_rng(0)
    for number in range(n_trials):
        params = {"depth": int(rng.integers(3, 6)), "base_width": int(rng.integers(2, 9)) * 4}
        macs = int(params["base_width"] ** 2 * 10 ** params["depth"])
        dice = float(0.3 + 0.05 * params["depth"] + rng.uniform(0, 0.05))
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=DISTRIBUTIONS, values=[dice, float(macs)],
            user_attrs={"metrics": metrics(number, dice, macs), "spec": SPEC.to_dict(),
                        "checkpoint": f"trials/trial_{number:04d}"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"depth": 4},
                                              distributions={"depth": DISTRIBUTIONS["depth"]},
                                              user_attrs={"fail_reason": "RuntimeError: boom"}))
    return run


def tiny_checkpoint(folder: Path, number: int, normalization=None) -> Path:
    torch.manual_seed(number)
    model = get_space("resunet").build_model(SPEC, 1, 1).eval()
    normalization = normalization or synthetic_validation().normalization
    return save_checkpoint(folder, model, SPEC, space="resunet", in_channels=1, out_channels=1,
                           normalization=normalization, metrics={"trial": number, "dice": 0.5})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NAS_REPORT), *args], capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- bad input


def test_missing_run_is_one_line_exit_2(tmp_path):
    result = run_cli("--run", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("nas-report: error: --run")
    assert "no such run directory" in result.stderr
    assert not (tmp_path / "nope").exists()


def test_run_without_study(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main(["--run", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"nas-report: error: --run {tmp_path}: no study.db or study.journal in it (pass --storage for another storage)"
    assert list(tmp_path.iterdir()) == []
    # a storage that exists but holds no study
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(SystemExit) as exit_info:
        report_main(["--run", str(tmp_path), "--storage", f"sqlite:///{tmp_path / 'other.db'}"])
    assert exit_info.value.code == 2
    assert "no study in it (found: none)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
    with pytest.raises(SystemExit):
        report_main(["--run", str(tmp_path), "--storage", "not-a-url"])
    assert "--storage must be a URL" in capsys.readouterr().err


def test_unknown_study_name(tmp_path, capsys):
    make_run(tmp_path, n_trials=1)
    with pytest.raises(SystemExit) as exit_info:
        report_main(["--run", str(tmp_path), "--study-name", "other"])
    assert exit_info.value.code == 2
    assert "no such study" in capsys.readouterr().err and not (tmp_path / "report.html").exists()


# ----------------------------------------------------------------------------- rebuild


def test_rebuilds_report_with_importance_and_overlays(tmp_path):
    run = make_run(tmp_path / "run")
    tiny_checkpoint(run / "best" / "trial_0000", 0)
    before = sorted(p.name for p in (run / "best").iterdir())
    result = run_cli("--run", str(run), "--overlay-images", "2")
    assert result.returncode == 0, result.stderr
    assert "7 trial(s), 6 finished" in result.stdout
    names = {p.name for p in run.iterdir()}
    assert {"report.html", "trials.csv", "study.db", "best"} <= names
    for stem in ("pareto_macs", "pareto_latency", "pareto_params"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert sorted(p.name for p in (run / "best").iterdir()) == before  # rebuild never touches models
    page = (run / "report.html").read_text("utf-8")
    assert "nas-search: resunet on synthetic" in page
    assert "<th>epochs</th><td>1</td>" in page
    section = page[page.index("<h2>Parameter importance"):page.index("<h2>Size-stratified")]
    assert "on 6 finished trials" in section and "<th>depth</th>" in section and "<th>base_width</th>" in section
    card = page[page.index('id="card-0"'):page.index("<h2>Trials")]
    assert "data:image/png;base64," in card and "<th>optuna</th>" in card
    assert "nas-search --space resunet --data synthetic --epochs 1 --image-size 32 --batch-size 4 --seed 0" in card
    assert "RuntimeError: boom" in page


def test_importance_needs_two_varied_trials():
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert "not enough trials (0 finished" in param_importances(study)["note"]
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(params={"depth": 3}, distributions={"depth": DISTRIBUTIONS["depth"]},
                                                  values=[0.5, 1e6]))
    result = param_importances(study)
    assert result["targets"] == {} and "share the same parameters" in result["note"]
    study.add_trial(optuna.trial.create_trial(params={"depth": 5}, distributions={"depth": DISTRIBUTIONS["depth"]},
                                              values=[0.9, 1e8]))
    result = param_importances(study)
    assert result["note"] is None and set(result["targets"]) == {"Dice", "log10 MACs"}
    assert result["targets"]["Dice"] == pytest.approx({"depth": 1.0})


# ----------------------------------------------------------------------------- overlays


def test_overlay_row_colours_errors():
    image = torch.full((1, 4, 4), 0.5)  # (C, H, W)
    truth = torch.zeros(1, 4, 4, dtype=torch.bool)
    truth[0, :2, :2] = True
    prediction = torch.zeros(1, 4, 4, dtype=torch.bool)
    prediction[0, :2, 0] = True  # TP at column 0, FN at column 1
    prediction[0, 3, 3] = True  # FP
    tiles = overlay_row(image, truth, prediction)
    assert len(tiles) == 4 and all(t.size == (192, 192) for t in tiles)
    errors = np.asarray(tiles[3])
    cell = 192 // 4
    assert tuple(errors[0, 0]) == TP and tuple(errors[0, cell]) == FN and tuple(errors[3 * cell, 3 * cell]) == FP
    assert tuple(errors[3 * cell, 0]) == (44, 44, 44)  # background: the image, dimmed
    assert tuple(np.asarray(tiles[1])[0, cell]) == (255, 255, 255) and tuple(np.asarray(tiles[2])[0, cell]) == (0, 0, 0)
    png = grid_png([tiles, tiles])
    assert Image.open(io.BytesIO(png)).size == (4 * 192 + 3 * 4, 2 * 192 + 4)


def test_prediction_overlays_from_real_checkpoints(tmp_path):
    tiny_checkpoint(tmp_path / "best" / "trial_0003", 3)
    (tmp_path / "best" / "trial_0007").mkdir()  # a broken folder is reported, not fatal
    result = prediction_overlays(tmp_path, synthetic_validation, image_size=32, n_images=3)
    assert set(result) == {3, 7}
    assert "error" in result[7] and "trial_0007" in result[7]["error"]
    picture = Image.open(io.BytesIO(result[3]["png"]))
    assert picture.size == (4 * 192 + 3 * 4, 3 * 192 + 2 * 4)
    assert result[3]["images"] == ["synthetic_0000", "synthetic_0016", "synthetic_0031"]
    assert all(0.0 <= d <= 1.0 for d in result[3]["dice"])
    assert result[3]["inference"].startswith(("sliding window (32 px", "whole image"))
    assert re.fullmatch(r"synthetic_\d{4}", result[3]["images"][1])
    assert prediction_overlays(tmp_path / "empty", synthetic_validation) == {}


def test_write_run_outputs_as_nas_search_calls_it(tmp_path):
    """No study object: importance comes from config's storage; best/ is exported, then drawn."""
    from nas.engine.optuna_adapter.study import study_records
    from nas.run.outputs import write_run_outputs

    run = make_run(tmp_path / "run")
    normalization = synthetic_validation().normalization
    for number in range(6):
        tiny_checkpoint(run / "trials" / f"trial_{number:04d}", number, normalization)
    storage = f"sqlite:///{run / 'study.db'}"
    records = study_records(optuna.load_study(study_name="resunet", storage=storage))
    settings = SETTINGS.updated(trials=6, study="resunet", storage=storage, device="cpu", torch_threads=2)
    front = write_run_outputs(records, run, title="t", settings=settings, overlay_images=1)
    exported = sorted(p.name for p in (run / "best").iterdir())
    assert exported == sorted(f"trial_{r.number:04d}" for r in front.front) and exported
    page = (run / "report.html").read_text("utf-8")
    assert page.count('<div class="card"') == len(exported)
    assert page.count('class="overlay"') == len(exported)
    assert "on 6 finished trials" in page  # importance reached through config["storage"]
    assert "<th>torch threads</th><td>2</td>" in page and "<th>device (training)</th><td>cpu</td>" in page


# ----------------------------------------------------------------------------- open_run (what nas-report and nas-compress read)


def test_open_run_returns_records_settings_and_where_they_came_from(tmp_path):
    from nas.run.open import open_run

    run = make_run(tmp_path / "run", n_trials=2)
    opened = open_run(run)
    assert opened.study_name == "resunet" and opened.storage == f"sqlite:///{(run / 'study.db').resolve()}"
    assert opened.settings.to_dict() == CONFIG and [r.number for r in opened.records] == [0, 1, 2]
    assert opened.settings == SETTINGS and opened.settings.image_size == 32
    assert opened.title == "nas-search: resunet on synthetic"
    assert open_run(run, storage=opened.storage, study_name="resunet").records == opened.records


def test_open_run_says_in_one_line_why_a_run_cannot_be_opened(tmp_path):
    from nas.run.open import RunError, open_run

    run = make_run(tmp_path / "run", n_trials=1)
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'two.db'}", study_name="a")
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'two.db'}", study_name="b")
    (tmp_path / "bad.db").write_bytes(b"not a database" * 50)
    cases = [
        (lambda: open_run(tmp_path / "nope"), "no such run directory"),
        (lambda: open_run(tmp_path), "no study.db or study.journal in it"),
        (lambda: open_run(run, storage=f"sqlite:///{tmp_path / 'two.db'}"), "several studies in it (found: a, b)"),
        (lambda: open_run(run, study_name="other"), "--study-name 'other': no such study"),
        (lambda: open_run(run, storage=f"sqlite:///{tmp_path / 'bad.db'}"), "cannot be read (DatabaseError"),
        (lambda: open_run(run, storage="foo://x"), "unknown storage scheme 'foo'"),
    ]
    for opening, message in cases:
        with pytest.raises(RunError, match=re.escape(message)) as error:
            opening()
        assert "\n" not in str(error.value)
    assert open_run(run, storage=f"sqlite:///{tmp_path / 'two.db'}", study_name="b").records == []
