"""Joining a real Ray cluster started with `ray start --head` (issue 16): the head uses token
authentication, so without RAY_AUTH_MODE=token the search must say so in one line; with it, it joins.

The head is started here (one CPU, a free port, its own temp dir) and stopped in teardown by the ids
of its own processes: `ray stop` would stop every Ray on the machine. Its token mode is set up
explicitly (RAY_AUTH_MODE=token, the token in RAY_AUTH_TOKEN): left unset, `ray start --head` turns token
auth on only when it finds ~/.ray/auth_token, which an earlier local Ray may or may not have written, and
the tokenless search then joined an open head (exit 0). Every process here runs with HOME in the test's
temp folder, so nothing in the home folder is read or written.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import RAY_TOKEN, ray_env

pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time (tests/test_ray_backend.py)
RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes_of(marker: str) -> list[int]:
    """Processes whose command line names ``marker``, and their children (Ray's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    children = []
    for pid in found:
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                children += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
    return children + found


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """An empty home folder for every process of this module: no ~/.ray/auth_token to find or write."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def ray_head(home):
    if not RAY.exists():
        pytest.skip("the ray command is not installed")
    temp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths live under it
    port = _free_port()
    env = {**ray_env(), "HOME": str(home)}  # token auth, its token given, not looked up
    try:
        subprocess.run([str(RAY), "start", "--head", "--num-cpus", "1", "--port", str(port), "--temp-dir", str(temp),
                        "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True,
                       timeout=180, env=env)
        yield f"127.0.0.1:{port}"
    finally:
        for _ in range(2):
            for pid in _processes_of(str(temp)):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        for pid in _processes_of(str(temp)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
        current = Path("/tmp/ray/ray_current_cluster")  # what `ray stop` would remove, only if it names this head
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.mark.slow
def test_a_token_auth_head_is_one_line_then_joined_with_ray_auth_mode_token(ray_head, home, tmp_path):
    # A process of its own, as a user's: Ray reads its auth mode once per process, so in pytest's process an
    # earlier Ray test's mode (or a cached token) would join the head and make this test depend on the order.
    out = tmp_path / "run"
    env = {**ray_env(token=False), "HOME": str(home)}  # no RAY_AUTH_* at all, and no token file to find
    assert not (home / ".ray").exists()
    refused = subprocess.run([sys.executable, "-m", "nas.cli.search", "--backend", "ray", "--ray-address", ray_head,
                              "--out", str(out), "--trials", "1", "--epochs", "1", "--image-size", "16",
                              "--device", "cpu"], capture_output=True, text=True, timeout=300, env=env)
    code, err = refused.returncode, refused.stderr
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"nas-search: error: --ray-address {ray_head}: the Ray head refused this process")
    assert "set RAY_AUTH_MODE=token" in line and "InvalidAuthToken" not in err.replace("(InvalidAuthToken:", "")
    assert not out.exists()
    # as a user would: the same join in a new process with RAY_AUTH_MODE=token (Ray reads it once per process)
    joined = subprocess.run([sys.executable, "-c", "import sys; from nas.engine.ray_adapter import probe_ray_address; "
                             "probe_ray_address(sys.argv[1]); print('joined')", ray_head],
                            capture_output=True, text=True, timeout=180,
                            env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN})
    assert joined.returncode == 0 and "joined" in joined.stdout, joined.stderr[-2000:]
    assert not (home / ".ray").exists(), "the token came from the environment, not a file"
