"""Shared fixtures: tiny data and specs so every test runs in seconds on 2 CPU cores.

The suite runs on two pytest-xdist workers (addopts in pyproject.toml; ``-n 0`` runs it in one process).
Each worker is a process of its own that makes its own copy of a session- or module-scoped fixture, so the
tests that share one (a trained run) are handed to one worker together: see ``work_units``."""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
TESTS = Path(__file__).resolve().parent
# Under xdist two workers share the two cores: one torch thread each (two each would oversubscribe them),
# and the processes the tests start (nas-search, the benchmarks) inherit one OpenMP thread too.
UNDER_XDIST = bool(os.environ.get("PYTEST_XDIST_WORKER"))
TEST_THREADS = 1 if UNDER_XDIST else 2
if UNDER_XDIST:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)  # for the session and module fixtures too, made before _few_threads runs


# --- xdist work units ------------------------------------------------------------------------------
_SHARED_FIXTURE = re.compile(r"@pytest\.fixture\(scope\s*=\s*[\"'](module|session)[\"']\)\s*\ndef (\w+)")


def _shared_fixtures_in(path: Path) -> dict[str, str]:
    """name -> scope of the module- and session-scoped fixtures that ``path`` defines."""
    return {name: scope for scope, name in _SHARED_FIXTURE.findall(path.read_text(encoding="utf-8"))}


def work_units(tests: Path = TESTS) -> dict[str, str]:
    """Test file (as in node ids: ``tests/test_x.py``) -> the work unit its tests are handed to a worker in;
    files not named run test by test, on whichever worker is free. A file with a module-scoped fixture
    (its own, conftest's or one imported from another test file) is one unit; the files that use a
    session fixture of conftest (``tiny_run``) are one unit, named after it; a file whose tests carry
    ``xdist_group("name")`` joins that unit ("ray": one Ray cluster at a time). Read from the files' text:
    the process that schedules never imports them (tests/test_suite_setup.py checks the result against
    the fixtures the collected tests really use)."""
    common = _shared_fixtures_in(tests / "conftest.py")  # tiny_run (session), local_ray (module)
    units = {}
    for path in sorted(tests.glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        nodeid, own = f"{tests.name}/{path.name}", _shared_fixtures_in(path)
        used = {name for name in common if name not in own and re.search(rf"\b{name}\b", text)}
        imported = set()
        for module, names in re.findall(r"^from (test_\w+) import ([^\n#]+)", text, re.M):
            if (tests / f"{module}.py").is_file():
                imported |= set(re.findall(r"\w+", names)) & set(_shared_fixtures_in(tests / f"{module}.py"))
        group = re.search(r"xdist_group\(\s*[\"']([^\"']+)[\"']", text)
        sessions = sorted(name for name in used if common[name] == "session")
        if group:
            units[nodeid] = group.group(1)
        elif sessions:
            units[nodeid] = sessions[0]
        elif own or imported or used:
            units[nodeid] = nodeid
    return units


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the units of ``work_units``. xdist's own loadgroup finds a test's group in
    a suffix it appends to the node id, which pytest 9.2 no longer lets it change (pytest-xdist#1386): the
    marks were silently ignored. Units are handed out largest first, then one test at a time."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    units = work_units(Path(config.rootpath) / "tests")

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # xdist's suffix, where pytest still lets it add one
                return nodeid.split("@")[-1]
            return units.get(nodeid.split("::", 1)[0], nodeid)

    return WorkUnitScheduling(config, log)


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


# For searches whose subject is not the trials queued before the sampler (tests/test_family.py's and
# tests/test_strata.py's): without these, every run plans the baseline family and the cost strata (dozens
# of MAC counts) and trains them as its first trials.
NO_FAMILY = ["--baselines", "none", "--warm-start", "none", "--cost-strata", "0"]
# One tiny corner of the space (depth 3, base 8, plain blocks, no costly extras): the search machinery
# runs for real and trials train in seconds; the free dimensions still give thousands of points.
TINY_FIX = {"depth": 3, "base_width": 8, "blocks_per_stage": 1, "block": "plain", "width_mode": "growth",
            "width_growth": 1.5, "aspp": False, "attention": "none", "multiscale_input": False,
            "deep_supervision": False}


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """``<tmp>/in`` holding one 40x36 grey PNG, ``a.png``: an input folder for nas-predict."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 36), dtype=np.uint8)).save(folder / "a.png")
    return folder


def fix_flags(fix: dict) -> list[str]:
    """``{"depth": 3}`` -> ``["--fix", "depth=3"]``."""
    return [arg for name, value in fix.items() for arg in ("--fix", f"{name}={value}")]


def shared_dataset(name: str) -> Path:
    """A dataset under ../shared/data, or skip: a fresh clone of the project alone does not have it."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"shared dataset not found at {folder}: it sits beside the project root in CI")
    return folder


def call(capsys, main, *args) -> tuple[int, str, str]:
    """A CLI's ``main`` in-process, as a user's shell sees it: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def make_study(run: Path, spec: dict, checkpoint: str = "trials/trial_0000") -> Path:
    """A one-trial study as nas-search leaves it (search_config, metrics/spec/checkpoint attrs)."""
    import optuna

    from nas.engine.optuna_adapter.study import CONFIG_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{run / 'study.db'}", study_name="resunet",
                                directions=["maximize", "minimize"])
    study.set_user_attr(CONFIG_ATTR, {"space": "resunet", "data": "synthetic", "epochs": 1, "image_size": 32,
                                      "batch_size": 4, "seed": 0})
    metrics = {"dice": 0.5, "macs": 1000, "flops": 2000, "params": 100, "latency_ms": 1.0, "seconds": 1.0,
               "best_epoch": 1, "epoch_dice": [0.5], "trial": 0, "input_shape": [1, 1, 32, 32]}
    study.add_trial(optuna.trial.create_trial(
        params={"depth": 3}, distributions={"depth": optuna.distributions.IntDistribution(3, 6)},
        values=[0.5, 1000.0], user_attrs={"metrics": metrics, "spec": spec, "checkpoint": checkpoint}))
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A real trained run, made once per session (per xdist worker; its users share one): 2 sampled trials
    x 1 epoch of ``TINY_FIX`` at 32 px on the synthetic data, seed 0, no family or cost strata, the
    end-of-search latency pass included (seconds on 2 cores). Read it, or copy it before changing it."""
    import nas

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    result = nas.run_search(nas.SearchConfig(trials=2, epochs=1, image_size=32, seed=0, device="cpu",
                                             early_stop="none", fix=TINY_FIX, baselines=(), warm_start="none",
                                             cost_strata=0, out=out))
    assert result.ok and result.finished == 2, result
    return out
