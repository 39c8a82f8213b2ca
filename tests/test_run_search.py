"""``nas.run_search(SearchConfig)``: the CLI's search from Python, its result, and SIGTERM handled like Ctrl-C."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NO_FAMILY, TINY_FIX, call, fix_flags

import nas
from nas.run.search import STATUSES, SearchResult

NAS_SEARCH = Path(sys.executable).parent / "nas-search"
# One tiny corner of the space and no baseline family: the search machinery runs for real, training takes seconds.
FIX = TINY_FIX
FIX_FLAGS = [*fix_flags(FIX), *NO_FAMILY]


def rows(run: Path) -> list[dict]:
    with open(run / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*")}


def test_nas_exports_the_api_lazily():
    code = "import sys, nas; assert 'torch' not in sys.modules; nas.SearchConfig; print(nas.run_search.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "nas.run.search", result.stderr


def test_every_status_has_an_exit_code():
    from nas.cli.search import EXIT_CODES

    assert set(EXIT_CODES) == set(STATUSES)
    assert (EXIT_CODES["completed"], EXIT_CODES["failures"], EXIT_CODES["interrupted"],
            EXIT_CODES["terminated"]) == (0, 1, 130, 143)
    assert SearchResult("timeout", Path(".")).ok and not SearchResult("infeasible", Path(".")).ok


def test_bad_input_from_python_is_a_search_error_and_writes_nothing(tmp_path):
    with pytest.raises(nas.SearchError, match="does not exist"):
        nas.run_search(nas.SearchConfig(data=str(tmp_path / "nowhere"), out=tmp_path / "out"))
    with pytest.raises(nas.SearchError, match="--fix colour: unknown dimension"):
        nas.run_search(nas.SearchConfig(fix={"colour": "red"}, out=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_run_search_from_python_writes_what_the_cli_writes(tmp_path, capsys):
    config = nas.SearchConfig(trials=1, epochs=1, image_size=32, seed=1, device="cpu", early_stop=False, fix=FIX,
                              baselines="none", warm_start="none", cost_strata=0, out=tmp_path / "python")  # = NO_FAMILY
    result = nas.run_search(config)
    assert (result.status, result.out, result.finished) == ("completed", (tmp_path / "python").resolve(), 1)
    assert [r.number for r in result.front] == [0]
    from nas.cli.search import main

    code, out, err = call(capsys, main, "--trials", "1", "--epochs", "1", "--image-size", "32", "--seed", "1",
                          "--device", "cpu", "--early-stop", "off", *FIX_FLAGS, "--out", tmp_path / "cli")
    assert code == 0, err
    python, command = rows(tmp_path / "python"), rows(tmp_path / "cli")
    assert files(tmp_path / "python") == files(tmp_path / "cli")
    assert [(r["state"], r["params"], r["macs"]) for r in python] == [(r["state"], r["params"], r["macs"])
                                                                      for r in command]
    assert float(python[0]["dice"]) == pytest.approx(float(command[0]["dice"]), abs=1e-3)

    # Read back as a notebook would: the frame trials.csv was written from, typed, with the settings.
    frame = nas.load_run(tmp_path / "python")
    assert list(frame.columns[:len(python[0])]) == list(python[0]) and len(frame) == len(python)
    assert str(frame["number"].dtype) == "Int64" and str(frame["macs"].dtype) == "Int64"
    assert frame["dice"].dtype == "float64" and frame.loc[0, "state"] == "COMPLETE"
    assert float(frame.loc[0, "dice"]) == pytest.approx(float(python[0]["dice"]), abs=1e-6)
    assert frame.attrs["config"]["image_size"] == 32 and frame.attrs["study"] == "resunet"
    with pytest.raises(nas.RunError, match="no such run directory"):
        nas.load_run(tmp_path / "nowhere")


@pytest.mark.slow
def test_sigterm_writes_the_report_and_exits_143(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = ["--trials", "3", "--epochs", "2", "--image-size", "32", "--seed", "2", "--device", "cpu",
            "--early-stop", "off", *FIX_FLAGS, "--out", "run"]
    process = subprocess.Popen([str(NAS_SEARCH), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:  # trial 0 finished, trial 1 in its first epoch
            line = process.stdout.readline()
            if not line:
                pytest.fail("nas-search ended early:\n" + "".join(lines))
            lines.append(line)
            if line.startswith("trial   1 ("):
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, "".join(lines) + rest
    assert "interrupted: writing the report of the finished trials" in rest
    run = tmp_path / "run"
    assert (run / "report.html").is_file()
    states = {r["number"]: r["state"] for r in rows(run)}
    assert states["0"] == "COMPLETE" and states["1"] == "FAIL"
    assert rows(run)[1]["fail_reason"].startswith("interrupted")
    assert not list(run.rglob("*.tmp"))
