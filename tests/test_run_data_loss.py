"""Runs that lost data or mixed it (issue 16): a deleted trial folder, a deleted study.db, changed data;
and tracebacks of failed trials that belong in the run's log, not on the terminal.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import call, make_study
from PIL import Image

from nas import save_checkpoint
from nas.cli.search import main as search_main
from nas.data.normalization import Normalization
from nas.results.outcome import TrialState
from nas.results.pareto import DICE_MACS, pareto_front
from nas.results.records import TrialRecord
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

SPEC = ResUNetSpec(encoder_widths=(4, 8, 8), decoder_widths=(4, 8))


def _checkpoint(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(folder, get_space("resunet").build_model(SPEC, 1, 1), SPEC, space="resunet",
                           in_channels=1, out_channels=1, normalization=Normalization((0.5,), (0.25,)),
                           metrics={"trial": seed})


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_deleted_trial_folder_never_costs_the_last_copy_in_best(tmp_path, capsys):
    from nas.run.outputs import export_best

    run = tmp_path
    records = [TrialRecord.from_metrics(n, TrialState.COMPLETE, {"dice": 0.5 + 0.1 * n, "macs": 1000 * (n + 1)},
                                        checkpoint=f"trials/trial_{n:04d}") for n in range(2)]
    for n in range(2):
        _checkpoint(run / "trials" / f"trial_{n:04d}", n)
    export_best(pareto_front(records, DICE_MACS), run, deploy=False)
    assert sorted(p.name for p in (run / "best").iterdir()) == ["trial_0000", "trial_0001"]
    kept = _files(run / "best" / "trial_0001")
    shutil.rmtree(run / "trials" / "trial_0001")  # the user deletes one trial folder
    better = records + [TrialRecord.from_metrics(2, TrialState.COMPLETE, {"dice": 0.9, "macs": 500},
                                                 checkpoint="trials/trial_0002")]
    _checkpoint(run / "trials" / "trial_0002", 2)  # a new trial pushes trial 1 off the front
    export_best(pareto_front(better, DICE_MACS), run, deploy=False)
    assert "trials/trial_0001 was missing: restored from best/trial_0001" in capsys.readouterr().out
    assert _files(run / "trials" / "trial_0001") == kept  # the last copy lives on
    assert not (run / "best" / "trial_0001").exists() and (run / "best" / "trial_0002").is_dir()


def test_the_console_never_prints_a_path_that_does_not_exist(tmp_path):
    from nas.run.search import _deployed

    record = TrialRecord.from_metrics(3, TrialState.COMPLETE, {"dice": 0.5, "macs": 1}, checkpoint="trials/trial_0003")
    assert _deployed(tmp_path, record) == "no checkpoint (trials/trial_0003 is missing)"
    (tmp_path / "best" / "trial_0003").mkdir(parents=True)
    assert _deployed(tmp_path, record) == str(tmp_path / "best" / "trial_0003")


def test_a_deleted_study_db_never_lets_a_new_study_overwrite_the_checkpoints(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    run = make_study(tmp_path / "run", SPEC.to_dict())
    _checkpoint(run / "trials" / "trial_0000", 0)
    shutil.copytree(run / "trials" / "trial_0000", run / "best" / "trial_0000")
    (run / "study.db").unlink()
    before = _files(run)
    code, out, err = call(capsys, search_main, "--out", run, "--trials", "1", "--epochs", "1", "--image-size", "32",
                          "--device", "cpu")
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("nas-search: error: --out ") and "holds 2 checkpoint(s) of trials that study 'resunet'" in line
    assert "(trials/trial_0000, best/trial_0000)" in line and "move trials/ and best/ aside" in line
    after = {k: v for k, v in _files(run).items() if k != ".nas-search.lock"}  # the (released) lock file
    assert after == before  # nothing overwritten, no new study.db left behind


def _folder(root: Path, invert: bool = False) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((16, 16)) * 255).astype(np.uint8)).save(
            root / "images" / f"im{i}.png")
        mask = np.pad(np.full((4, 4), 255, np.uint8), 6)
        Image.fromarray(255 - mask if invert else mask).save(root / "masks" / f"im{i}.png")
    return root


def test_a_resume_on_data_whose_content_changed_is_refused(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    # --max-params 1: every architecture is infeasible, so the study is made without any training
    args = ["--data", data, "--out", tmp_path / "run", "--trials", "1", "--epochs", "1", "--image-size", "16",
            "--device", "cpu", "--max-params", "1", "--max-pruned-in-a-row", "1", "--fix", "depth=3"]
    code, _, err = call(capsys, search_main, *args)
    assert code == 1, err  # stopped: infeasible (the study exists now, with the data's fingerprint)
    assert call(capsys, search_main, *args)[0] == 1  # the same data resumes
    _folder(data, invert=True)  # masks inverted: same names, same sizes, other content
    code, _, err = call(capsys, search_main, *args)
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert "the data of study 'resunet' changed since it was made" in line and "new --out" in line


def test_a_failed_trial_is_one_line_on_the_console_and_a_traceback_in_the_log(tmp_path, capsys):
    import optuna

    from nas.engine.optuna_adapter.study import run_study
    from nas.engine.run_log import run_log

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])

    def broken(trial):
        trial.suggest_int("depth", 3, 6)
        raise RuntimeError("the layer sizes do not add up")

    with run_log(tmp_path) as log:
        run_study(study, 1, broken, max_failures=1)
    captured = capsys.readouterr()
    terminal = captured.out + captured.err
    assert "    -> failed: RuntimeError: the layer sizes do not add up (traceback in logs/search.log)" in terminal
    assert "Traceback" not in terminal
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "the layer sizes do not add up" in text
    assert optuna.logging.get_logger("optuna").handlers  # the terminal handler is back afterwards


def test_a_ray_worker_appends_its_failed_trial_traceback_to_the_run_log(tmp_path):
    from nas.engine.run_log import LOG_FILE, append_traceback

    try:
        raise ValueError("bad width")
    except ValueError as error:
        append_traceback(tmp_path, "ray trial abc", error)
    text = (tmp_path / LOG_FILE).read_text()
    assert "ray trial abc failed" in text and "Traceback (most recent call last)" in text and "bad width" in text
