"""The CLI as a user runs it: a tiny real search, the run directory, resume, bad input."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas import load_checkpoint, read_checkpoint_info
from nas.data import load_data
from nas.training import evaluate_dice

NAS_SEARCH = Path(sys.executable).parent / "nas-search"
TINY = ["--trials", "2", "--epochs", "1", "--image-size", "32", "--seed", "1", "--device", "cpu"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(NAS_SEARCH), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def read_trials(run_dir: Path) -> list[dict]:
    with open(run_dir / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli")
    result = run_cli("--space", "resunet", *TINY, "--out", "run", cwd=workdir)
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
    assert "<svg" in report and "src=\"http" not in report
    best = sorted((run_dir / "best").iterdir())
    assert best, "at least one Pareto-optimal checkpoint"
    for folder in best:
        assert {p.name for p in folder.iterdir()} == {"spec.json", "model.safetensors", "metrics.json"}
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
def test_rerun_resumes_without_adding_trials_and_extends_on_request(tiny_run):
    workdir, run_dir, _ = tiny_run
    again = run_cli("--space", "resunet", *TINY, "--out", "run", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "2/2 trials finished" in again.stdout
    assert [r["state"] for r in read_trials(run_dir)].count("COMPLETE") == 2
    more = run_cli("--space", "resunet", *TINY[:1], "3", *TINY[2:], "--out", "run", cwd=workdir)
    assert more.returncode == 0, more.stderr
    states = [r["state"] for r in read_trials(run_dir)]
    assert states.count("COMPLETE") == 3 and set(states) <= {"COMPLETE", "PRUNED"}  # PRUNED: duplicates


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tiny_run):
    workdir, run_dir, _ = tiny_run
    before = (run_dir / "trials.csv").read_bytes()
    result = run_cli("--space", "resunet", *TINY, "--epochs", "2", "--out", "run", cwd=workdir)
    assert result.returncode == 2
    assert "other settings" in result.stderr and "epochs" in result.stderr
    assert (run_dir / "trials.csv").read_bytes() == before


def _bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "no_masks"
    (folder / "images").mkdir(parents=True)
    return folder


@pytest.mark.parametrize("args, message", [
    (["--space", "unet3000"], "unknown search space"),
    (["--data", "does/not/exist"], "does/not/exist"),
    (["--data", "{bad}"], "masks"),
    (["--trials", "0"], "--trials must be >= 1"),
    (["--image-size", "8"], "--image-size must be >= 16"),
    (["--device", "tpu"], "device"),
    (["--storage", "study.db"], "--storage must be a URL"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    bad = str(_bad_folder(tmp_path))
    args = [a.replace("{bad}", bad) for a in args]
    result = run_cli(*args, "--out", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("nas-search: error:")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_asking_for_cuda_without_one_is_refused(tmp_path):
    result = run_cli("--device", "cuda", "--out", "run", cwd=tmp_path)
    assert result.returncode == 2 and "no CUDA device" in result.stderr
    assert not (tmp_path / "run").exists()


def test_list_spaces(tmp_path):
    result = run_cli("--list-spaces", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("resunet:")
