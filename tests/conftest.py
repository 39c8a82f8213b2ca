"""Shared fixtures: tiny data and specs so every test runs in seconds on 2 CPU cores.

The suite runs on pytest-xdist's workers (``-n 2`` in pyproject.toml): each worker is a process of its
own, so a session-scoped fixture is made once per worker. Tests that must not run beside each other (a
Ray cluster, wall-clock limits) share an ``xdist_group`` and run one after another in one worker."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
# Under xdist two workers share the two cores: one torch thread each (two each would oversubscribe them),
# and the processes the tests start (nas-search, the benchmarks) inherit one OpenMP thread too.
UNDER_XDIST = bool(os.environ.get("PYTEST_XDIST_WORKER"))
TEST_THREADS = 1 if UNDER_XDIST else 2
if UNDER_XDIST:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep tests predictable on the 2-core CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, TEST_THREADS))
    yield
    torch.set_num_threads(previous)


# --- Ray without the home folder or /tmp/ray -------------------------------------------------------
# Ray 2.5x reads its auth mode from RAY_AUTH_MODE and, when that is unset, turns token auth on if it finds
# ~/.ray/auth_token (writing one for a new local cluster); ray.init() with no address joins the cluster
# named in /tmp/ray/ray_current_cluster. Each Ray the tests start gets both set up explicitly instead.
RAY_TOKEN = secrets.token_hex(16)  # this test process's cluster token; never written to a file


def ray_env(base: dict | None = None, *, token: bool = True) -> dict:
    """``base`` (default ``os.environ``) without any RAY_AUTH*/RAY_ADDRESS setting, then: token auth with
    ``RAY_TOKEN`` given in the environment (``token=True``), or no auth setting at all (``token=False``)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN)
    return env


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for a module: a new one (``address="local"``), with the token auth a new local
    Ray turns on by itself, its token ``RAY_TOKEN`` from the environment (no ~/.ray/auth_token read or
    written); the environment is restored after ``ray.shutdown()``."""
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install .[ray] to run the Ray backend test")
    pytest.importorskip("ray.tune", reason="Ray Tune is missing: pip install .[ray]")
    ray_keys = lambda: [k for k in os.environ if k.startswith("RAY_AUTH") or k == "RAY_ADDRESS"]  # noqa: E731
    saved = {k: os.environ.pop(k) for k in ray_keys()}
    # RAY_AUTH_MODE is left unset on purpose: ray.init() then sets it to "token" and reloads its own config
    # (set here instead, this process's config, read when ray was imported, would still say "disabled").
    os.environ["RAY_AUTH_TOKEN"] = RAY_TOKEN
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        yield ray
    finally:
        ray.shutdown()
        for key in ray_keys():
            del os.environ[key]
        os.environ.update(saved)
