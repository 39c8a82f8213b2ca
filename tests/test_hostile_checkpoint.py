"""A checkpoint or run folder from someone else is untrusted input (issue 26, docs/bad_inputs.md rows H1-H17).

One tiny real checkpoint (widths 4, 8; saved by ``save_checkpoint``, no training) is copied and one
field corrupted per case: ``nas.load_checkpoint`` raises one ``CheckpointError`` line, and every
command that reads a checkpoint answers with one error line and exit code 2, before anything is
allocated or written. Text from the files is escaped for where it goes: the terminal, the model
card's Markdown, the report's HTML.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import call, make_study
from PIL import Image

from nas import save_checkpoint
from nas.data.normalization import Normalization
from nas.deploy.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info
from nas.io import JsonError, markdown, printable, read_json
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

SPEC = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,))
NORM = Normalization((0.5,), (0.25,))
METRICS = {"dice": 0.5, "threshold": 0.35, "input_shape": [1, 1, 32, 32]}
WIDE = {"encoder_widths": [10**6, 10**6], "decoder_widths": [10**6]}


def save(folder: Path, spec: ResUNetSpec = SPEC, metrics: dict | None = None) -> Path:
    torch.manual_seed(0)
    model = get_space("resunet").build_model(spec, 1, spec.out_channels).eval()
    return save_checkpoint(folder, model, spec, space="resunet", in_channels=1, out_channels=spec.out_channels,
                           normalization=NORM, metrics=dict(METRICS if metrics is None else metrics))


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """A valid checkpoint at ``<tmp>/run/best/trial_0000`` (saved in milliseconds, never trained), to break."""
    return save(tmp_path / "run" / "best" / "trial_0000")


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def rehash(folder: Path) -> None:
    """Make metrics.json vouch for whatever model.safetensors now holds."""
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    edit_json(folder / "metrics.json", lambda m: m.update(weights_sha256=digest))


def sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)  # 50 MB on paper, nothing on disk


def spec(field, value):
    return lambda f: edit_json(f / "spec.json", lambda h: h["spec"].update({field: value}))


def header(**values):
    return lambda f: edit_json(f / "spec.json", lambda h: h.update(values))


def norm(**values):
    return lambda f: edit_json(f / "spec.json", lambda h: h["normalization"].update(values))


def metrics(**values):
    return lambda f: edit_json(f / "metrics.json", lambda m: m.update(values))


def appended(folder: Path) -> None:
    with open(folder / "model.safetensors", "ab") as handle:
        handle.write(b"\0" * (1 << 20))
    rehash(folder)


# case -> (corrupt the folder, a piece of the one error line); the spec.json cases go to nas-profile too
CASES = {
    "threshold 5": (metrics(threshold=5), "metrics.json: threshold must be a number strictly between 0 and 1"),
    "threshold NaN": (metrics(threshold=float("nan")), "metrics.json: threshold must be a number strictly between"),
    "NaN mean": (norm(mean=[float("nan")]), "spec.json: normalization mean must be finite numbers, got [NaN]"),
    "std 0": (norm(std=[0.0]), "spec.json: normalization std must be finite numbers >= 1e-06"),
    "std for 3 channels": (norm(mean=[0.5] * 3, std=[0.2] * 3), "one mean and one std per input channel (1)"),
    "a 10^6-wide spec": (lambda f: edit_json(f / "spec.json", lambda h: h["spec"].update(WIDE)),
                         "spec.json: the architecture has 49,000,026,000,001 parameters"),
    "deeply nested metrics.json": (lambda f: (f / "metrics.json").write_text("[" * 100_000 + "]" * 100_000),
                                   "metrics.json: nested deeper than 32 levels (refused unparsed)"),
    "deeply nested spec.json": (lambda f: (f / "spec.json").write_text('{"a": ' * 5000 + "1" + "}" * 5000),
                                "spec.json: nested deeper than 32 levels"),
    "a 50 MB metrics.json": (lambda f: sparse_file(f / "metrics.json", 50 << 20),
                             "metrics.json: 52,428,800 bytes, more than the 4,194,304"),
    "a 50 MB spec.json": (lambda f: sparse_file(f / "spec.json", 50 << 20), "spec.json: 52,428,800 bytes"),
    "spec.json not UTF-8": (lambda f: (f / "spec.json").write_bytes(b'{"format": "\xff"}'), "JSON (not UTF-8: invalid start byte"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:200]),
                          "model.safetensors: not a readable safetensors file for spec.json: 200 bytes"),
    "1 MB appended to the weights, re-hashed": (appended, "(at most"),
    "threshold edited without re-hashing": (metrics(threshold=0.6),
                                            "metrics.json: threshold 0.6, but the weights were saved with 0.35"),
    "normalization edited": (norm(mean=[0.4]), "spec.json: normalization {\"mean\": [0.4]"),
    "activation edited": (spec("activation", "silu"), "spec.json: activation 'silu', but the weights were saved"),
    "in_channels a string": (header(in_channels="1"), "spec.json: in_channels must be an int in 1..1024, got '1'"),
    "out_channels 3 for a binary spec": (header(out_channels=3), "spec.json: out_channels 3 disagrees with the spec's 1"),
    "space a list": (header(space=["resunet"]), "spec.json: space must be a name"),
    "metrics.json a list": (lambda f: (f / "metrics.json").write_text("[1, 2]"),
                            "metrics.json: expected a JSON object, got list"),
    "input_shape 10^6 px a side": (metrics(input_shape=[1, 1, 10**6, 10**6]), "metrics.json: input_shape must be"),
    "class name with a newline": (metrics(class_names=["background", "fore\nground"]),
                                  "metrics.json: class_names must be 2 distinct names"),
    "weights_sha256 not hex": (metrics(weights_sha256="<script>"), "metrics.json: weights_sha256 must be 64"),
    "finalized dice_ci a string": (metrics(finalized={"dice_ci": "ab"}), "metrics.json: finalized.dice_ci must be"),
}
SPEC_CASES = ("a 10^6-wide spec", "deeply nested spec.json", "a 50 MB spec.json", "spec.json not UTF-8",
              "in_channels a string")


def assert_one_line(code: int, err: str, prog: str, needle: str) -> str:
    """Exit 2, no traceback, and the last stderr line is the one error line (a usage block may precede it)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), err
    assert lines[-1].startswith(f"{prog}: error: ") and needle in lines[-1], lines[-1]
    return lines[-1]


# ----------------------------------------------------------------------------- the library

@pytest.mark.parametrize("case", CASES)
def test_load_checkpoint_refuses_a_hostile_field_with_one_clean_line(ckpt, case):
    corrupt, needle = CASES[case]
    corrupt(ckpt)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(ckpt)
    text = str(caught.value)
    assert needle in text and "\n" not in text and str(ckpt) in text


def test_a_wide_spec_is_refused_before_any_weight_is_allocated(ckpt):
    """Counted on the meta device: the 40 G parameters (160 GB) of widths 30,000 are never allocated."""
    import resource

    edit_json(ckpt / "spec.json", lambda h: h["spec"].update(encoder_widths=[30_000] * 2, decoder_widths=[30_000]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB
    with pytest.raises(CheckpointError, match="at most 2,147,483,648"):
        load_checkpoint(ckpt)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000


def test_the_weights_carry_what_changes_predictions(ckpt):
    from safetensors import safe_open

    with safe_open(ckpt / "model.safetensors", "pt") as handle:
        stored = json.loads(handle.metadata()["predicts"])
    assert stored["threshold"] == 0.35 and stored["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert stored["spec"] == SPEC.to_dict() and stored["in_channels"] == 1 and stored["out_channels"] == 1


def test_a_checkpoint_saved_before_the_weights_carried_it_still_loads(ckpt):
    """Old checkpoints (tests/fixtures/legacy_run_v0) have only ``format`` in the header."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(ckpt / "model.safetensors"), ckpt / "model.safetensors",
              metadata={"format": "resunet-nas-checkpoint"})
    rehash(ckpt)
    edit_json(ckpt / "metrics.json", lambda m: m.update(threshold=0.6))  # nothing to compare it with
    load_checkpoint(ckpt)


def test_edits_that_change_nothing_the_model_predicts_still_load(ckpt):
    """The latency pass, the ONNX record and the finalist stage rewrite metrics.json after saving."""
    edit_json(ckpt / "metrics.json", lambda m: m.update(latency_ms=3.0, finalized={"seed": 1, "why": "best"}))
    model, _ = load_checkpoint(ckpt)
    assert not model.training


# ----------------------------------------------------------------------------- every command

@pytest.mark.parametrize("cli", ["nas-predict", "nas-export", "nas-compress"])
@pytest.mark.parametrize("case", CASES)
def test_every_command_answers_a_hostile_checkpoint_with_one_line_and_exit_2(ckpt, image_dir, tmp_path, capsys,
                                                                            case, cli):
    from nas.cli.compress import main as compress_main
    from nas.cli.export import main as export_main
    from nas.cli.predict import main as predict_main

    corrupt, needle = CASES[case]
    corrupt(ckpt)
    before = sorted(p.name for p in ckpt.iterdir())
    args = {"nas-predict": (predict_main, "--input", image_dir, "--out", tmp_path / "masks"),
            "nas-export": (export_main, "--format", "onnx"),
            "nas-compress": (compress_main, "--data", "synthetic", "--no-quantize")}[cli]
    code, out, err = call(capsys, args[0], "--checkpoint", ckpt, *args[1:])
    assert_one_line(code, err, cli, needle)
    assert sorted(p.name for p in ckpt.iterdir()) == before and not (tmp_path / "masks").exists()
    assert not (tmp_path / "run" / "compressed").exists()


@pytest.mark.parametrize("case", SPEC_CASES)
def test_profile_answers_a_hostile_spec_with_one_line_and_exit_2(ckpt, capsys, case):
    from nas.cli.profile import main

    corrupt, needle = CASES[case]
    corrupt(ckpt)
    code, out, err = call(capsys, main, "--spec", ckpt, "--image-size", "32", "--repeats", "1", "--warmup", "0")
    assert_one_line(code, err, "nas-profile", needle.split(": ", 1)[-1]) and out == ""


def test_profile_refuses_a_bare_spec_too_wide_to_allocate(tmp_path, capsys):
    from nas.cli.profile import main

    (tmp_path / "wide.json").write_text(json.dumps(WIDE))
    code, _, err = call(capsys, main, "--spec", tmp_path / "wide.json")
    assert_one_line(code, err, "nas-profile", "parameters")


def test_predict_onnx_refuses_a_threshold_edited_after_the_export(ckpt, image_dir, tmp_path, capsys):
    """``--onnx`` never loads the weights, but their header still vouches for the threshold it uses."""
    from nas.cli.predict import main
    from nas.deploy.export import export_onnx

    export_onnx(ckpt, ckpt / "model.onnx", input_size=32)
    edit_json(ckpt / "metrics.json", lambda m: m.update(threshold=0.9))
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--onnx", "--input", image_dir, "--out", tmp_path / "m")
    assert_one_line(code, err, "nas-predict", "metrics.json: threshold 0.9, but the weights were saved with 0.35")
    assert not (tmp_path / "m").exists()


def test_finalize_refuses_a_run_whose_study_holds_a_spec_too_wide_to_train(tmp_path, capsys):
    from nas.cli.finalize import main

    run = tmp_path / "run"
    run.mkdir()
    make_study(run, {**SPEC.to_dict(), **WIDE})
    code, _, err = call(capsys, main, "--run", run, "--final-seeds", "1", "--device", "cpu", "--no-overlays")
    assert_one_line(code, err, "nas-finalize", "parameters")
    assert not (run / "finalists").exists()


def test_report_refuses_a_hostile_best_checkpoint_in_one_line(ckpt, capsys):
    """nas-report loads best/ models for the overlays: an edited one is one line, exit 2 (row 37)."""
    from nas.cli.report import main

    run = ckpt.parent.parent
    make_study(run, SPEC.to_dict(), checkpoint="trials/trial_0000")
    edit_json(ckpt / "metrics.json", lambda m: m.update(threshold=0.6))
    code, out, err = call(capsys, main, "--run", run, "--overlay-images", "1")
    assert_one_line(code, err, "nas-report", "threshold 0.6, but the weights were saved with 0.35")
    assert not (run / "report.html").exists()


def test_report_reads_a_run_s_hostile_json_files_as_absent(tmp_path, capsys):
    """finalists.json, trivial.json and latency.json of someone else's run: wrong shapes, too deep,
    too large, a chosen seed folder outside the run: the page is rebuilt without them, no traceback."""
    from nas.cli.report import main
    from nas.stages.finalist_training import finalized, read_summary

    run = tmp_path / "run"
    run.mkdir()
    make_study(run, SPEC.to_dict())
    (run / "finalists").mkdir()
    (run / "finalists" / "finalists.json").write_text(json.dumps({"entrants": [1, "<script>"], "settings": []}))
    (run / "trivial.json").write_text(json.dumps({"splits": {"val": {"dice": 0.5, "constants": {"x": "0.9"}}}}))
    (run / "latency.json").write_text("[" * 10_000 + "]" * 10_000)
    code, out, err = call(capsys, main, "--run", run, "--no-overlays")
    assert code == 0 and "Traceback" not in err, err
    assert (run / "report.html").is_file() and read_summary(run) is None
    (run / "finalists" / "finalists.json").write_text(json.dumps({"entrants": [
        {"key": "trial_0000", "trial": 0, "chosen": {"folder": "../../elsewhere", "seed": 0, "why": "x"}}]}))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "metrics.json").write_text("{}")
    assert finalized(run, "trials/trial_0000") is None  # never deploys a folder outside the run's finalists/


# ----------------------------------------------------------------------------- text from the files, escaped

HOSTILE_NAME = "a|b <script>alert(1)</script> *x* [l](javascript:1)"


def test_the_model_card_escapes_a_hostile_class_name_and_folder_name(tmp_path):
    from nas.deploy.model_card import render_model_card

    k3 = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,), num_classes=3)
    folder = save(tmp_path / "trial`\n```\n<img src=x>", k3, {
        "dice": 0.5, "input_shape": [1, 1, 32, 32], "class_names": ["background", HOSTILE_NAME, "c"],
        "per_class": {HOSTILE_NAME: {"dice": 0.4, "iou": 0.3}}, "train_device": "cpu | <b>"})
    card = render_model_card(folder)
    prose = re.sub(r"```\w*\n.*?\n```", "", card, flags=re.S)  # code blocks are not rendered as Markdown
    assert not re.search(r"(?<!\\)<", prose), prose  # no markup: every < from a name is escaped
    row = next(line for line in card.splitlines() if line.startswith("| 1 |"))
    assert row.replace("\\|", "").count("|") == 6, row  # the name's | does not add a column
    assert "a\\|b \\<script\\>" in row
    fences = [line for line in card.splitlines() if line.startswith("```")]
    assert fences == ["```python", "```", "```bash", "```"], fences  # the folder name never closes a block
    assert "nas.load_checkpoint('trial`\\n```\\n<img src=x>')" in card


def test_the_report_escapes_a_hostile_class_name():
    from reports.cards import overlay_figure

    html = overlay_figure({"png": b"\x89PNG", "images": ["<i>im</i>"], "dice": [0.5],
                           "classes": [["background", [0, 0, 0]], [HOSTILE_NAME, [1, 2, 3]]]})
    assert "<script>" not in html and "<i>" not in html and "&lt;script&gt;" in html


def test_the_finalist_table_escapes_its_labels():
    from reports.finalists import finalists_section

    html = finalists_section({"settings": {}, "entrants": [{"label": HOSTILE_NAME, "kind": "<b>finalist"}]})
    assert "<script>" not in html and "<b>finalist" not in html


def test_one_helper_per_format():
    assert printable("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"
    assert printable("plain ü | <x>") == "plain ü | <x>"
    assert markdown("a|b\n<script>") == "a\\|b\\n\\<script\\>"
    assert "\n" not in markdown("x\r\ny") and "|" not in markdown("|").replace("\\|", "")


def test_checkpoint_errors_are_printable_lines(tmp_path):
    folder = tmp_path / "bad\x1b[2Jname\n"
    folder.mkdir()
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint_info(folder)
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value) and "\\x1b[2J" in str(caught.value)


def test_file_names_reach_the_terminal_escaped(ckpt, tmp_path, capsys):
    from nas.cli.predict import main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "a\x1b[31mred.png")
    code, out, err = call(capsys, main, "--checkpoint", ckpt, "--input", folder, "--out", tmp_path / "masks")
    assert code == 0 and "\x1b" not in out + err and "a\\x1b[31mred.png: 20x20" in out, out + err
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--input", tmp_path / "no\x1b[2Jthing",
                        "--out", tmp_path / "m2")
    assert code == 2 and "\x1b" not in err and "no\\x1b[2Jthing" in err, err


# ----------------------------------------------------------------------------- bounded JSON

def test_read_json_scans_depth_outside_strings_only(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"text": "[" * 100 + '"\\' + "{" * 100, "deep": [[[1]]]}))
    assert read_json(path)["deep"] == [[[1]]]
    path.write_text("[" * 33 + "]" * 33)
    with pytest.raises(JsonError, match="nested deeper than 32"):
        read_json(path)
    path.write_text("[" * 32 + "]" * 32)
    assert read_json(path) == [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    with pytest.raises(JsonError, match="not a regular file"):
        read_json(tmp_path)


def test_a_hostile_classes_json_in_a_data_folder_is_one_line(tmp_path):
    from nas.data.errors import DataError
    from nas.data.labels import read_classes_file

    (tmp_path / "classes.json").write_text("[" * 1000 + "]" * 1000)
    with pytest.raises(DataError, match="nested deeper than 32"):
        read_classes_file(tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps([{"name": "a\x1b[31m", "value": 1}]))
    with pytest.raises(DataError, match="control characters") as caught:
        read_classes_file(tmp_path)
    assert "\x1b" not in str(caught.value)
