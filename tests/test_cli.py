"""The CLI as a user runs it: a tiny real search, the run directory, resume, bad input.

The searches that make a run directory are real ``nas-search`` processes; reruns and refusals call the
same ``main`` in-process with the same command line (a process start costs seconds of imports)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_FAMILY, TINY_FIX, fix_flags

from nas import load_checkpoint, read_checkpoint_info
from nas.data.loading import load_data
from nas.train.trainer import evaluate_dice

NAS_SEARCH = Path(sys.executable).parent / "nas-search"
TINY = ["--trials", "2", "--epochs", "1", "--image-size", "32", "--seed", "1", "--device", "cpu",
        "--patches-per-epoch", "16", *NO_FAMILY]
SMALL = fix_flags(TINY_FIX)  # the tiny run's corner of the space: trials train in seconds


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(NAS_SEARCH), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def read_trials(run_dir: Path) -> list[dict]:
    with open(run_dir / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli")
    result = run_cli("--space", "resunet", *TINY, *SMALL, "--out", "run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir, workdir / "run", result


@pytest.mark.slow
def test_search_writes_the_run_directory(tiny_run):
    _, run_dir, result = tiny_run
    rows = read_trials(run_dir)
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    for row in rows:
        assert 0 <= float(row["dice"]) <= 1
        assert int(row["flops"]) == 2 * int(row["macs"]) > 0
        assert int(row["param_count"]) > 0 and float(row["latency_ms"]) > 0
    report = (run_dir / "report.html").read_text()
    assert 'id="plot-macs"' in report and "src=\"http" not in report
    best = sorted((run_dir / "best").iterdir())
    assert best, "at least one Pareto-optimal checkpoint"
    for folder in best:
        assert {p.name for p in folder.iterdir()} == {
            "spec.json", "model.safetensors", "metrics.json", "model.onnx", "README.md"}
    assert "trial" in result.stdout and "report:" in result.stdout


@pytest.mark.slow
def test_best_checkpoint_reloads_and_reproduces_its_dice(tiny_run):
    _, run_dir, _ = tiny_run
    folder = sorted((run_dir / "best").iterdir())[0]
    model, spec = load_checkpoint(folder)
    info = read_checkpoint_info(folder)
    data = load_data("synthetic", image_size=32, seed=1)
    assert data.normalization == info.normalization
    scores = evaluate_dice(model, data, torch.device("cpu"))
    assert sum(scores) / len(scores) == pytest.approx(info.metrics["dice"], abs=1e-5)
    assert info.metrics["flops"] == 2 * info.metrics["macs"]
    row = next(r for r in read_trials(run_dir) if r["number"] == str(info.metrics["trial"]))
    assert float(row["dice"]) == pytest.approx(info.metrics["dice"])


@pytest.mark.slow
def test_rerun_resumes_without_adding_trials_and_extends_on_request(tiny_run, capsys, monkeypatch):
    workdir, run_dir, _ = tiny_run
    monkeypatch.chdir(workdir)
    code, out, err = run_main(capsys, "--space", "resunet", *TINY, *SMALL, "--out", "run")
    assert code == 0, err
    assert "2/2 trials finished" in out
    assert [r["state"] for r in read_trials(run_dir)].count("COMPLETE") == 2
    code, _, err = run_main(capsys, "--space", "resunet", *TINY[:1], "3", *TINY[2:], *SMALL, "--out", "run")
    assert code == 0, err
    states = [r["state"] for r in read_trials(run_dir)]
    assert states.count("COMPLETE") == 3 and set(states) <= {"COMPLETE", "PRUNED"}  # PRUNED: duplicates


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tiny_run, capsys, monkeypatch):
    workdir, run_dir, _ = tiny_run
    before = (run_dir / "trials.csv").read_bytes()
    monkeypatch.chdir(workdir)
    code, _, err = run_main(capsys, "--space", "resunet", *TINY, *SMALL, "--epochs", "2", "--out", "run")
    assert code == 2
    assert "other settings" in err and "epochs" in err
    assert (run_dir / "trials.csv").read_bytes() == before


def _bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "no_masks"
    (folder / "images").mkdir(parents=True)
    return folder


@pytest.mark.parametrize("args, message", [
    (["--space", "unet3000"], "unknown search space"),
    (["--data", "does/not/exist"], "does/not/exist"),
    (["--data", "{bad}"], "masks"),
    (["--trials", "0"], "argument --trials: must be >= 1"),
    (["--image-size", "8"], "argument --image-size: must be >= 16"),
    (["--device", "tpu"], "device"),
    (["--storage", "study.db"], "--storage must be a URL"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args, message):
    bad = str(_bad_folder(tmp_path))
    args = [a.replace("{bad}", bad) for a in args]
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, *args, "--out", "run")
    assert code == 2
    assert message in err
    assert err.strip().splitlines()[-1].startswith("nas-search: error:")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_asking_for_cuda_without_one_is_refused(tmp_path, capsys):
    code, _, err = run_main(capsys, "--device", "cuda", "--out", str(tmp_path / "run"))
    assert code == 2 and "no CUDA device" in err
    assert not (tmp_path / "run").exists()


def test_list_spaces(tmp_path):  # the installed entry point, in a process of its own
    result = run_cli("--list-spaces", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("resunet:")


# --- restricting the space, --describe, constraints before training (issue 3) -------------------

def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in-process (fast): exit code, stdout, stderr."""
    from nas.cli.search import main

    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_prints_every_dimension_and_the_restrictions(tmp_path, capsys, monkeypatch):
    from search_spaces import get_space

    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(capsys, "--space", "resunet", "--describe", "--fix", "depth=4",
                            "--choices", "base_width=8,12", "--max-macs", "500M")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for dimension in get_space("resunet").dimensions:
        assert dimension.describe() in rows[dimension.name]
    assert "fixed: 4" in rows["depth"] and "restricted to 8, 12" in rows["base_width"]
    assert "restrictions: --fix depth=4 --choices base_width=8,12" in out
    assert "constraints: --max-macs 500 MMAC" in out
    assert list(tmp_path.iterdir()) == []


def test_a_toml_config_restricts_like_the_flags(tmp_path, capsys):
    config = tmp_path / "space.toml"
    config.write_text('[fix]\ndepth = 4\n\n[choices]\nbase_width = [8, 12]\n')
    code, out, _ = run_main(capsys, "--describe", "--config", str(config))
    assert code == 0 and "restrictions: --fix depth=4 --choices base_width=8,12" in out


@pytest.mark.parametrize("args, message", [
    (["--fix", "depth=0"], "--fix depth=0: depth must be int"),
    (["--fix", "colour=red"], "--fix colour: unknown dimension"),
    (["--fix", "depth=deep"], "depth takes an integer"),
    (["--choices", "base_width=8,10"], "base_width must be int"),
    (["--fix", "depth"], "--fix takes NAME=VALUE"),
    (["--config", "{tmp}/absent.toml"], "cannot read it"),
    (["--config", "{tmp}/bad.toml"], "unknown key(s) ['fixes']"),
    (["--max-macs", "lots"], "argument --max-macs"),
    (["--max-latency-ms", "-1"], "argument --max-latency-ms"),
    (["--max-memory-mb", "0"], "argument --max-memory-mb"),
])
def test_impossible_overrides_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    (tmp_path / "bad.toml").write_text("[fixes]\ndepth = 4\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run_main(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 2 and out == ""
    assert message in err and err.strip().splitlines()[-1].startswith("nas-search: error:")
    assert not (tmp_path / "run").exists()


def test_a_fix_that_a_conditional_dimension_never_reaches_is_refused(capsys, tmp_path):
    from search_spaces import get_space

    conditional = [d for d in get_space("resunet").dimensions if getattr(d, "applies_when", "")]
    if not conditional:
        pytest.skip("this version of the space has no conditional dimension")
    # expansion applies only to inverted blocks: fixing the block to another makes it unreachable.
    dimension = next((d for d in conditional if d.name == "expansion"), None)
    if dimension is None:
        pytest.skip("no expansion dimension")
    code, _, err = run_main(capsys, "--fix", "block=basic", "--fix", "expansion=4", "--out", str(tmp_path / "r"))
    assert code == 2 and "expansion: the dimension never applies" in err
    assert not (tmp_path / "r").exists()


def _study(run_dir: Path):
    import optuna

    return optuna.load_study(study_name="resunet", storage=f"sqlite:///{run_dir / 'study.db'}")


@pytest.mark.slow
def test_fixed_dimensions_hold_in_every_trial_and_the_restriction_guards_resume(tmp_path, capsys):
    import json

    from search_spaces import get_space

    names = {d.name for d in get_space("resunet").dimensions}
    dilation = "dilation" if "dilation" in names else "bridge_dilation"  # the full space renamed it
    fixed = ["--fix", "depth=3", "--fix", "base_width=8", "--choices", f"{dilation}=1,2"]
    loose = ["--max-params", "100M", "--max-memory-mb", "10000"]  # feasible: checked, then trained
    cheap = fix_flags({k: v for k, v in TINY_FIX.items() if k not in ("depth", "base_width")})
    one = ["--trials", "1", *TINY[2:], *cheap]  # one trained trial keeps it fast; the fix holds per trial anyway
    result = run_cli(*one, *fixed, *loose, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    rows = read_trials(run_dir)
    assert [r["state"] for r in rows] == ["COMPLETE"]
    for row in rows:
        params = json.loads(row["params"])
        assert params["depth"] == 3 and params["base_width"] == 8 and str(params[dilation]) in ("1", "2")
    for folder in (run_dir / "trials").iterdir():
        spec = json.loads((folder / "spec.json").read_text())["spec"]
        assert spec["encoder_widths"][0] == 8 and len(spec["encoder_widths"]) == 3
    for trial in _study(run_dir).trials:
        assert "depth" not in trial.params and trial.user_attrs["fixed_params"]["depth"] == 3
        assert len(trial.user_attrs["constraint_violation"]) == 2
        assert all(v <= 0 for v in trial.user_attrs["constraint_violation"])
        if trial.state.name == "COMPLETE":
            assert 0 < trial.user_attrs["metrics"]["train_memory_mb"] < 10000
    before = (run_dir / "trials.csv").read_bytes()
    code, _, err = run_main(capsys, *one, "--fix", "depth=4", *loose, "--out", str(run_dir))
    assert code == 2 and "other settings" in err and "restriction" in err
    assert (run_dir / "trials.csv").read_bytes() == before


@pytest.mark.slow
def test_constraints_no_architecture_meets_stop_quickly_with_a_message(tmp_path, capsys):
    code, _, err = run_main(capsys, *TINY, "--fix", "depth=3", "--max-macs", "1k", "--max-pruned-in-a-row", "6",
                            "--out", str(tmp_path / "run"))
    assert code == 1, err
    assert "the last 6 sampled architectures all violate the constraints" in err
    assert "--max-macs 1 kMAC" in err
    rows = read_trials(tmp_path / "run")
    assert len(rows) == 6 and all(r["state"] == "PRUNED" for r in rows)
    assert all(r["fail_reason"].startswith("infeasible: ") and "> --max-macs 1 kMAC" in r["fail_reason"]
               for r in rows)
    assert all(int(r["macs"]) > 1000 for r in rows)  # the measured cost that broke the limit
    assert not (tmp_path / "run" / "trials").exists()  # nothing was trained


def test_an_architecture_too_deep_for_the_image_size_is_pruned_before_training(tmp_path, capsys):
    _, out, _ = run_main(capsys, "--fix", "depth=5", "--image-size", "16", "--trials", "1", "--epochs", "1",
                         "--max-pruned-in-a-row", "2", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert "under 2 px at the bridge" in out
    rows = read_trials(tmp_path / "run")
    assert rows and all(r["state"] == "PRUNED" for r in rows)
    assert all("under 2 px at the bridge" in r["fail_reason"] for r in rows)


def test_a_volume_space_on_image_data_is_refused(tmp_path, capsys):
    code, _, err = run_main(capsys, "--space", "resunet3d", "--data", "synthetic", "--out", str(tmp_path / "run"))
    assert code == 2 and "3D volumes" in err and "2D images" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resume_with_another_training_recipe_is_refused(tiny_run, capsys, monkeypatch):
    workdir, run_dir, _ = tiny_run
    before = (run_dir / "trials.csv").read_bytes()
    monkeypatch.chdir(workdir)
    code, _, err = run_main(capsys, "--space", "resunet", *TINY, *SMALL, "--lr", "0.01", "--out", "run")
    assert code == 2 and "recipe" in err
    assert (run_dir / "trials.csv").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--val-fraction", "1.5"], "argument --val-fraction: must be in (0, 1)"),
    (["--foreground-fraction", "2"], "argument --foreground-fraction: must be in [0, 1]"),
    (["--early-stop-patience", "0"], "argument --early-stop-patience: must be >= 1"),
])
def test_bad_recipe_values_are_refused(tmp_path, capsys, args, message):
    code, _, err = run_main(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 2 and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_baseline_presets_are_trained_once_drawn_and_never_exported(tmp_path, capsys, monkeypatch):
    args = ["--trials", "1", "--epochs", "1", "--image-size", "32", "--patches-per-epoch", "16", *SMALL,
            "--device", "cpu", "--baselines", "unet-16", "--warm-start", "none", "--out", "run"]  # the preset alone
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "run" / "baselines" / "unet-16"
    info = read_checkpoint_info(folder)
    assert info.metrics["kind"] == "preset" and 0 <= info.metrics["dice"] <= 1
    model, _ = load_checkpoint(folder)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert not (tmp_path / "run" / "best" / "unet-16").exists()
    report = (tmp_path / "run" / "report.html").read_text()
    assert "baseline preset" in report and "unet-16" in report
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, *args)
    assert code == 0 and "baseline unet-16: already trained" in out, err


def test_an_unknown_baseline_preset_is_refused(tmp_path, capsys):
    code, _, err = run_main(capsys, "--baselines", "unet-17", "--out", str(tmp_path / "run"))
    assert code == 2 and "unknown preset 'unet-17'" in err
    assert not (tmp_path / "run").exists()
