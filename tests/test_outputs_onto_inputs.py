"""Outputs never land on inputs (issue 26): every command that writes refuses an output that is, lies
inside or contains one of its inputs, or lies in a folder another command manages (a run's ``best/``
and ``trials/``, a data folder, a checkpoint), and an empty ``--out ''``: one line on stderr, exit
code 2, nothing written (the folder's listing and every file's bytes are the same after).

Each CLI's ``main`` runs in-process; no test trains or exports anything.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import call, make_study
from test_bad_inputs import SPEC, ckpt, make_checkpoint, make_data, pristine, snapshot  # noqa: F401

import nas
from nas.cli import compress, export, predict, search
from nas.run.places import managed_folders, overlap_problem


def refused(capsys, root: Path, main, prog: str, *args, needle: str) -> str:
    """Exit 2, exactly one stderr line naming ``needle``, nothing on stdout, ``root`` unchanged (an old
    spelling's deprecation note, ``PROG: note: ...``, may precede the line)."""
    before = snapshot(root)
    code, out, err = call(capsys, main, *args)
    lines = [line for line in err.strip().splitlines() if not line.startswith(f"{prog}: note: ")]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") and needle in lines[0], err
    assert out == "" and snapshot(root) == before
    return lines[0]


@pytest.fixture
def run(tmp_path) -> Path:
    """A run folder as nas-search leaves it (study.db), with ``trials/trial_0000`` and its ``best/`` copy."""
    folder = tmp_path / "search_run"  # beside ckpt's <tmp>/run, which holds no study
    folder.mkdir()
    make_study(folder, SPEC.to_dict())
    trial = make_checkpoint(folder / "trials" / "trial_0000")
    shutil.copytree(trial, folder / "best" / "trial_0000")
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path / "data")


# ----------------------------------------------------------------------------- nas-search --out

def test_search_out_inside_its_data_folder(tmp_path, capsys, data):
    refused(capsys, tmp_path, search.main, "nas-search", "--data", data, "--out", data / "run",
            needle=f"--out {data / 'run'} is inside the data folder {data}")


def test_search_out_that_contains_its_data_folder(tmp_path, capsys):
    data = make_data(tmp_path / "project" / "data")
    refused(capsys, tmp_path, search.main, "nas-search", "--data", data, "--out", tmp_path / "project",
            needle="contains the data folder")


def test_search_out_inside_a_data_folder_it_does_not_read(tmp_path, capsys, data):
    refused(capsys, tmp_path, search.main, "nas-search", "--data", "synthetic", "--out", data / "masks" / "run",
            needle=f"is inside the data folder {data}")


def test_search_out_inside_another_runs_best(tmp_path, capsys, run):
    refused(capsys, tmp_path, search.main, "nas-search", "--out", run / "best" / "new",
            needle=f"is inside the run folder {run / 'best'}")


def test_search_out_inside_another_runs_trials(tmp_path, capsys, run):
    refused(capsys, tmp_path, search.main, "nas-search", "--out", run / "trials" / "new",
            needle=f"is inside the run folder {run / 'trials'}")


def test_search_storage_file_inside_its_data_folder(tmp_path, capsys, data):
    line = refused(capsys, tmp_path, search.main, "nas-search", "--data", data, "--out", tmp_path / "run",
                   "--storage", f"sqlite:///{data / 'images' / 'study.db'}", needle=f"is inside the data folder {data}")
    assert line.startswith(f"nas-search: error: --storage {data / 'images' / 'study.db'} is inside")


def test_search_empty_out_is_refused_not_read_as_the_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(capsys, tmp_path, search.main, "nas-search", "--out", "", needle="argument --out: '' is empty")
    assert not (tmp_path / "runs").exists()


def test_search_empty_out_from_python_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(nas.SearchError, match="--out '' is empty"):
        nas.run_search(nas.SearchConfig(out=""))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- nas-compress --out

def test_compress_out_into_a_runs_best(tmp_path, capsys, run):
    refused(capsys, tmp_path, compress.main, "nas-compress", "--checkpoint", run / "trials" / "trial_0000",
            "--data", "synthetic", "--out", run / "best" / "small", needle=f"is inside the run folder {run / 'best'}")


def test_compress_out_into_a_runs_trials(tmp_path, capsys, run):
    refused(capsys, tmp_path, compress.main, "nas-compress", "--run", run, "--data", "synthetic",
            "--out", run / "trials", needle=f"is inside the run folder {run / 'trials'}")


def test_compress_out_around_the_checkpoints_it_reads(tmp_path, capsys, run):
    refused(capsys, tmp_path, compress.main, "nas-compress", "--run", run, "--data", "synthetic",
            "--out", run / "best", needle="contains the checkpoint folder")


def test_compress_out_is_the_checkpoint(tmp_path, capsys, run):
    folder = run / "trials" / "trial_0000"
    refused(capsys, tmp_path, compress.main, "nas-compress", "--checkpoint", folder, "--data", "synthetic",
            "--out", folder, needle=f"is the checkpoint folder {folder}")


def test_compress_out_inside_the_data_folder(tmp_path, capsys, ckpt, data):
    refused(capsys, tmp_path, compress.main, "nas-compress", "--checkpoint", ckpt, "--data", data,
            "--out", data / "compressed", needle=f"is inside the data folder {data}")


def test_compress_empty_out_is_refused_not_read_as_the_default(tmp_path, capsys, ckpt):
    refused(capsys, tmp_path, compress.main, "nas-compress", "--checkpoint", ckpt, "--data", "synthetic",
            "--out", "", needle="argument --out: '' is empty")


# ----------------------------------------------------------------------------- nas-export --out

@pytest.mark.parametrize("fmt, name", [("onnx", "spec.json"), ("onnx", "metrics.json"), ("onnx", "README.md"),
                                       ("torchscript", "model.safetensors"), ("torchscript", "model.onnx")])
def test_export_over_a_verified_file_of_its_checkpoint(tmp_path, capsys, ckpt, fmt, name):
    (ckpt / name).touch()  # README.md and model.onnx exist in a deployed checkpoint
    refused(capsys, tmp_path, export.main, "nas-export", "--checkpoint", ckpt, "--format", fmt,
            "--out", ckpt / name, needle=f"is a file of the checkpoint itself ({name})")


def test_export_over_a_file_of_another_checkpoint(tmp_path, capsys, ckpt):
    other = make_checkpoint(tmp_path / "other")
    refused(capsys, tmp_path, export.main, "nas-export", "--checkpoint", ckpt, "--format", "onnx",
            "--out", other / "model.onnx", needle=f"is a file of the checkpoint {other} (model.onnx)")
    refused(capsys, tmp_path, export.main, "nas-export", "--checkpoint", ckpt, "--format", "torchscript",
            "--out", other / "model.ts", needle=f"is inside the checkpoint folder {other}")


def test_export_into_a_runs_best(tmp_path, capsys, ckpt, run):
    refused(capsys, tmp_path, export.main, "nas-export", "--checkpoint", ckpt, "--format", "onnx",
            "--out", run / "best" / "model.onnx", needle=f"is inside the run folder {run / 'best'}")


def test_export_onto_the_checkpoint_folder_itself(tmp_path, capsys, ckpt):
    refused(capsys, tmp_path, export.main, "nas-export", "--checkpoint", ckpt, "--format", "onnx",
            "--out", ckpt, needle="contains a file of the checkpoint itself")


def test_export_empty_out_is_refused_not_read_as_the_default(tmp_path, capsys, ckpt):
    refused(capsys, tmp_path, export.main, "nas-export", "--checkpoint", ckpt, "--format", "onnx",
            "--out", "", needle="argument --out: '' is empty")


def test_export_of_the_weights_onto_themselves_is_still_the_no_op_default(tmp_path, capsys, ckpt):
    before = snapshot(tmp_path)
    code, out, err = call(capsys, export.main, "--checkpoint", ckpt, "--format", "safetensors")
    assert code == 0 and "wrote" in out, err
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- nas-predict --out

def _predict(*args):
    return [predict.main, "nas-predict", *args]


def test_predict_out_into_the_masks_of_a_data_folder(tmp_path, capsys, ckpt, data):
    refused(capsys, tmp_path, *_predict("--checkpoint", ckpt, "--input", data / "images", "--out", data / "masks"),
            needle=f"is inside the data folder {data}")


def test_predict_out_that_contains_the_input_folder(tmp_path, capsys, ckpt, data):
    refused(capsys, tmp_path, *_predict("--checkpoint", ckpt, "--input", data / "images", "--out", data),
            needle=f"contains the input folder {data / 'images'}")


def test_predict_out_inside_the_input_folder(tmp_path, capsys, ckpt, image_dir):
    refused(capsys, tmp_path, *_predict("--checkpoint", ckpt, "--input", image_dir, "--out", image_dir / "masks"),
            needle=f"is inside the input folder {image_dir}")


@pytest.mark.parametrize("where", ["the folder", "inside it"])
def test_predict_out_is_or_is_inside_the_checkpoint(tmp_path, capsys, ckpt, image_dir, where):
    out = ckpt if where == "the folder" else ckpt / "masks"
    refused(capsys, tmp_path, *_predict("--checkpoint", ckpt, "--input", image_dir, "--out", out),
            needle=f"the checkpoint folder {ckpt}")


def test_predict_out_inside_a_runs_best(tmp_path, capsys, ckpt, image_dir, run):
    refused(capsys, tmp_path, *_predict("--checkpoint", ckpt, "--input", image_dir, "--out", run / "best" / "masks"),
            needle=f"is inside the run folder {run / 'best'}")


@pytest.mark.parametrize("flag", ["--out", "--output"])
def test_predict_empty_out_is_refused(tmp_path, capsys, ckpt, image_dir, monkeypatch, flag):
    monkeypatch.chdir(image_dir)  # read as ".", the masks would land beside the images
    refused(capsys, tmp_path, *_predict("--checkpoint", ckpt, "--input", image_dir, flag, ""),
            needle="argument --out: '' is empty")


# ----------------------------------------------------------------------------- the one rule

def test_the_rule_compares_resolved_paths_both_ways_for_inputs_one_way_for_managed(tmp_path, run):
    data = make_data(tmp_path / "d")
    inputs = [("the data folder", data)]
    assert overlap_problem("--out", tmp_path / "elsewhere", inputs) is None  # a sibling is fine
    assert "is the data folder" in overlap_problem("--out", f"{data}/../d/.", inputs)
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    assert "is inside the data folder" in overlap_problem("--out", tmp_path / "link" / "x", inputs)
    assert "contains the data folder" in overlap_problem("--out", tmp_path, inputs)
    assert "is empty" in overlap_problem("--out", "", inputs)
    assert managed_folders(run / "compressed" / "v", mine=("compressed",)) == []  # nas-compress's own folder
    assert managed_folders(tmp_path / "run2") == []  # a run beside another run, or a new one
    assert [what for what, _ in managed_folders(run / "best" / "x")] == [
        f"the run folder {run / 'best'} (nas-search and nas-finalize rebuild it whole)"]
