"""Disk full and read-only destinations: a clear one-line error, no temp files, the previous version intact.

A full disk is simulated by patching ``os.write`` (and ``os.fsync``, where a full disk with delayed
allocation also reports ENOSPC) for files inside one folder only: the writes there get a byte
budget, then ENOSPC, exactly as a real full disk answers a write. Read-only folders use real
permission bits when the tests do not run as root (root ignores them), and an EROFS simulation
that runs everywhere.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import call, make_study
import torch
from PIL import Image

from nas import load_checkpoint, save_checkpoint
from nas.data.loading import Normalization
from nas.io import WriteError, atomic_write_bytes, atomic_write_json, atomic_write_text
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

SPEC = ResUNetSpec(encoder_widths=(4, 8, 16), decoder_widths=(4, 8))
NORM = Normalization((0.5,), (0.25,))


def _permission_bits_bind() -> bool:
    """Whether a 0o555 folder refuses a new file here (not for root with CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            Path(folder, "probe").write_text("")
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
    return False


PERMISSIONS_IGNORED = not _permission_bits_bind()


def error_line(err: str, prog: str) -> str:
    """The single ``prog: error:`` line (argparse's usage block may precede a refusal)."""
    lines = [line for line in err.strip().splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def leftovers(root: Path) -> list[str]:
    """Temp files/folders of the atomic writers (``.name.XXXX.tmp``, ``.name.old-PID``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                  if p.name.endswith(".tmp") or ".old-" in p.name)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_checkpoint(folder: Path, seed: int = 0, **metrics) -> Path:
    torch.manual_seed(seed)
    model = get_space("resunet").build_model(SPEC, 1, 1).eval()
    return save_checkpoint(folder, model, SPEC, space="resunet", in_channels=1, out_channels=1,
                           normalization=NORM, metrics={"dice": 0.5, "input_shape": [1, 1, 32, 32], **metrics})


class DiskFull:
    """Files under ``folder`` may take ``budget`` more bytes, then every write there fails with ENOSPC."""

    def __init__(self, monkeypatch, folder: Path, budget: int = 0, fsync: bool = False) -> None:
        if not Path("/proc/self/fd").is_dir():
            pytest.skip("needs /proc/self/fd to tell which file a descriptor writes")
        self.folder, self.budget, self.fsync, self.failures = Path(folder).resolve(), budget, fsync, 0
        real_write, real_fsync = os.write, os.fsync

        def inside(fd: int) -> bool:
            try:
                return Path(os.readlink(f"/proc/self/fd/{fd}")).is_relative_to(self.folder)
            except OSError:
                return False

        def write(fd, data):
            if not inside(fd):
                return real_write(fd, data)
            if self.budget <= 0:
                self.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written = real_write(fd, bytes(memoryview(data)[: self.budget]))  # a partial write, as on a real disk
            self.budget -= written
            return written

        def fsync(fd):
            if self.fsync and inside(fd):
                self.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)


# ----------------------------------------------------------------------------- the atomic helpers

def test_disk_full_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "trials.csv", "previous version\n")
    disk = DiskFull(monkeypatch, tmp_path, budget=1000)
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(target, b"x" * 5000)  # 1000 bytes land in the temp file, then ENOSPC
    assert caught.value.errno == errno.ENOSPC and disk.failures == 1
    assert str(caught.value) == f"cannot write {target}: No space left on device"
    assert target.read_text() == "previous version\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]


def test_disk_full_at_fsync_keeps_the_previous_file(tmp_path, monkeypatch):
    target = atomic_write_json(tmp_path / "metrics.json", {"dice": 0.5})
    DiskFull(monkeypatch, tmp_path, budget=10**6, fsync=True)
    with pytest.raises(WriteError, match="No space left on device"):
        atomic_write_json(target, {"dice": 0.9})
    assert '"dice": 0.5' in target.read_text() and leftovers(tmp_path) == []


def test_disk_full_while_replacing_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    folder = make_checkpoint(tmp_path / "trial_0001", seed=0)
    before = {p.name: digest(p) for p in folder.iterdir()}
    torch.manual_seed(1)
    newer = get_space("resunet").build_model(SPEC, 1, 1)
    DiskFull(monkeypatch, tmp_path, budget=2000)  # the new weights file alone is larger
    with pytest.raises(WriteError, match="No space left on device"):
        save_checkpoint(folder, newer, SPEC, space="resunet", in_channels=1, out_channels=1, normalization=NORM)
    monkeypatch.undo()
    assert {p.name: digest(p) for p in folder.iterdir()} == before
    load_checkpoint(folder)  # still whole: the hash in metrics.json matches
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["trial_0001"]


def test_read_only_file_system_is_a_clear_error(tmp_path, monkeypatch):
    """EROFS from the temp file's creation (also how root meets a read-only mount)."""
    import tempfile

    folder = make_checkpoint(tmp_path / "trial_0002")
    before = {p.name: digest(p) for p in folder.iterdir()}

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(WriteError) as caught:
        atomic_write_text(folder / "README.md", "card")
    assert str(caught.value) == f"cannot write {folder / 'README.md'}: Read-only file system"
    with pytest.raises(WriteError, match="Read-only file system"):
        save_checkpoint(folder, load_checkpoint(folder)[0], SPEC, space="resunet", in_channels=1,
                        out_channels=1, normalization=NORM)
    assert {p.name: digest(p) for p in folder.iterdir()} == before and leftovers(tmp_path) == []


@pytest.mark.skipif(PERMISSIONS_IGNORED, reason="running as root: permission bits do not stop root's writes "
                    "(test_read_only_file_system_is_a_clear_error simulates EROFS instead)")
def test_read_only_folder_by_permissions(tmp_path):
    target = atomic_write_text(tmp_path / "ro" / "report.html", "previous")
    os.chmod(tmp_path / "ro", 0o555)
    try:
        with pytest.raises(WriteError, match="Permission denied"):
            atomic_write_text(target, "new")
        assert target.read_text() == "previous" and leftovers(tmp_path) == []
    finally:
        os.chmod(tmp_path / "ro", 0o755)


# ----------------------------------------------------------------------------- the CLIs

@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_predict_on_a_full_disk_stops_with_one_line_and_whole_files(tmp_path, images, monkeypatch, capsys):
    from nas.cli.predict import main

    ckpt = make_checkpoint(tmp_path / "ckpt")
    assert call(capsys, main, "--checkpoint", ckpt, "--input", images, "--output", tmp_path / "free")[0] == 0
    out = tmp_path / "masks"
    out.mkdir()
    (out / "b.png").write_bytes(b"mask of an earlier run")
    DiskFull(monkeypatch, out, budget=(tmp_path / "free" / "a.png").stat().st_size)  # a.png fits, b.png not
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--input", images, "--output", out)
    monkeypatch.undo()
    assert code == 1, err
    assert error_line(err, "nas-predict") == (f"nas-predict: error: cannot write {out / 'b.png'}: "
                                              "No space left on device")
    assert Image.open(out / "a.png").size == (48, 40)  # the mask written before the disk filled is whole
    assert (out / "b.png").read_bytes() == b"mask of an earlier run"
    assert leftovers(tmp_path) == []


def test_export_on_a_full_disk_keeps_the_previous_export(tmp_path, monkeypatch, capsys):
    from nas.cli.export import main

    ckpt = make_checkpoint(tmp_path / "ckpt")
    (ckpt / "model.onnx").write_bytes(b"previous export")
    DiskFull(monkeypatch, ckpt, budget=10**9, fsync=True)  # the exporter writes itself; the fsync fails
    code, out, err = call(capsys, main, "--checkpoint", ckpt, "--format", "onnx", "--input-size", "32")
    monkeypatch.undo()
    assert code == 1 and out == "", err
    assert error_line(err, "nas-export") == (f"nas-export: error: cannot write {ckpt / 'model.onnx'}: "
                                             "No space left on device")
    assert (ckpt / "model.onnx").read_bytes() == b"previous export" and leftovers(tmp_path) == []
    load_checkpoint(ckpt)


def test_export_to_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from nas.cli.export import main

    ckpt = make_checkpoint(tmp_path / "ckpt")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == locked
                        else real_access(path, mode, **kw))  # as a read-only mount answers, even to root
    code, _, err = call(capsys, main, "--checkpoint", ckpt, "--format", "onnx", "--output", locked / "m.onnx")
    assert code == 2
    assert error_line(err, "nas-export").endswith(f"cannot write {locked / 'm.onnx'}: {locked} is not writable")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(PERMISSIONS_IGNORED, reason="running as root: permission bits do not stop root's writes "
                    "(test_export_to_a_read_only_folder_is_refused_before_any_work simulates it)")
def test_predict_into_a_read_only_folder_by_permissions(tmp_path, images, capsys):
    from nas.cli.predict import main

    ckpt = make_checkpoint(tmp_path / "ckpt")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        code, _, err = call(capsys, main, "--checkpoint", ckpt, "--input", images, "--output", locked / "masks")
    finally:
        os.chmod(locked, 0o755)
    assert code == 2 and "is not writable" in error_line(err, "nas-predict")
    assert list(locked.iterdir()) == []


def test_report_on_a_full_disk_keeps_the_previous_report_and_the_study(tmp_path, monkeypatch, capsys):
    from nas.cli.report import main

    run = make_study(tmp_path, SPEC.to_dict())
    (run / "report.html").write_text("previous report")
    study = digest(run / "study.db")
    DiskFull(monkeypatch, run, budget=500_000)  # trials.csv and figures fit; the 5 MB page does not
    code, _, err = call(capsys, main, "--run", run, "--no-overlays")
    monkeypatch.undo()
    assert code == 1, err
    assert error_line(err, "nas-report") == (f"nas-report: error: cannot write {run / 'report.html'}: "
                                             "No space left on device")
    assert (run / "report.html").read_text() == "previous report"
    assert digest(run / "study.db") == study and leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_full_disk_while_exporting_best_keeps_the_previous_best(tmp_path, monkeypatch):
    """``best/`` is assembled beside the old one and swapped in whole: a failure leaves the old one."""
    from nas.run.outputs import OBJECTIVES, export_best
    from nas.results.records import TrialRecord
    from reports import pareto_front

    make_checkpoint(tmp_path / "trials" / "trial_0000", trial=0)
    make_checkpoint(tmp_path / "trials" / "trial_0001", seed=1, trial=1)
    records = [TrialRecord.from_metrics(n, "COMPLETE", dice=0.5 + n / 10, macs=1000 * (n + 1),
                                        checkpoint=f"trials/trial_{n:04d}") for n in (0, 1)]
    shutil.copytree(tmp_path / "trials" / "trial_0000", tmp_path / "best" / "trial_0000")
    before = {str(p.relative_to(tmp_path)): digest(p) for p in (tmp_path / "best").rglob("*") if p.is_file()}
    DiskFull(monkeypatch, tmp_path, budget=0)  # the first model card or ONNX fsync fails
    with pytest.raises(WriteError, match="No space left on device"):
        export_best(pareto_front(records, OBJECTIVES), tmp_path)
    monkeypatch.undo()
    after = {str(p.relative_to(tmp_path)): digest(p) for p in (tmp_path / "best").rglob("*") if p.is_file()}
    assert after == before and leftovers(tmp_path) == []
