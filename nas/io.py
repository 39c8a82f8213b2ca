"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Every write goes to a temp file beside the target, is fsynced, then renamed over the target; on
any failure (disk full, read-only folder) the temp file is removed and the previous version stays.
OS failures surface as ``WriteError``: an ``OSError`` whose one-line message names the target
(not the temp file) and the cause, so a CLI can print it as is.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class WriteError(OSError):
    """A failed write; ``str()`` is one line: ``cannot write PATH: cause``."""

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        cause = (error.strerror or str(error) or type(error).__name__).strip().splitlines()[0]
        super().__init__(error.errno, cause, str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems refuse to open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staging_dir(target: str | os.PathLike) -> Path:
    """A fresh hidden folder beside ``target`` (same file system, so it can be renamed onto it)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise WriteError(target, error) from error
    os.chmod(folder, 0o777 & ~_umask())  # mkdtemp makes it 0700; keep the usual permissions
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, fsync it, then rename it over ``path``.

    An ``OSError`` on the way (including one raised by ``write``) becomes a ``WriteError``; other
    exceptions pass through unchanged. Either way the temp file is gone and ``path`` is untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; keep the usual permissions
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(path, error) from error
        raise
    _fsync_dir(path.parent)
    return path


def unwritable(path: str | os.PathLike, *, folder: bool = False) -> str | None:
    """Why ``path`` (a file, or a folder with ``folder=True``) cannot be written, or None if it can.

    Checked before any work so a read-only destination is refused up front. Permission bits do not
    stop root, so as root only a read-only file system (EROFS) is caught here; the atomic writes
    still fail cleanly later.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        return f"{path} exists and is {'not ' if folder else ''}a folder"
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be partial); errors propagate."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def clean_stale_writes(root: str | os.PathLike) -> list[Path]:
    """Undo what a killed writer left under ``root``: its temp files and staging folders
    (``.NAME.*.tmp``) are deleted; a folder moved aside for a swap (``.NAME.old-PID``) is put back
    when ``NAME`` is missing (the kill fell between the two renames), else deleted.

    Only call it while no other process writes there (``nas.engine.run_lock``). Returns what it touched.
    """
    import re
    import shutil

    touched = []
    for path in sorted(Path(root).rglob(".*"), key=lambda p: len(p.parts), reverse=True):
        aside = re.fullmatch(r"\.(.+)\.old-\d+", path.name)
        if path.name.endswith(".tmp"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif aside and path.is_dir():
            target = path.with_name(aside.group(1))
            if target.exists():
                shutil.rmtree(path)
            else:
                os.replace(path, target)
        else:
            continue
        touched.append(path)
    return touched
