"""``nas-finalize`` on a tiny run: K finalists x S seeds and a baseline, killed (-9) after a finished
seed and resumed without training it again; ``best/`` then deploys the chosen seed with its threshold."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import call

from nas.data.normalization import Normalization
from nas.deploy.checkpoint import file_sha256, save_checkpoint
from nas.results.trial_result import TrialResult
from search_spaces import get_space
from search_spaces.resunet.spec import ResUNetSpec

NAS_FINALIZE = Path(sys.executable).parent / "nas-finalize"
WIDTHS = (4, 6, 8)  # three tiny plain nets: the Pareto front of the fake study, cheapest first
FLAGS = ["--finalists", "2", "--final-seeds", "2", "--final-epochs", "1", "--device", "cpu", "--no-overlays"]


def spec(width: int) -> ResUNetSpec:
    return ResUNetSpec(encoder_widths=(width, width), decoder_widths=(width,), block="plain")


def make_run(run: Path, dice=lambda number: 0.5 + 0.1 * number) -> Path:
    """A study as nas-search leaves it: three finished trials on the front, their checkpoints, a baseline."""
    import optuna

    from nas.engine.optuna_adapter.study import CONFIG_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{run / 'study.db'}", study_name="resunet",
                                directions=["maximize", "minimize"])
    study.set_user_attr(CONFIG_ATTR, {"space": "resunet", "data": "synthetic", "epochs": 1, "image_size": 32,
                                      "batch_size": 8, "seed": 0})
    norm = Normalization((0.5,), (0.25,))
    for number, width in enumerate(WIDTHS):
        metrics = {"dice": dice(number), "macs": 1000 * (number + 1), "params": 100 * (number + 1),
                   "latency_ms": 1.0, "seconds": 1.0, "best_epoch": 1, "trial": number, "input_shape": [1, 1, 32, 32]}
        checkpoint = f"trials/trial_{number:04d}"
        model = get_space("resunet").build_model(spec(width), 1, 1)
        save_checkpoint(run / checkpoint, model, spec(width), space="resunet", in_channels=1, out_channels=1,
                        normalization=norm, metrics=metrics)
        study.add_trial(optuna.trial.create_trial(
            params={"base_width": width}, distributions={"base_width": optuna.distributions.IntDistribution(4, 8)},
            values=[metrics["dice"], float(metrics["macs"])],
            user_attrs={"metrics": metrics, "spec": spec(width).to_dict(), "checkpoint": checkpoint}))
    # a baseline as --baselines leaves it (a tiny spec under a preset's name keeps the test fast)
    save_checkpoint(run / "baselines" / "unet-16", get_space("resunet").build_model(spec(6), 1, 1), spec(6),
                    space="resunet", in_channels=1, out_channels=1, normalization=norm,
                    metrics={"dice": 0.55, "macs": 5000, "params": 500, "kind": "preset", "preset": "unet-16"})
    return run


def seed_folders(run: Path) -> list[Path]:
    return sorted(p.parent for p in (run / "finalists").glob("*/seed_*/metrics.json"))


@pytest.mark.slow
def test_finalize_resumes_after_kill_9_without_retraining_a_finished_seed(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    env = {**os.environ, "NAS_FAILPOINT": "finalist_seed:2"}  # SIGKILL right after the second finished seed
    killed = subprocess.run([str(NAS_FINALIZE), "--run", str(run), *FLAGS], env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr
    finished = seed_folders(run)
    assert [p.relative_to(run).as_posix() for p in finished] == ["finalists/trial_0000/seed_0",
                                                                 "finalists/trial_0000/seed_1"]
    before = {p: (file_sha256(p / "model.safetensors"), (p / "metrics.json").read_text()) for p in finished}

    code, out, err = call(capsys, __import__("nas.cli.finalize", fromlist=["main"]).main, "--run", run, *FLAGS)
    assert code == 0, err
    assert out.count("already trained") == 2 and out.count(": 1 epochs") == 4  # 6 seeds in all, 2 kept
    for folder, (weights, metrics) in before.items():
        assert (file_sha256(folder / "model.safetensors"), (folder / "metrics.json").read_text()) == (weights, metrics)
    assert len(seed_folders(run)) == 6 and not list(run.rglob(".*.tmp"))

    summary = json.loads((run / "finalists" / "finalists.json").read_text())
    keys = [e["key"] for e in summary["entrants"]]
    assert keys == ["trial_0000", "trial_0002", "baseline_unet-16"]  # both ends of the front, then the baseline
    assert summary["settings"]["split"] == "test" and summary["settings"]["final_epochs"] == 1
    for entry in summary["entrants"]:
        assert [s["seed"] for s in entry["seeds"]] == [0, 1] and len(entry["per_image"]) == 2
        assert entry["ci"][0] <= entry["dice"] <= entry["ci"][1] and entry["std"] >= 0
        assert all(0.05 <= s["threshold"] <= 0.95 for s in entry["seeds"])
    assert summary["tau"]["n"] == 3 and len(summary["verdicts"]) == 1
    assert summary["verdicts"][0]["baseline"] == "unet-16"

    final = next(e for e in summary["entrants"] if e["key"] == "trial_0002")
    chosen = run / final["chosen"]["folder"]
    best = run / "best" / "trial_0002"
    metrics = json.loads((best / "metrics.json").read_text())
    assert file_sha256(best / "model.safetensors") == file_sha256(chosen / "model.safetensors")
    assert metrics["finalized"]["seed"] == final["chosen"]["seed"]
    assert metrics["threshold"] == final["chosen"]["threshold"]
    card = (best / "README.md").read_text()
    assert "Finalised: retrained for 1 epochs with 2 seeds" in card and "test Dice (held-out images)" in card
    page = (run / "report.html").read_text()
    assert "Finalists (longer training" in page and "Kendall tau" in page and "unet-16" in page

    code, out, _ = call(capsys, __import__("nas.cli.finalize", fromlist=["main"]).main, "--run", run, *FLAGS)
    assert code == 0 and out.count("already trained") == 6  # a third run trains nothing


def test_finalize_refuses_bad_input_with_one_line(tmp_path, capsys):
    from nas.cli.finalize import main
    from nas.run.finalist_run import FinalOptions
    from nas.run.settings import RunSettings

    searched = RunSettings(epochs=4)
    assert FinalOptions(2).epochs(searched) == 12 and FinalOptions(2, final_epochs=5).epochs(searched) == 5

    code, _, err = call(capsys, main, "--run", tmp_path / "nowhere")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last == f"nas-finalize: error: --run {tmp_path / 'nowhere'}: no such run directory"
    code, _, err = call(capsys, main, "--run", tmp_path, "--final-seeds", "0")
    assert code == 2 and "--final-seeds" in err.strip().splitlines()[-1]
    code, _, err = call(capsys, main, "--run", tmp_path)
    assert code == 2 and "no study.db" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_nas_search_runs_the_finalist_stage_after_its_trials(tmp_path, capsys):
    import nas

    fix = {"depth": 3, "base_width": 8, "blocks_per_stage": 1, "block": "plain", "width_mode": "growth",
           "width_growth": 1.5, "aspp": False, "attention": "none", "multiscale_input": False,
           "deep_supervision": False}
    result = nas.run_search(nas.SearchConfig(trials=1, epochs=1, image_size=32, device="cpu", early_stop=False,
                                             fix=fix, out=tmp_path / "run", finalists=1, final_seeds=1,
                                             final_epochs=2, baselines="none", warm_start="none"))
    out = capsys.readouterr().out
    assert result.status == "completed"
    assert "test: 32 generated images" in out and "epoch: 96 patches of 32 px" in out
    assert "finalist trial 0 seed 0: 2 epochs" in out
    summary = json.loads((tmp_path / "run" / "finalists" / "finalists.json").read_text())
    assert [e["key"] for e in summary["entrants"]] == ["trial_0000"] and summary["settings"]["final_epochs"] == 2
    best = json.loads((tmp_path / "run" / "best" / "trial_0000" / "metrics.json").read_text())
    assert best["finalized"]["seed"] == 0 and best["epochs_run"] == 2 and 0.05 <= best["threshold"] <= 0.95


def test_a_failing_seed_is_isolated_retried_next_run_and_other_final_epochs_are_refused(tmp_path, monkeypatch):
    import nas.stages.finalist_training as fin
    from nas.engine.trial import TrialSettings
    from nas.train.trainer import TrainConfig

    calls = []

    def fake_train(spec, space, data, settings, folder, *, extra, on_epoch=None):
        calls.append((extra["entrant"], settings.train.seed))
        if (extra["entrant"], settings.train.seed) == ("trial_0000", 1):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({**extra, "dice": 0.5}))
        return TrialResult.from_dict({"dice": 0.5, "threshold": 0.5, "seconds": 1.0})

    monkeypatch.setattr(fin, "train_and_save", fake_train)
    items = [fin.Entrant(f"trial_000{i}", f"trial {i}", "finalist", "resunet", spec(w).to_dict(), 0.5, i)
             for i, w in enumerate((4, 6))]
    settings = TrialSettings(32, TrainConfig(epochs=2))
    failures = fin.train_entrants(items, None, settings, [0, 1], tmp_path, log=lambda line: None)
    assert list(failures) == [("trial_0000", 1)] and failures[("trial_0000", 1)].startswith("out of memory")
    assert calls == [("trial_0000", 0), ("trial_0000", 1), ("trial_0001", 0), ("trial_0001", 1)]
    calls.clear()
    fin.train_entrants(items, None, settings, [0, 1], tmp_path, log=lambda line: None)
    assert calls == [("trial_0000", 1)]  # only the failed seed is tried again
    assert fin.other_recipes(items, tmp_path, [0, 1], 2) == []
    assert fin.other_recipes(items, tmp_path, [0, 1], 6)[0] == "trial_0000/seed_0 (2 epochs)"


def test_a_front_member_not_above_the_trivial_predictor_is_never_a_finalist(tmp_path, monkeypatch):
    """The cheap end of a log-MAC front is often a model that learned nothing (validation Dice 0): the
    search does not deploy it, and the finalist stage spends no slot on it; the next one takes its place."""
    import nas.run.finalist_run as stage

    run = make_run(tmp_path / "run", dice=lambda number: 0.0 if number == 0 else 0.9 + 0.01 * number)
    opened, data = stage.open_for_finalize(run)
    chosen, lines = [], []

    def stop_before_training(items, *args, **kwargs):
        chosen.extend(e.label for e in items if e.kind == "finalist")
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "train_entrants", stop_before_training)
    with pytest.raises(KeyboardInterrupt):
        stage.finalize_run(run, opened.records, opened.settings, data, stage.FinalOptions(finalists=2, final_seeds=1),
                           log=lines.append)
    assert chosen == ["trial 1", "trial 2"]  # trial 0 (Dice 0) sat at the front's cheap end
    assert any("1 trial(s) not above the trivial predictor left out" in line for line in lines)


def test_a_run_whose_every_model_is_below_the_trivial_predictor_has_nothing_to_finalise(tmp_path, capsys):
    import shutil

    run = make_run(tmp_path / "run", dice=lambda number: 0.0)
    shutil.rmtree(run / "baselines")
    from nas.cli.finalize import main

    code, _, err = call(capsys, main, "--run", run, *FLAGS)
    err = err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing to finalise" in err[0] and "3 left out" in err[0]
    assert not (run / "finalists").exists()
