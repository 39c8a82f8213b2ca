"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Every write goes to a temp file beside the target, is fsynced, then renamed over the target; on
any failure (disk full, read-only folder) the temp file is removed and the previous version stays.
OS failures surface as ``WriteError``: an ``OSError`` whose one-line message names the target
(not the temp file) and the cause, so a CLI can print it as is.

``json_safe`` makes measured values writable as JSON (NaN/inf -> None).

The other direction, files that may come from someone else: ``read_json`` refuses a file over a few
MB or nested deeper than 32 levels before parsing it (``JsonError``, a ``ValueError``). Text from a
file, a class or a folder name is escaped for where it goes, one helper per format: ``printable``
for a terminal (control characters as ``\\n``, ``\\x1b``), ``markdown`` for Markdown text and table
cells; HTML is ``reports.fmt.esc``.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
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


def json_safe(value: Any) -> Any:
    """A copy with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


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


# --------------------------------------------------------------------- untrusted text in, escaped text out

MAX_JSON_BYTES = 4 << 20  # 4 MiB: the largest metrics.json of a real run is a few kB
MAX_JSON_DEPTH = 32  # a real metrics.json nests 5 levels
_JSON_SYNTAX = re.compile(r'["\\\[\]{}]')
# C0/C1 control characters, DEL, and the bidirectional overrides that reorder what a terminal shows
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|&~])")  # emphasis, code, links, HTML, headings, tables, entities


class JsonError(ValueError):
    """A JSON file refused before or while parsing; ``str()`` is one line naming the file."""


def json_depth_over(text: str, limit: int) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``limit`` (strings skipped), scanning only
    its syntax characters and stopping at the first level over the limit: never parses it."""
    depth, in_string, skip = 0, False, -1
    for match in _JSON_SYNTAX.finditer(text):
        at, char = match.start(), match.group()
        if at == skip:
            continue
        if in_string:
            if char == "\\":
                skip = at + 1  # the escaped character (a quote or a backslash) does not count
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def read_json(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              invalid: str = "not valid JSON") -> Any:
    """Parse a JSON file that may come from someone else: refused (``JsonError``) when it is not a
    regular file, is larger than ``max_bytes`` (checked before reading), is not UTF-8 JSON (``invalid``
    says so), or nests deeper than ``max_depth`` (checked before parsing). A missing file raises
    ``FileNotFoundError``."""
    path = Path(path)
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise JsonError(f"{printable(path)}: not a regular file")
    if info.st_size > max_bytes:
        raise JsonError(f"{printable(path)}: {info.st_size:,} bytes, more than the {max_bytes:,} a JSON file here "
                        "may hold (refused unread)")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)  # the file may grow between stat and read
    if len(data) > max_bytes:
        raise JsonError(f"{printable(path)}: more than the {max_bytes:,} bytes a JSON file here may hold")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JsonError(f"{printable(path)}: {invalid} (not UTF-8: {error.reason} at byte {error.start})") from None
    if json_depth_over(text, max_depth):
        raise JsonError(f"{printable(path)}: nested deeper than {max_depth} levels (refused unparsed)")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise JsonError(f"{printable(path)}: {invalid} ({printable(error)})") from None


def printable(text: Any) -> str:
    """``text`` safe for a terminal: control characters (newlines, escape sequences, bidi overrides)
    written as Python escapes (``\\n``, ``\\x1b``, ``\\u202e``), everything else unchanged."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def markdown(text: Any) -> str:
    """``text`` as literal Markdown text, safe in a table cell: every character Markdown or inline
    HTML could read as syntax (``|``, ``<``, ``*``, ``[``, backticks, ...) backslash-escaped, and
    control characters (a newline would end the table row) written as ``printable`` escapes."""
    return printable(_MARKDOWN.sub(r"\\\1", str(text)))
