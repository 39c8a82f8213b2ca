"""Every bad input of docs/bad_inputs.md, against the real CLI entry points (in-process, fast).

Each refusal: exit code 2, one error line on stderr (after argparse's usage block), a message naming
the problem, and nothing written. A pickle is refused without ever being unpickled: the pickles
here would create a marker file if anything loaded them.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import NO_FAMILY, call, make_study
import torch
from PIL import Image

from nas import save_checkpoint
from nas.data.loading import Normalization
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

SPEC = ResUNetSpec(encoder_widths=(4, 8, 16), decoder_widths=(4, 8))
NORM = Normalization((0.5,), (0.25,))
TINY = ["--trials", "1", "--epochs", "1", "--image-size", "32", "--device", "cpu"]


# ----------------------------------------------------------------------------- helpers

def assert_refused(code: int, err: str, prog: str, *needles: str) -> str:
    """Exit 2 and exactly one error line (argparse's usage block may precede it); returns the line."""
    assert code == 2, err
    lines = err.strip().splitlines()
    usage = lines[:-1]
    assert not usage or (usage[0].startswith("usage:") and all(line.startswith(" ") for line in usage[1:])), err
    line = lines[-1]
    assert line.startswith(f"{prog}: error: "), err
    for needle in needles:
        assert needle in line, line
    return line


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file (and "dir" for folders) under ``root``."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


class Exploit:
    """Unpickling this creates ``marker``: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a checkpoint ran"))


def make_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    model = get_space("resunet").build_model(SPEC, 1, 1).eval()
    return save_checkpoint(folder, model, SPEC, space="resunet", in_channels=1, out_channels=1,
                           normalization=NORM, metrics={"dice": 0.5, "input_shape": [1, 1, 32, 32]})


def set_weights(folder: Path, data: bytes, *, rehash: bool) -> None:
    """Replace ``model.safetensors``; ``rehash`` makes metrics.json vouch for the new bytes."""
    (folder / "model.safetensors").write_bytes(data)
    if rehash:
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["weights_sha256"] = hashlib.sha256(data).hexdigest()
        (folder / "metrics.json").write_text(json.dumps(metrics))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def make_data(root: Path, n: int = 3, *, size=(32, 32), mask_size=None, mask_values=(0, 255),
              missing_mask: str | None = None) -> Path:
    """images/ + masks/ with ``n`` tiny grey PNGs; knobs break one thing each."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        if missing_mask == f"im{i}":
            continue
        mask = np.full(mask_size or size, mask_values[0], np.uint8)
        mask[:8, :8] = mask_values[1]
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "trial_0000")


@pytest.fixture
def ckpt(pristine, tmp_path) -> Path:
    """A fresh copy of a valid checkpoint at ``<tmp>/run/best/trial_0000``, to break."""
    return Path(shutil.copytree(pristine, tmp_path / "run" / "best" / "trial_0000"))


def search(capsys, tmp_path, *args):
    from nas.cli.search import main

    return call(capsys, main, *args, "--out", tmp_path / "out")


# ----------------------------------------------------------------------------- nas-search: the space

def test_unknown_space(tmp_path, capsys):
    code, _, err = search(capsys, tmp_path, "--space", "unet3000", *TINY)
    assert_refused(code, err, "nas-search", "unknown search space 'unet3000'", "resunet")
    assert not (tmp_path / "out").exists()


def test_unknown_baseline_preset(tmp_path, capsys):
    code, _, err = search(capsys, tmp_path, "--baselines", "unet-17", *TINY)
    assert_refused(code, err, "nas-search", "unknown preset 'unet-17'", "unet-16")
    assert not (tmp_path / "out").exists()


def test_fix_of_an_unknown_dimension(tmp_path, capsys):
    code, _, err = search(capsys, tmp_path, "--fix", "colour=red", *TINY)
    assert_refused(code, err, "nas-search", "--fix colour: unknown dimension", "depth")
    assert not (tmp_path / "out").exists()


def test_fix_value_out_of_range(tmp_path, capsys):
    code, _, err = search(capsys, tmp_path, "--fix", "depth=9", *TINY)
    assert_refused(code, err, "nas-search", "--fix depth=9", "3..6", "got 9")
    assert not (tmp_path / "out").exists()


def test_choices_value_out_of_range(tmp_path, capsys):
    code, _, err = search(capsys, tmp_path, "--choices", "depth=2,3", *TINY)
    assert_refused(code, err, "nas-search", "--choices depth=2,3", "got 2")
    assert not (tmp_path / "out").exists()


def test_toml_config_with_an_unknown_table(tmp_path, capsys):
    config = tmp_path / "space.toml"
    config.write_text("[fixes]\ndepth = 4\n")
    code, _, err = search(capsys, tmp_path, "--config", config, *TINY)
    assert_refused(code, err, "nas-search", "unknown key(s) ['fixes']", "[fix], [choices]")
    assert not (tmp_path / "out").exists()


def test_toml_config_with_an_unknown_dimension(tmp_path, capsys):
    config = tmp_path / "space.toml"
    config.write_text("[fix]\ndepht = 4\n")
    code, _, err = search(capsys, tmp_path, "--config", config, *TINY)
    assert_refused(code, err, "nas-search", "[fix] depht: unknown dimension")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- nas-search: numbers

@pytest.mark.parametrize("flag, value, needle", [
    ("--trials", "0", "argument --trials: must be >= 1, got 0"),
    ("--epochs", "-1", "argument --epochs: must be >= 1, got -1"),
    ("--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
    ("--max-macs", "0", "argument --max-macs"),
    ("--max-latency-ms", "-5", "argument --max-latency-ms: must be > 0, got -5"),
    ("--max-pruned-in-a-row", "0", "argument --max-pruned-in-a-row: must be >= 1"),
])
def test_zero_or_negative_search_numbers(tmp_path, capsys, flag, value, needle):
    args = [*TINY, flag, value]  # the flag given last wins over TINY's
    code, _, err = search(capsys, tmp_path, *args)
    assert_refused(code, err, "nas-search", needle)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- nas-search: data

def test_data_folder_missing(tmp_path, capsys):
    code, _, err = search(capsys, tmp_path, "--data", tmp_path / "nowhere", *TINY)
    assert_refused(code, err, "nas-search", f"data folder {tmp_path / 'nowhere'} does not exist")
    assert not (tmp_path / "out").exists()


def test_data_folder_empty(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    before = snapshot(tmp_path)
    code, _, err = search(capsys, tmp_path, "--data", tmp_path / "empty", *TINY)
    assert_refused(code, err, "nas-search", "has no images/ folder")
    assert snapshot(tmp_path) == before


def test_data_folder_with_no_images(tmp_path, capsys):
    make_data(tmp_path / "data", n=0)
    before = snapshot(tmp_path)
    code, _, err = search(capsys, tmp_path, "--data", tmp_path / "data", *TINY)
    assert_refused(code, err, "nas-search", "no images in", "images")
    assert snapshot(tmp_path) == before


def test_image_without_mask(tmp_path, capsys):
    make_data(tmp_path / "data", missing_mask="im1")
    before = snapshot(tmp_path)
    code, _, err = search(capsys, tmp_path, "--data", tmp_path / "data", *TINY)
    assert_refused(code, err, "nas-search", "im1.png has no mask", "'im1'")
    assert snapshot(tmp_path) == before


def test_mask_of_another_size(tmp_path, capsys):
    make_data(tmp_path / "data", mask_size=(30, 32))
    before = snapshot(tmp_path)
    code, _, err = search(capsys, tmp_path, "--data", tmp_path / "data", *TINY)
    assert_refused(code, err, "nas-search", "masks/im0.png is 32x30 but image", "is 32x32")
    assert snapshot(tmp_path) == before


def test_non_binary_mask(tmp_path, capsys):
    make_data(tmp_path / "data", mask_values=(0, 128))
    before = snapshot(tmp_path)
    code, _, err = search(capsys, tmp_path, "--data", tmp_path / "data", *TINY)
    assert_refused(code, err, "nas-search", "masks/im0.png is not binary: values 0, 128")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("broken", ["images", "masks"])
def test_unreadable_image_or_mask_file(tmp_path, capsys, broken):
    data = make_data(tmp_path / "data")
    (data / broken / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a PNG cut short
    before = snapshot(tmp_path)
    code, _, err = search(capsys, tmp_path, "--data", data, *TINY)
    what = "image" if broken == "images" else "mask"
    assert_refused(code, err, "nas-search", f"cannot read {what} {data / broken / 'im2.png'}")
    assert snapshot(tmp_path) == before


def test_a_pickled_npy_volume_is_never_unpickled(tmp_path, capsys):
    data, marker = tmp_path / "data", tmp_path / "marker"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for i in range(2):
        np.save(data / "images" / f"v{i}.npy", np.array([Exploit(marker)], dtype=object), allow_pickle=True)
        np.save(data / "masks" / f"v{i}.npy", np.zeros((4, 8, 8), np.uint8))
    before = snapshot(tmp_path)
    code, _, err = search(capsys, tmp_path, "--data", data, *TINY)
    assert_refused(code, err, "nas-search", f"cannot read image {data / 'images' / 'v0.npy'}", "allow_pickle")
    assert not marker.exists() and snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- nas-search: constraints

@pytest.mark.slow
def test_constraints_no_architecture_meets_stop_after_n_pruned_without_training(tmp_path, capsys):
    """Not a refusal (the limits are only known to be impossible after sampling): exit 1, quickly."""
    code, _, err = search(capsys, tmp_path, *TINY, *NO_FAMILY, "--fix", "depth=3", "--max-macs", "1k",
                          "--max-pruned-in-a-row", "3")
    assert code == 1, err
    line = next(line for line in err.splitlines() if line.startswith("nas-search: stopped:"))
    assert "the last 3 sampled architectures all violate the constraints" in line and "--max-macs" in line
    rows = (tmp_path / "out" / "trials.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == 3  # stopped after exactly N infeasible samples
    assert not (tmp_path / "out" / "trials").exists()  # nothing was trained


# ----------------------------------------------------------------------------- nas-profile

def test_profile_unknown_preset(capsys):
    from nas.cli.profile import main

    code, out, err = call(capsys, main, "--preset", "resunet-huge")
    assert_refused(code, err, "nas-profile", "unknown preset 'resunet-huge'", "resunet-standard")
    assert out == ""


@pytest.mark.parametrize("flag, value", [("--image-size", "0"), ("--repeats", "0"), ("--batch-size", "-2")])
def test_profile_zero_or_negative_numbers(capsys, flag, value):
    from nas.cli.profile import main

    code, _, err = call(capsys, main, "--preset", "unet-16", flag, value)
    assert_refused(code, err, "nas-profile", f"argument {flag}: must be >= 1, got {value}")


def test_profile_spec_file_that_is_a_pickle(tmp_path, capsys):
    from nas.cli.profile import main

    marker = tmp_path / "marker"
    torch.save({"model": Exploit(marker)}, tmp_path / "model.pt")
    code, _, err = call(capsys, main, "--spec", tmp_path / "model.pt")
    assert_refused(code, err, "nas-profile", "model.pt: not valid JSON")
    assert not marker.exists()


# ----------------------------------------------------------------------------- checkpoints

def test_truncated_weights_fail_the_hash_check(ckpt, capsys):
    """Cut to 200 bytes: refused by its size before it is hashed; cut by a few bytes: by the hash."""
    from nas.cli.export import main

    weights = ckpt / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:200])
    before = snapshot(ckpt.parent)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--format", "onnx")
    assert_refused(code, err, "nas-export", "model.safetensors: not a readable safetensors file for spec.json: "
                                            "200 bytes")
    weights.write_bytes(whole[:-16])
    before = snapshot(ckpt.parent)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--format", "onnx")
    assert_refused(code, err, "nas-export", "model.safetensors: content hash does not match metrics.json")
    assert snapshot(ckpt.parent) == before


def test_corrupt_weights_that_metrics_vouch_for(ckpt, capsys):
    """The hash matches (metrics.json rewritten too), so the safetensors parser itself must refuse."""
    from nas.cli.export import main

    set_weights(ckpt, (ckpt / "model.safetensors").read_bytes()[:200], rehash=True)
    before = snapshot(ckpt.parent)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--format", "safetensors",
                        "--out", ckpt.parent / "copy.safetensors")
    assert_refused(code, err, "nas-export", "model.safetensors: not a readable safetensors file")
    assert snapshot(ckpt.parent) == before


def test_weights_swapped_for_another_model(ckpt, tmp_path, capsys):
    from nas.cli.compress import main

    torch.manual_seed(1)  # a valid safetensors file with other weights
    model = get_space("resunet").build_model(SPEC, 1, 1)
    other = save_checkpoint(tmp_path / "other", model, SPEC, space="resunet", in_channels=1, out_channels=1,
                            normalization=NORM)
    shutil.copyfile(other / "model.safetensors", ckpt / "model.safetensors")
    before = snapshot(tmp_path)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--data", "synthetic", "--no-quantize")
    assert_refused(code, err, "nas-compress", "content hash does not match metrics.json")
    assert snapshot(tmp_path) == before


def test_spec_from_a_newer_schema(ckpt, image_dir, tmp_path, capsys):
    from nas.cli.predict import main

    edit_json(ckpt / "spec.json", lambda header: header["spec"].update(schema_version=99))
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--input", image_dir, "--out", tmp_path / "masks")
    assert_refused(code, err, "nas-predict", "schema_version 99 is newer than this tool")
    assert not (tmp_path / "masks").exists()


def test_checkpoint_format_from_a_newer_version(ckpt, capsys):
    from nas.cli.export import main

    edit_json(ckpt / "spec.json", lambda header: header.update(format_version=7))
    before = snapshot(ckpt)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--format", "torchscript")
    assert_refused(code, err, "nas-export", "spec.json: format_version 7 is newer than this tool")
    assert snapshot(ckpt) == before


def test_the_exploit_would_run_if_anything_unpickled_it(tmp_path):
    """The control for the pickle tests below: a marker that stays absent means nothing unpickled."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps({"w": Exploit(marker)}))
    assert marker.exists()
    marker.unlink()
    torch.save({"w": Exploit(marker)}, tmp_path / "model.pt")
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("cli", ["nas-predict", "nas-export", "nas-compress"])
def test_model_safetensors_that_is_really_a_pickle_is_never_unpickled(ckpt, image_dir, tmp_path, capsys, cli):
    """metrics.json vouches for the pickle, so only the loader's format check stands in the way."""
    from nas.cli.compress import main as compress_main
    from nas.cli.export import main as export_main
    from nas.cli.predict import main as predict_main

    marker = tmp_path / "marker"
    set_weights(ckpt, pickle.dumps({"head.weight": Exploit(marker)}), rehash=True)
    before = snapshot(tmp_path)
    args = {"nas-predict": (predict_main, "--input", image_dir, "--out", tmp_path / "masks"),
            "nas-export": (export_main, "--format", "onnx"),
            "nas-compress": (compress_main, "--data", "synthetic", "--no-quantize")}[cli]
    code, _, err = call(capsys, args[0], "--checkpoint", ckpt, *args[1:])
    assert_refused(code, err, cli, "model.safetensors: not a readable safetensors file")
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_the_installed_console_script_refuses_a_pickle_too(ckpt, image_dir, tmp_path):
    """One case end to end through the real executable, as a user runs it."""
    import subprocess
    import sys

    marker = tmp_path / "marker"
    set_weights(ckpt, pickle.dumps({"head.weight": Exploit(marker)}), rehash=True)
    result = subprocess.run([str(Path(sys.executable).parent / "nas-predict"), "--checkpoint", str(ckpt),
                             "--input", str(image_dir), "--out", str(tmp_path / "masks")],
                            capture_output=True, text=True, timeout=300)
    assert_refused(result.returncode, result.stderr, "nas-predict", "not a readable safetensors file")
    assert result.stdout == "" and not marker.exists() and not (tmp_path / "masks").exists()


def test_a_torch_save_file_as_checkpoint_is_never_unpickled(tmp_path, capsys):
    from nas.cli.export import main

    marker = tmp_path / "marker"
    torch.save({"state_dict": Exploit(marker)}, tmp_path / "model.pth")
    before = snapshot(tmp_path)
    code, _, err = call(capsys, main, "--checkpoint", tmp_path / "model.pth", "--format", "onnx")
    assert_refused(code, err, "nas-export", "model.pth: not a checkpoint folder",
                   "pickled checkpoints are never loaded")
    assert not marker.exists() and snapshot(tmp_path) == before


def test_a_folder_with_pt_weights_instead_of_safetensors(ckpt, tmp_path, capsys):
    from nas.cli.compress import main

    marker = tmp_path / "marker"
    (ckpt / "model.safetensors").unlink()
    torch.save({"state_dict": Exploit(marker)}, ckpt / "model.pt")
    before = snapshot(tmp_path)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--data", "synthetic")
    assert_refused(code, err, "nas-compress", "model.safetensors: missing",
                   "found model.pt: pickled weights are never loaded")
    assert not marker.exists() and snapshot(tmp_path) == before


def test_metrics_json_that_is_not_json(ckpt, image_dir, tmp_path, capsys):
    from nas.cli.predict import main

    (ckpt / "metrics.json").write_text('{"weights_sha256": ')
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--input", image_dir, "--out", tmp_path / "masks")
    assert_refused(code, err, "nas-predict", "metrics.json: not readable JSON")
    assert not (tmp_path / "masks").exists()


# ----------------------------------------------------------------------------- the other CLIs' inputs

def test_predict_unreadable_input_image(ckpt, image_dir, tmp_path, capsys):
    from nas.cli.predict import main

    (image_dir / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--input", image_dir, "--out", tmp_path / "masks")
    assert_refused(code, err, "nas-predict", f"cannot read image {image_dir / 'b.png'}")
    assert not (tmp_path / "masks").exists()  # a.png is fine, yet nothing is written


@pytest.mark.parametrize("flag, value, needle", [
    ("--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
    ("--threshold", "-0.5", "argument --threshold: must be in [0, 1]"),
    ("--image-size", "0", "argument --image-size: must be >= 8"),
])
def test_predict_zero_or_negative_numbers(ckpt, image_dir, tmp_path, capsys, flag, value, needle):
    from nas.cli.predict import main

    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--input", image_dir, "--out", tmp_path / "masks",
                        flag, value)
    assert_refused(code, err, "nas-predict", needle)
    assert not (tmp_path / "masks").exists()


def test_export_input_size_too_small(ckpt, capsys):
    from nas.cli.export import main

    before = snapshot(ckpt)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--format", "onnx", "--image-size", "0")
    assert_refused(code, err, "nas-export", "argument --image-size: must be >= 8, got 0")
    assert snapshot(ckpt) == before


@pytest.mark.parametrize("flag, value, needle", [
    ("--finetune-epochs", "-1", "argument --finetune-epochs: must be >= 0"),
    ("--ratios", "0", "argument --ratios: must be comma-separated shares, each in (0, 1)"),
    ("--batch-size", "0", "argument --batch-size: must be >= 1"),
])
def test_compress_zero_or_negative_numbers(ckpt, tmp_path, capsys, flag, value, needle):
    from nas.cli.compress import main

    before = snapshot(tmp_path)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--data", "synthetic", flag, value)
    assert_refused(code, err, "nas-compress", needle)
    assert snapshot(tmp_path) == before


def test_report_of_a_corrupt_study_db(tmp_path, capsys):
    from nas.cli.report import main

    (tmp_path / "study.db").write_bytes(b"this is not an SQLite database" * 20)
    before = snapshot(tmp_path)
    code, _, err = call(capsys, main, "--run", tmp_path)
    assert_refused(code, err, "nas-report", f"{tmp_path / 'study.db'}: cannot be read", "not a database")
    assert snapshot(tmp_path) == before


def test_report_overlay_images_zero(tmp_path, capsys):
    from nas.cli.report import main

    code, _, err = call(capsys, main, "--run", tmp_path, "--overlay-images", "0")
    assert_refused(code, err, "nas-report", "argument --overlay-images: must be >= 1, got 0")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_report_with_a_pickled_best_checkpoint_refuses_and_never_unpickles(ckpt, tmp_path, capsys):
    """A hostile best/ model is someone else's input (issue 26): one line, exit 2, nothing written, never
    unpickled; --no-overlays loads no model and rebuilds the page."""
    from nas.cli.report import main

    run = make_study(ckpt.parent.parent, SPEC.to_dict())
    marker = tmp_path / "marker"
    set_weights(ckpt, pickle.dumps({"head.weight": Exploit(marker)}), rehash=True)
    before = snapshot(run)
    code, out, err = call(capsys, main, "--run", run, "--overlay-images", "1")
    assert_refused(code, err, "nas-report", "model.safetensors: not a readable safetensors file", "--no-overlays")
    assert not marker.exists() and snapshot(run) == before
    code, out, err = call(capsys, main, "--run", run, "--no-overlays")
    assert code == 0 and (run / "report.html").exists() and not marker.exists(), err


def test_compress_data_the_checkpoint_cannot_take(ckpt, tmp_path, capsys):
    """Issue 16: RGB data for a grey checkpoint (or volumes for a 2D model) is one line, before any write."""
    from nas.cli.compress import main

    rgb = tmp_path / "rgb"
    make_data(rgb, n=4)
    for path in (rgb / "images").glob("*.png"):
        Image.open(path).convert("RGB").save(path)
    before = snapshot(tmp_path)
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--data", rgb, "--no-quantize")
    assert_refused(code, err, "nas-compress", "3 channel(s)", "takes 1")
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--data", "synthetic:volumes", "--no-quantize")
    assert_refused(code, err, "nas-compress", "3D data", "2D model")
    assert snapshot(tmp_path) == before
