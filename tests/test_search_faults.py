"""The real ``nas-search`` process under faults: kill -9 mid-trial, Ctrl-C, a second search on the
same run directory, several workers on a journal file, and PostgreSQL workers (CI starts a server)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import NO_FAMILY, TINY_FIX, fix_flags

from nas.engine.optuna_adapter.study import make_storage

NAS_SEARCH = Path(sys.executable).parent / "nas-search"
# Sampled trials in a tiny corner of the space, no baseline family (its planning and warm-start trials
# are tests/test_family.py's subject); 2 epochs, so a kill after epoch 1 lands mid-trial.
SMALL = ["--epochs", "2", "--image-size", "32", "--seed", "3", "--device", "cpu", *NO_FAMILY, *fix_flags(TINY_FIX)]
pytestmark = pytest.mark.slow


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # SIGINT as a terminal delivers it, even when pytest itself runs in the background (SIGINT ignored)
    return subprocess.Popen([str(NAS_SEARCH), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(process: subprocess.Popen, predicate, timeout: float = 300) -> list[str]:
    """Read the process's output until ``predicate(lines)`` holds; fail if it ends or times out first."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            pytest.fail("nas-search ended before the awaited point:\n" + "".join(lines))
        lines.append(line)
        if predicate(lines):
            return lines
    pytest.fail("timed out waiting:\n" + "".join(lines))


def in_trial_training(number: int):
    """True once trial ``number`` has printed its header and finished one epoch."""
    def predicate(lines: list[str]) -> bool:
        headers = [i for i, line in enumerate(lines) if line.startswith(f"trial {number:>3} (")]
        return bool(headers) and any("epoch 1/" in line for line in lines[headers[-1]:])
    return predicate


def load(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="resunet", storage=make_storage(f"sqlite:///{run / 'study.db'}"))


def complete(study: optuna.Study) -> list:
    return [t for t in study.trials if t.state.name == "COMPLETE"]


def test_sigkill_mid_trial_then_the_same_command_resumes_without_loss_or_duplicates(tmp_path):
    args = ["--trials", "3", *SMALL, "--early-stop", "off", "--out", "run"]
    process = start(*args, cwd=tmp_path)
    wait_for(process, in_trial_training(1))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    run = tmp_path / "run"
    first = complete(load(run))
    assert [t.number for t in first] == [0]
    kept = json.loads((run / "trials/trial_0000/metrics.json").read_text())["weights_sha256"]

    result = subprocess.run([str(NAS_SEARCH), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trial 1 was lost" in result.stdout
    study = load(run)
    done = complete(study)
    assert len(done) == 3 and done[0].number == 0  # the finished trial is kept, not retrained
    assert json.loads((run / "trials/trial_0000/metrics.json").read_text())["weights_sha256"] == kept
    lost = study.trials[1]
    assert lost.state.name == "FAIL" and lost.user_attrs["fail_reason"].startswith("stale")
    retried = [t for t in done if t.user_attrs.get("retry_of") == 1]
    assert len(retried) == 1 and retried[0].params == lost.params  # retried once, same architecture
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 3  # nothing trained twice
    assert not list(run.rglob("*.tmp")), "no half-written file or folder is left"
    with open(run / "trials.csv", newline="") as handle:
        assert sum(row["state"] == "COMPLETE" for row in csv.DictReader(handle)) == 3


def test_a_second_search_on_the_same_run_directory_refuses(tmp_path):
    args = ["--trials", "2", *SMALL, "--out", "run"]
    first = start(*args, cwd=tmp_path)
    try:
        wait_for(first, lambda lines: any(line.startswith("trial ") for line in lines))
        second = subprocess.run([str(NAS_SEARCH), *args], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2
        error = second.stderr.strip().splitlines()[-1]
        assert "another nas-search" in error and "is running on" in error
    finally:
        first.kill()
        first.wait()


def test_ctrl_c_writes_the_report_and_the_interrupted_trial_runs_again(tmp_path):
    args = ["--trials", "3", *SMALL, "--early-stop", "off", "--out", "run"]
    process = start(*args, cwd=tmp_path)
    wait_for(process, in_trial_training(1))
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=300)
    assert process.returncode == 130, rest
    run = tmp_path / "run"
    assert (run / "report.html").is_file() and (run / "trials.csv").is_file()
    study = load(run)
    assert study.trials[1].state.name == "FAIL"
    assert study.trials[1].user_attrs["fail_reason"].startswith("interrupted")
    again = subprocess.run([str(NAS_SEARCH), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    done = complete(load(run))
    assert len(done) == 3 and any(t.user_attrs.get("retry_of") == 1 for t in done)


def _check_workers(study: optuna.Study, wanted: int) -> None:
    done = complete(study)
    assert len(done) >= wanted  # a worker finishing its running trial may add one more
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == len(done), "duplicate architectures"
    pids = {t.user_attrs["worker"]["pid"] for t in done}
    assert len(pids) == 2, "both workers trained"
    assert not [t for t in study.trials if t.state.name == "RUNNING"], "no trial left behind"


def test_two_workers_share_a_journal_file(tmp_path):
    result = subprocess.run([str(NAS_SEARCH), "--trials", "4", *SMALL, "--workers", "2", "--out", "run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "run"
    assert (run / "study.journal").is_file() and not (run / "study.db").exists()
    study = optuna.load_study(study_name="resunet", storage=make_storage(f"journal:///{run / 'study.journal'}"))
    _check_workers(study, 4)
    logs = {p.name for p in (run / "logs").iterdir()}  # each worker's output, and the run's traceback log
    assert {"worker-0.log", "worker-1.log"} <= logs <= {"worker-0.log", "worker-1.log", "search.log"}
    assert "4/4 finished" in result.stdout or "5/4 finished" in result.stdout


@pytest.mark.skipif(not os.environ.get("NAS_TEST_POSTGRES_URL"),
                    reason="NAS_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
def test_two_workers_on_postgresql(tmp_path):
    url = os.environ["NAS_TEST_POSTGRES_URL"]
    name = f"ci-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([str(NAS_SEARCH), "--trials", "4", *SMALL, "--workers", "2", "--storage", url,
                             "--study-name", name, "--out", "run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    _check_workers(optuna.load_study(study_name=name, storage=url), 4)


def _all_checkpoints_load(run: Path) -> None:
    from nas import load_checkpoint

    for folder in [*(run / "trials").iterdir(), *(run / "best").iterdir()]:
        load_checkpoint(folder)


@pytest.mark.parametrize("point", ["checkpoint:2", "report:1"])
def test_kill_9_while_writing_then_resume(tmp_path, point):
    """Killed between staging a checkpoint and swapping it in, or between the table and the report."""
    args = ["--trials", "2", *SMALL, "--epochs", "1", "--early-stop", "off", "--out", "run"]
    killed = subprocess.run([str(NAS_SEARCH), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NAS_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    run = tmp_path / "run"
    again = subprocess.run([str(NAS_SEARCH), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    done = complete(load(run))
    assert len(done) == 2 and len({json.dumps(t.params, sort_keys=True) for t in done}) == 2
    if point.startswith("checkpoint"):
        assert "cleaned up after an interrupted write" in again.stdout
        assert "trial 1 was lost" in again.stdout
    assert (run / "report.html").is_file()
    assert not [p for p in run.rglob(".*") if p.name.endswith(".tmp") or ".old-" in p.name]
    _all_checkpoints_load(run)


def test_kill_9_between_the_two_renames_of_a_folder_swap_puts_the_old_folder_back(tmp_path):
    args = ["--trials", "1", *SMALL, "--epochs", "1", "--out", "run"]
    first = subprocess.run([str(NAS_SEARCH), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    more = ["--trials", "2", *args[2:]]
    killed = subprocess.run([str(NAS_SEARCH), *more], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NAS_FAILPOINT": "replace_folder"})
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "best").exists() and list(run.glob(".best.old-*")), "killed with best/ moved aside"
    again = subprocess.run([str(NAS_SEARCH), *more], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cleaned up after an interrupted write: .best.old-" in again.stdout
    assert (run / "best").is_dir() and not list(run.glob(".best.old-*"))
    _all_checkpoints_load(run)
