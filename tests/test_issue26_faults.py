"""Issue 26: EXIF-oriented images and masks, nas-profile at a size that does not fit, a storage that fails mid-run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.data.loading import DataError, _read_image, load_data

ORIENTATION = 0x0112  # EXIF tag; 6: "turn 90 degrees clockwise to show"


def _save(array: np.ndarray, path: Path, orientation: int | None) -> None:
    image = Image.fromarray(array)
    exif = image.getexif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes()) if orientation is not None else image.save(path)


def _exif_data(root: Path, *, image_suffix: str = ".png", mask_orientation: int | None = 6) -> tuple[np.ndarray, np.ndarray]:
    """images/ + masks/ of 4 identical 24x16 pairs, the image stored with orientation 6; returns what a viewer shows."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.zeros((16, 24), np.uint8)
    image[:4, :] = 255  # a bright band along the stored top edge
    mask = np.zeros((16, 24), np.uint8)
    mask[:4, :6] = 255  # the foreground in the stored top-left corner
    for i in range(4):
        _save(image, root / "images" / f"im{i}{image_suffix}", 6)
        _save(mask, root / "masks" / f"im{i}.png", mask_orientation)
    stored = np.asarray(Image.open(root / "images" / f"im0{image_suffix}").convert("L"))  # decoded, not turned
    return np.rot90(stored, -1) / 255.0, np.rot90(mask, -1) > 0


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_exif_rotated_pair_is_read_as_a_viewer_shows_it(tmp_path, suffix):
    shown_image, shown_mask = _exif_data(tmp_path / "data", image_suffix=suffix)
    assert shown_image.shape == (24, 16)  # turned: 24 rows of 16 px
    data = load_data(str(tmp_path / "data"), image_size=32, seed=0)
    for image, mask in zip(data.train_images + data.val_images, data.train_masks + data.val_masks):
        assert tuple(image.shape) == (1, 24, 16) and tuple(mask.shape) == (1, 24, 16)
        np.testing.assert_allclose(image[0].numpy(), shown_image, atol=1e-6)
        assert (mask[0].numpy() > 0).tolist() == shown_mask.tolist()
        assert mask[0, :, -4:].sum() > 0 and mask[0, :, :-4].sum() == 0  # the band is now on the right edge


def test_an_exif_rotated_image_with_an_unrotated_mask_is_refused(tmp_path):
    _exif_data(tmp_path / "data", mask_orientation=None)
    with pytest.raises(DataError) as caught:
        load_data(str(tmp_path / "data"), image_size=32, seed=0)
    message = str(caught.value)
    assert "\n" not in message and "is 24x16 but image" in message and "is 16x24" in message
    assert "EXIF orientation" in message


def test_nas_predict_reads_its_inputs_the_same_way(tmp_path):
    shown_image, _ = _exif_data(tmp_path / "data")
    array = _read_image(tmp_path / "data" / "images" / "im0.png")  # nas-predict's reader
    np.testing.assert_allclose(array[..., 0], shown_image, atol=1e-6)


def _profile(capsys, *args):
    from nas.cli import profile

    try:
        code = profile.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_nas_profile_skips_the_real_forward_that_would_not_fit(capsys, monkeypatch):
    import nas.costs.inference_memory as counting
    import nas.costs.measure as measure

    monkeypatch.setattr(counting, "available_memory", lambda device="cpu": 2**20)  # 1 MiB free
    monkeypatch.setattr(measure, "measure_costs", lambda *a, **k: pytest.fail("the real forward ran"))
    code, out, err = _profile(capsys, "--preset", "unet-16", "--image-size", "64")
    assert code == 0 and err == ""
    latency = [line for line in out.splitlines() if line.startswith("latency:")]
    assert len(latency) == 1 and "not measured: the inference forward needs about" in latency[0]
    assert "GiB available on cpu" in latency[0]
    assert "inference memory:" in out and "MACs:     188,350,464" in out and "training-step memory:" in out
    code, out, _ = _profile(capsys, "--preset", "unet-16", "--image-size", "64", "--json")
    import json

    result = json.loads(out)
    assert code == 0 and result["latency_ms"] is None and result["latency_skipped"].startswith("not measured")
    assert result["inference_memory_mb"] > 0 and result["macs"] == 188_350_464


def test_nas_profile_runs_the_real_forward_when_it_fits(capsys):
    code, out, _ = _profile(capsys, "--preset", "unet-16", "--image-size", "32", "--repeats", "1", "--warmup", "0")
    assert code == 0 and " ms  (median of 1 forwards" in out and "inference memory:" in out


def test_inference_memory_is_counted_without_allocating_and_scales_with_the_pixels():
    from nas.costs.inference_memory import inference_memory
    from search_spaces import get_space, presets

    preset = presets.get_preset("unet-16")
    model = get_space(preset.space).build_model(preset.spec, 1, 1)
    small = inference_memory(model, (1, 1, 64, 64))["inference_activation_bytes"]
    huge = inference_memory(model, (1, 1, 8192, 8192))["inference_activation_bytes"]  # 28 GiB, counted on meta
    assert small >= 2 * 64 * 64 * 4  # at least the input and the output
    assert huge == pytest.approx(small * (8192 // 64) ** 2, rel=0.01)


# --- a storage that fails mid-run -------------------------------------------------------------------
from conftest import NO_FAMILY, TINY_FIX, fix_flags  # noqa: E402

SEARCH = ["--epochs", "1", "--image-size", "32", "--seed", "1", "--device", "cpu", "--patches-per-epoch", "16",
          "--sampler", "random", *NO_FAMILY, *fix_flags(TINY_FIX)]


def _search(capsys, *args):
    from nas.cli import search

    try:
        code = search.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    return (code, *capsys.readouterr())


def _full_on(monkeypatch, trial_number: int, key: str = "metrics", wrapped: bool = True):
    """The study's storage refuses ``key`` of trial ``trial_number``, as SQLite on a full disk does."""
    import sqlite3

    import optuna
    import sqlalchemy.exc

    original = optuna.storages.RDBStorage.set_trial_user_attr

    def set_trial_user_attr(self, trial_id, key_=None, value=None, **named):
        name, value = named.get("key", key_), named.get("value", value)
        if name == key and self.get_trial_number_from_id(trial_id) == trial_number:
            full = sqlite3.OperationalError("database or disk is full")
            if not wrapped:
                raise full
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from \
                sqlalchemy.exc.OperationalError("UPDATE trial_user_attributes ...", {}, full)
        return original(self, trial_id, name, value)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_user_attr", set_trial_user_attr)


def _states(run: Path) -> dict[int, str]:
    import optuna

    study = optuna.load_study(study_name="resunet", storage=f"sqlite:///{run / 'study.db'}")
    return {t.number: t.state.name for t in study.get_trials()}


@pytest.mark.parametrize("wrapped", [True, False], ids=["optuna-wrapped", "raw-sqlite3"])
def test_a_storage_full_after_a_trial_trained_ends_the_search_with_one_line(tmp_path, capsys, monkeypatch, wrapped):
    import csv

    run = tmp_path / "run"
    _full_on(monkeypatch, 1, wrapped=wrapped)
    code, out, err = _search(capsys, "--trials", "2", *SEARCH, "--out", run)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert "Traceback" not in out + err and len(lines) == 1, err
    assert lines[0].startswith("nas-search: stopped: the study's storage refused a write (")
    assert "database or disk is full" in lines[0] and "trial 1 trained, kept in" in lines[0]
    assert "run the same command to resume" in lines[0]
    assert _states(run) == {0: "COMPLETE", 1: "RUNNING"}  # trained: never recorded as failed
    assert (run / "trials" / "trial_0000" / "model.safetensors").is_file()
    assert (run / "trials" / "trial_0001" / "model.safetensors").is_file()  # its checkpoint was written
    with open(run / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows if row["number"] == "0"] == ["COMPLETE"]
    assert (run / "report.html").is_file() and (run / "logs" / "unstored_trial_0001.json").is_file()
    if not wrapped:
        return
    monkeypatch.undo()  # the disk has room again: the same command completes trial 1 from logs/, no retraining
    code, out, err = _search(capsys, "--trials", "2", *SEARCH, "--out", run)
    assert code == 0, err
    assert "trial 1 had trained when the storage failed: completed from what logs/ kept" in out
    assert _states(run) == {0: "COMPLETE", 1: "COMPLETE"} and "epoch 1/1" not in out
    assert not (run / "logs" / "unstored_trial_0001.json").exists()


def test_a_disk_that_fills_while_a_checkpoint_is_written_ends_the_search(tmp_path, capsys, monkeypatch):
    import errno

    import nas.deploy.checkpoint as checkpoint
    from nas.io import WriteError

    real = checkpoint.save_checkpoint
    calls = []

    def save_checkpoint(folder, *args, **kwargs):
        calls.append(folder)
        if len(calls) == 2:
            raise WriteError(folder, OSError(errno.ENOSPC, "No space left on device"))
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_checkpoint)
    for module in ("nas.engine.trial", "nas.engine.policy"):
        if hasattr(__import__(module, fromlist=["x"]), "save_checkpoint"):
            monkeypatch.setattr(f"{module}.save_checkpoint", save_checkpoint)
    run = tmp_path / "run"
    code, out, err = _search(capsys, "--trials", "3", *SEARCH, "--out", run)
    assert code == 1 and "Traceback" not in out + err, err
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err and "-> failed" not in out
    assert _states(run) == {0: "COMPLETE", 1: "RUNNING"}  # queued again on resume, not counted a failure
    assert (run / "trials.csv").is_file()


def test_trials_csv_not_written_on_a_full_disk_is_named_in_the_same_line(tmp_path, capsys, monkeypatch):
    import errno

    import nas.run.outputs as outputs
    from nas.io import WriteError

    def full(*args, **kwargs):
        raise WriteError(run / "trials.csv", OSError(errno.ENOSPC, "No space left on device"))

    run = tmp_path / "run"
    _full_on(monkeypatch, 0)
    monkeypatch.setattr(outputs, "write_run_outputs", full)
    monkeypatch.setattr("nas.run.search.write_run_outputs", full, raising=False)
    code, out, err = _search(capsys, "--trials", "2", *SEARCH, "--out", run)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in out + err, err
    assert "database or disk is full" in lines[0]
    assert f"trials.csv and the report not written (cannot write {run / 'trials.csv'}: No space left on device)" in lines[0]
    assert _states(run) == {0: "RUNNING"}


def test_which_errors_are_a_storage_failure():
    import errno
    import sqlite3

    import optuna
    import sqlalchemy.exc

    from nas.engine.optuna_adapter.storage_fault import storage_failure
    from nas.io import WriteError

    def wrapped(inner):
        try:
            try:
                raise sqlalchemy.exc.OperationalError("UPDATE ...", {}, inner)
            except sqlalchemy.exc.OperationalError as error:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from error
        except optuna.exceptions.StorageInternalError as error:
            return error

    readonly = storage_failure(wrapped(sqlite3.OperationalError("attempt to write a readonly database")))
    assert readonly.startswith("the study's storage refused a write") and "readonly database" in readonly
    assert "\n" not in readonly
    assert storage_failure(WriteError("/r/trials.csv", OSError(errno.EROFS, "Read-only file system"))) == \
        "cannot write /r/trials.csv: Read-only file system"
    assert storage_failure(OSError(errno.ENOSPC, "No space left on device")) is not None
    assert storage_failure(RuntimeError("CUDA out of memory")) is None  # the trial's own failure
    assert storage_failure(wrapped(sqlite3.OperationalError("no such table: trials"))) is None
    assert storage_failure(FileNotFoundError(errno.ENOENT, "gone")) is None
