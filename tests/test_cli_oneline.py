"""Every command answers a bad flag with one line (issue 26), says its version, and the package says
its own: ``nas.__version__``, ``dir(nas)``, licence metadata.

A bad flag or value used to print argparse's whole usage block (27 lines for nas-search) before the
error; now it is one line on stderr, ``PROG: error: ... (see --help)``, and exit code 2.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, call

import nas

PROGS = ("nas-search", "nas-profile", "nas-report", "nas-export", "nas-predict", "nas-compress", "nas-finalize")
REQUIRED = {  # what each command needs before argparse looks at the rest (nothing is read: parsing fails first)
    "nas-search": [], "nas-profile": [], "nas-report": ["--run", "r"], "nas-finalize": ["--run", "r"],
    "nas-export": ["--checkpoint", "c", "--format", "onnx"], "nas-predict": ["--checkpoint", "c", "--input", "i"],
    "nas-compress": ["--run", "r"],
}
BAD_VALUES = [  # one malformed value per command: an invalid choice, a non-number, a missing argument
    ("nas-search", ["--sampler", "annealing"], "argument --sampler: invalid choice: 'annealing'"),
    ("nas-profile", ["--preset", "unet-16", "--repeats", "many"], "argument --repeats: expected an integer"),
    ("nas-report", ["--run", "r", "--overlay-images"], "argument --overlay-images: expected one argument"),
    ("nas-export", ["--checkpoint", "c", "--format", "pdf"], "argument --format: invalid choice: 'pdf'"),
    ("nas-predict", ["--checkpoint", "c", "--input", "i", "--overlap", "lots"], "argument --overlap: expected a number"),
    ("nas-compress", ["--run", "r", "--ratio-of", "flops"], "argument --ratio-of: invalid choice: 'flops'"),
    ("nas-finalize", ["--run", "r", "--finalists", "two"], "argument --finalists: expected an integer"),
]
EMPTY_PATHS = [  # a path flag given as '' is refused, never read as the current folder or the default
    ("nas-search", ["--data", ""], "--data"), ("nas-profile", ["--spec", ""], "--spec"),
    ("nas-report", ["--run", ""], "--run"), ("nas-finalize", ["--run", ""], "--run"),
    ("nas-export", ["--checkpoint", "", "--format", "onnx"], "--checkpoint"),
    ("nas-predict", ["--checkpoint", "c", "--input", "", "--out", "o"], "--input"),
    ("nas-compress", ["--checkpoint", ""], "--checkpoint"),
]


def main_of(prog: str):
    return importlib.import_module(f"nas.cli.{prog.removeprefix('nas-')}").main


def one_line(capsys, prog: str, args: list[str]) -> str:
    """Exit 2, nothing on stdout, exactly one stderr line, ``PROG: error: ...``; returns it."""
    code, out, err = call(capsys, main_of(prog), *args)
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


@pytest.mark.parametrize("prog", PROGS)
def test_an_unknown_flag_is_one_line(capsys, tmp_path, monkeypatch, prog):
    monkeypatch.chdir(tmp_path)
    line = one_line(capsys, prog, [*REQUIRED[prog], "--foo"])
    assert line == f"{prog}: error: unrecognized arguments: --foo (see --help)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prog, args, needle", BAD_VALUES, ids=[case[0] for case in BAD_VALUES])
def test_a_bad_value_is_one_line(capsys, tmp_path, monkeypatch, prog, args, needle):
    monkeypatch.chdir(tmp_path)
    line = one_line(capsys, prog, args)
    assert needle in line and line.endswith(" (see --help)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prog", [prog for prog in PROGS if REQUIRED[prog]])
def test_a_missing_required_flag_is_one_line(capsys, prog):
    line = one_line(capsys, prog, [])
    assert "required" in line and line.endswith(" (see --help)")


@pytest.mark.parametrize("prog, args, flag", EMPTY_PATHS, ids=[case[0] for case in EMPTY_PATHS])
def test_an_empty_path_is_one_line(capsys, tmp_path, monkeypatch, prog, args, flag):
    monkeypatch.chdir(tmp_path)
    assert one_line(capsys, prog, args) == f"{prog}: error: argument {flag}: '' is empty: it names no file or folder"
    assert list(tmp_path.iterdir()) == []


def test_a_later_check_is_one_line_without_a_usage_block(capsys, tmp_path):
    """A refusal after parsing (here a data folder that does not exist) has no usage block either."""
    line = one_line(capsys, "nas-search", ["--data", tmp_path / "nowhere", "--out", tmp_path / "run"])
    assert "does not exist" in line and not line.endswith("(see --help)")


def test_the_installed_console_script_prints_one_line_too(tmp_path):
    result = subprocess.run([str(Path(sys.executable).parent / "nas-report"), "--run", tmp_path, "--foo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "nas-report: error: unrecognized arguments: --foo (see --help)\n"


# ----------------------------------------------------------------------------- versions, names, licence

@pytest.mark.parametrize("prog", PROGS)
def test_every_command_says_its_version(capsys, prog):
    code, out, err = call(capsys, main_of(prog), "--version")
    assert code == 0 and err == ""
    assert out == f"{prog} {nas.__version__}\n"


def test_the_package_version_is_the_distributions():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert nas.__version__ == project["version"]
    try:
        assert nas.__version__ == importlib.metadata.version("resunet-nas")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        pass


def test_dir_lists_the_public_names_and_no_private_helpers():
    names = dir(nas)
    assert set(nas.__all__) <= set(names) and "__version__" in names
    assert {"load_checkpoint", "run_search", "SearchConfig", "load_run", "open_run"} <= set(names)
    assert not [name for name in names if name.startswith("_") and not name.startswith("__")]
    for name in nas.__all__:  # every listed name resolves
        assert getattr(nas, name) is not None


def test_the_package_carries_its_licence():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (PROJECT_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "resunet-nas authors" in text
