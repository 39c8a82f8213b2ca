"""The one CLI layer: renamed flags keep their old spellings (with a note), every numeric flag of every
command refuses NaN, infinity and out-of-range values before anything is written, a bad --storage
leaves no run folder behind, and ``SearchConfig`` checks a Python caller's values the same way."""
from __future__ import annotations

import importlib
import json
import math
from dataclasses import fields

import pytest
from conftest import call
from test_bad_inputs import assert_refused, make_checkpoint, snapshot

from nas.train.inference import MAX_OVERLAP
from nas.run.limits import Range, integers, numbers, pixel_budget_problem
from nas.run.search_config import LIMITS, SearchConfig, SearchError

TINY = ["--trials", "1", "--epochs", "1", "--image-size", "32", "--device", "cpu"]
COMMANDS = {"nas-search": "search", "nas-profile": "profile", "nas-report": "report", "nas-export": "export",
            "nas-predict": "predict", "nas-compress": "compress"}


def cli(name: str):
    return importlib.import_module(f"nas.cli.{COMMANDS[name]}")


# ----------------------------------------------------------------------------- renamed flags

RENAMED = [  # command, the other flags it needs, old spelling, new spelling, value(s)
    ("nas-profile", ["--preset", "unet-16"], "--input-size", "--image-size", ["32"]),
    ("nas-profile", ["--preset", "unet-16"], "--batch", "--batch-size", ["2"]),
    ("nas-export", ["--checkpoint", "c", "--format", "onnx"], "--input-size", "--image-size", ["40", "48"]),
    ("nas-export", ["--checkpoint", "c", "--format", "onnx"], "--output", "--out", ["m.onnx"]),
    ("nas-predict", ["--checkpoint", "c", "--input", "i"], "--output", "--out", ["masks"]),
    ("nas-predict", ["--checkpoint", "c", "--input", "i", "--out", "o"], "--patch-size", "--image-size", ["48"]),
]


@pytest.mark.parametrize("prog, base, old, new, values", RENAMED, ids=[f"{r[0]} {r[2]}" for r in RENAMED])
def test_an_old_spelling_parses_like_the_new_one_and_says_so(capsys, prog, base, old, new, values):
    parser = cli(prog).build_parser()
    with_new = parser.parse_args([*base, new, *values])
    assert capsys.readouterr().err == ""
    with_old = parser.parse_args([*base, old, *values])
    assert capsys.readouterr().err == f"{prog}: note: {old} is deprecated; use {new}\n"
    assert with_old == with_new


def test_the_same_idea_has_the_same_flag_in_every_command():
    """--image-size, --out and --batch-size wherever a command has the idea; no other spelling is shown."""
    for prog in COMMANDS:
        shown = {s for a in cli(prog).build_parser()._actions if a.help != "==SUPPRESS==" for s in a.option_strings}
        assert not shown & {"--input-size", "--patch-size", "--output", "--batch"}, prog
    for prog in ("nas-search", "nas-profile", "nas-export", "nas-predict", "nas-compress"):
        assert "--image-size" in cli(prog).build_parser().format_help()


def test_old_spellings_still_run_end_to_end(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    code, out, err = call(capsys, cli("nas-profile").main, "--preset", "unet-16", "--input-size", "32",
                          "--batch", "2", "--repeats", "1", "--warmup", "0", "--device", "cpu", "--json")
    assert code == 0 and json.loads(out)["input_shape"] == [2, 1, 32, 32]
    assert err.splitlines() == ["nas-profile: note: --input-size is deprecated; use --image-size",
                                "nas-profile: note: --batch is deprecated; use --batch-size"]
    code, _, err = call(capsys, cli("nas-export").main, "--checkpoint", ckpt, "--format", "onnx",
                        "--input-size", "32", "--output", tmp_path / "m.onnx")
    assert code == 0 and (tmp_path / "m.onnx").is_file() and "--output is deprecated; use --out" in err
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(_png())
    code, _, err = call(capsys, cli("nas-predict").main, "--checkpoint", ckpt, "--input", tmp_path / "in",
                        "--output", tmp_path / "masks", "--patch-size", "32", "--device", "cpu")
    assert code == 0 and (tmp_path / "masks" / "a.png").is_file(), err
    assert "--patch-size is deprecated; use --image-size" in err


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- numbers

BASE = {  # what each command needs besides the bad flag; argument types refuse before any of it is read
    "nas-search": ["--out", "{tmp}/out", *TINY],
    "nas-profile": ["--preset", "unet-16", "--device", "cpu"],
    "nas-report": ["--run", "{tmp}"],
    "nas-export": ["--checkpoint", "{tmp}/ckpt", "--format", "onnx"],
    "nas-predict": ["--checkpoint", "{tmp}/ckpt", "--input", "{tmp}/in", "--out", "{tmp}/masks"],
    "nas-compress": ["--checkpoint", "{tmp}/ckpt", "--data", "synthetic", "--out", "{tmp}/out"],
}
BAD_NUMBERS = [  # command, flag, value, what the error line says
    ("nas-search", "--lr", "nan", "argument --lr: must be a finite number, got nan"),
    ("nas-search", "--lr", "inf", "argument --lr: must be a finite number, got inf"),
    ("nas-search", "--warmup-fraction", "nan", "argument --warmup-fraction: must be a finite number"),
    ("nas-search", "--val-fraction", "-inf", "argument --val-fraction: must be a finite number"),
    ("nas-search", "--foreground-fraction", "1.5", "argument --foreground-fraction: must be in [0, 1], got 1.5"),
    ("nas-search", "--contrast", "nan", "argument --contrast: must be a finite number"),
    ("nas-search", "--elastic", "inf", "argument --elastic: must be a finite number"),
    ("nas-search", "--aux-weight", "-1", "argument --aux-weight: must be in [0, 1000], got -1"),
    ("nas-search", "--seed", "-1", "argument --seed: must be >= 0, got -1"),
    ("nas-search", "--seed", "4294967296", "argument --seed: must be <= 4294967295"),
    ("nas-search", "--seed", "1.5", "argument --seed: expected an integer, got '1.5'"),
    ("nas-search", "--image-size", "1000000", "argument --image-size: must be <= 4096"),
    ("nas-search", "--trials", "1e3", "argument --trials: expected an integer"),
    ("nas-search", "--timeout", "nan", "argument --timeout: must be a finite number"),
    ("nas-search", "--timeout", "0", "argument --timeout: must be > 0, got 0"),
    ("nas-search", "--max-latency-ms", "nan", "argument --max-latency-ms: must be a finite number"),
    ("nas-search", "--max-memory-mb", "inf", "argument --max-memory-mb: must be a finite number"),
    ("nas-search", "--max-params", "1e400", "argument --max-params: expected a positive number"),
    ("nas-search", "--max-macs", "1e30", "argument --max-macs: must be <= 1000000000000000000"),
    ("nas-search", "--gpus-per-trial", "nan", "argument --gpus-per-trial: must be a finite number"),
    ("nas-search", "--cpus-per-trial", "0", "argument --cpus-per-trial: must be in (0, 4096], got 0"),
    ("nas-search", "--workers", "100000", "argument --workers: must be <= 1024"),
    ("nas-search", "--max-failures", "0", "argument --max-failures: must be >= 1"),
    ("nas-search", "--early-stop-patience", "0", "argument --early-stop-patience: must be >= 1"),
    ("nas-profile", "--image-size", "100000", "argument --image-size: must be <= 8192"),
    ("nas-profile", "--image-size", "nan", "argument --image-size: expected an integer, got 'nan'"),
    ("nas-profile", "--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
    ("nas-profile", "--repeats", "inf", "argument --repeats: expected an integer"),
    ("nas-profile", "--warmup", "-1", "argument --warmup: must be >= 0"),
    ("nas-profile", "--in-channels", "0", "argument --in-channels: must be >= 1"),
    ("nas-report", "--overlay-images", "nan", "argument --overlay-images: expected an integer"),
    ("nas-report", "--overlay-images", "1000", "argument --overlay-images: must be <= 64"),
    ("nas-export", "--image-size", "0", "argument --image-size: must be >= 8, got 0"),
    ("nas-export", "--image-size", "99999", "argument --image-size: must be <= 8192"),
    ("nas-predict", "--threshold", "nan", "argument --threshold: must be a finite number"),
    ("nas-predict", "--overlap", "inf", "argument --overlap: must be a finite number"),
    ("nas-predict", "--overlap", "0.99", f"argument --overlap: must be in [0, {MAX_OVERLAP:g}]"),
    ("nas-predict", "--image-size", "100000", "argument --image-size: must be <= 8192"),
    ("nas-predict", "--batch-size", "100000", "argument --batch-size: must be <= 4096"),
    ("nas-compress", "--lr", "nan", "argument --lr: must be a finite number"),
    ("nas-compress", "--lr", "0", "argument --lr: must be in (0, 10], got 0"),
    ("nas-compress", "--seed", "-1", "argument --seed: must be >= 0"),
    ("nas-compress", "--ratios", "0.5,nan", "argument --ratios: must be comma-separated shares, each in (0, 1)"),
    ("nas-compress", "--distill-weight", "inf", "argument --distill-weight: must be a finite number"),
    ("nas-compress", "--max-dice-drop", "nan", "argument --max-dice-drop: must be a finite number"),
    ("nas-compress", "--image-size", "5000", "argument --image-size: must be <= 4096"),
    ("nas-compress", "--iterative-steps", "0", "argument --iterative-steps: must be >= 1"),
]


@pytest.mark.parametrize("prog, flag, value, needle", BAD_NUMBERS, ids=[f"{p} {f} {v}" for p, f, v, _ in BAD_NUMBERS])
def test_a_bad_number_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, prog, flag, value, needle):
    before = snapshot(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in BASE[prog]]
    code, out, err = call(capsys, cli(prog).main, *args, f"{flag}={value}")  # = lets "-inf" be a value
    assert_refused(code, err, prog, needle)
    assert out == "" and snapshot(tmp_path) == before


@pytest.mark.parametrize("prog, args", [
    ("nas-search", ["--out", "{tmp}/out", *TINY, "--image-size", "4096", "--batch-size", "8"]),
    ("nas-profile", ["--preset", "unet-16", "--image-size", "8192", "--batch-size", "2"]),
    ("nas-predict", ["--checkpoint", "{tmp}/ckpt", "--input", "{tmp}/in", "--out", "{tmp}/m", "--image-size", "8192",
                     "--batch-size", "4"]),
])
def test_a_size_that_would_need_terabytes_is_refused(tmp_path, capsys, prog, args):
    before = snapshot(tmp_path)
    code, _, err = call(capsys, cli(prog).main, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_refused(code, err, prog, "pixels per batch; at most 67,108,864 (2^26) are allowed")
    assert snapshot(tmp_path) == before


def test_an_export_size_over_the_budget_is_refused(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    before = snapshot(tmp_path)
    code, _, err = call(capsys, cli("nas-export").main, "--checkpoint", ckpt, "--format", "onnx",
                        "--image-size", "8192", "8192", "8")
    assert_refused(code, err, "nas-export", "--image-size 8192 x 8192 x 8 at batch 1")
    code, _, err = call(capsys, cli("nas-export").main, "--checkpoint", ckpt, "--format", "onnx",
                        "--image-size", "32", "32", "32", "32")
    assert_refused(code, err, "nas-export", "--image-size takes S, H W or D H W, got 32 32 32 32")
    assert snapshot(tmp_path) == before


def test_ranges_parse_and_explain():
    assert integers(1, 5).parse("3") == 3 and numbers(0, 1).parse(" 0.5 ") == 0.5
    for text, message in (("nan", "finite"), ("-inf", "finite"), ("x", "expected a number"), ("2", "[0, 1]")):
        with pytest.raises(ValueError, match=message):
            numbers(0, 1).parse(text)
    assert Range(0, 1, low_open=True).problem(0) == "must be in (0, 1], got 0"
    assert integers(0).problem(True) == "expected an integer, got True"
    assert pixel_budget_problem([64, 64], 8) is None and "at batch 2" in pixel_budget_problem([8192, 8192], 2)


# ----------------------------------------------------------------------------- SearchConfig from Python

def test_the_cli_defaults_are_the_config_defaults():
    from nas.cli.search import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args([])) == SearchConfig()


@pytest.mark.parametrize("name", sorted(n for n, r in LIMITS.items() if not r.integer))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_python_caller_cannot_put_a_nan_or_infinity_into_a_study(name, value):
    with pytest.raises(SearchError, match=f"--{name.replace('_', '-')} must be a finite number"):
        SearchConfig(**{name: value})


@pytest.mark.parametrize("name", sorted(n for n, r in LIMITS.items() if r.integer and r.low is not None))
def test_a_python_caller_gets_the_ranges_of_the_flags(name):
    with pytest.raises(SearchError, match=f"--{name.replace('_', '-')} must be >= "):
        SearchConfig(**{name: LIMITS[name].low - 1})


def test_a_config_survives_its_flags():
    from nas.cli.search import build_parser, config_from_args

    config = SearchConfig(data="synthetic:vessels", trials=7, epochs=2, image_size=48, batch_size=4, seed=2**32 - 1,
                          objectives="dice,latency", sampler="random", early_stop=False, timeout=12.5,
                          baselines="unet-16", lr=0.01, warmup_fraction=0.2, early_stop_patience=3, amp=False,
                          channels_last=True, fix={"depth": 3}, choices={"block": ["basic", "plain"]},
                          max_params="500k", max_latency_ms=2.5, max_pruned_in_a_row=4, workers=3)
    assert config.max_params == 500_000 and config.fix == ("depth=3",) and config.choices == ("block=basic,plain",)
    assert config_from_args(build_parser().parse_args(config.to_argv())) == config
    assert SearchConfig().to_argv() == []
    assert {f.name for f in fields(SearchConfig)} - {"worker_id"} <= {
        a.dest for a in build_parser()._actions}


# ----------------------------------------------------------------------------- --storage

@pytest.mark.parametrize("storage, needle", [
    ("foo://x", "unknown storage scheme 'foo'"),
    ("study.db", "--storage must be a URL such as sqlite:///path/study.db, got 'study.db'"),
    ("sqlite:///{tmp}/missing/study.db", "the folder {tmp}/missing does not exist"),
    ("journal:///{tmp}/missing/study.journal", "the folder {tmp}/missing does not exist"),
    ("sqlite:///{tmp}", "is a folder, not a storage file"),
])
def test_a_bad_storage_url_leaves_no_run_folder_or_lock(tmp_path, capsys, storage, needle):
    before = snapshot(tmp_path)
    storage, needle = storage.replace("{tmp}", str(tmp_path)), needle.replace("{tmp}", str(tmp_path))
    code, _, err = call(capsys, cli("nas-search").main, *TINY, "--storage", storage, "--out", tmp_path / "out")
    assert_refused(code, err, "nas-search", needle)
    assert snapshot(tmp_path) == before


def test_a_storage_that_cannot_be_opened_leaves_no_run_folder_or_lock(tmp_path, capsys):
    """The URL looks fine, the file is not a database: found only when opening, after the folder was made."""
    (tmp_path / "garbage.db").write_bytes(b"this is not an SQLite database" * 20)
    before = snapshot(tmp_path)
    code, _, err = call(capsys, cli("nas-search").main, *TINY, "--storage", f"sqlite:///{tmp_path / 'garbage.db'}",
                        "--out", tmp_path / "out")
    assert_refused(code, err, "nas-search", f"--storage sqlite:///{tmp_path / 'garbage.db'}: cannot be opened")
    assert snapshot(tmp_path) == before


def test_a_storage_whose_driver_is_missing_is_named(tmp_path, capsys):
    pytest.importorskip("sqlalchemy")
    try:
        import MySQLdb  # noqa: F401
        pytest.skip("the MySQL driver is installed here")
    except ImportError:
        pass
    code, _, err = call(capsys, cli("nas-search").main, *TINY, "--storage", "mysql://u@localhost/db",
                        "--out", tmp_path / "out")
    assert_refused(code, err, "nas-search", "its database driver is not installed")
    assert not (tmp_path / "out").exists()


def test_report_refuses_a_storage_that_does_not_exist_without_creating_it(tmp_path, capsys):
    for storage, needle in ((f"sqlite:///{tmp_path / 'none.db'}", "does not exist"),
                            ("redis://localhost", "unknown storage scheme 'redis'")):
        code, _, err = call(capsys, cli("nas-report").main, "--run", tmp_path, "--storage", storage)
        assert_refused(code, err, "nas-report", needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["spec.json", "model.safetensors", "metrics.json"])
def test_an_export_never_overwrites_its_own_checkpoint(tmp_path, capsys, name):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    (tmp_path / "link.onnx").symlink_to(ckpt / name)
    before = snapshot(tmp_path)
    for out in (ckpt / name, tmp_path / "link.onnx"):
        code, _, err = call(capsys, cli("nas-export").main, "--checkpoint", ckpt, "--format", "onnx", "--out", out)
        assert_refused(code, err, "nas-export", "is a file of the checkpoint itself")
    assert snapshot(tmp_path) == before
