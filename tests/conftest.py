"""Shared fixtures: tiny data and specs so every test runs in seconds on 2 CPU cores."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep tests predictable on the 2-core CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


# For searches whose subject is not the baseline family (tests/test_family.py's): without these,
# every run plans the family (dozens of MAC counts) and trains its members as the first trials.
NO_FAMILY = ["--baselines", "none", "--warm-start", "none"]
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
    """A real trained run, made once per session: 2 trials x 1 epoch of ``TINY_FIX`` at 32 px on the
    synthetic data, seed 0, no family, the end-of-search latency pass included (about a minute on 2
    cores). Read it, or copy it before changing it."""
    import nas

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    result = nas.run_search(nas.SearchConfig(trials=2, epochs=1, image_size=32, seed=0, device="cpu",
                                             early_stop="none", fix=TINY_FIX, baselines=(), warm_start="none",
                                             out=out))
    assert result.ok and result.finished == 2, result
    return out
