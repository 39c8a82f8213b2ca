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
