"""Reading a run's study back (its names, settings and records), and checking a storage URL up front.

The one place where the commands that only read a run (``nas-report``, ``nas-compress``) meet
Optuna: they call ``nas.run.open.open_run``, which calls this. ``storage_problem`` checks a URL
without opening it, so a bad ``--storage`` is refused before a run folder or a lock is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from nas.engine.optuna_adapter.study import CONFIG_ATTR, JOURNAL_SCHEME, make_storage, run_storage, study_records
from nas.results.records import TrialRecord

__all__ = ["StorageUnreadable", "read_study", "run_storage", "storage_problem", "study_names"]
SCHEMES = "sqlite:///PATH, journal:///PATH, postgresql://... or mysql://..."


class StorageUnreadable(ValueError):
    """The storage exists but cannot be read (corrupt file, foreign database, server refused)."""


def storage_problem(url: str, *, creating: Path | None = None, reading: bool = False) -> str | None:
    """Why ``url`` cannot be a study storage, found without opening it; None if it looks usable.

    ``creating``: a folder the caller is about to make, where the storage file may be created.
    ``reading``: the storage must already exist (a reader must never create an empty one).
    """
    if "://" not in url:
        return f"--storage must be a URL such as sqlite:///path/study.db, got {url!r}"
    if url.startswith(JOURNAL_SCHEME):
        # journal:///PATH is always absolute, as make_storage reads it (journal:////abs/path too)
        return _file_problem(url, Path("/" + url[len(JOURNAL_SCHEME):].lstrip("/")), creating, reading)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return f"--storage {url}: unknown storage scheme {url.split('://', 1)[0]!r} (use {SCHEMES})"
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):  # in memory: nothing to read, nothing to create
            return f"--storage {url}: an in-memory SQLite storage holds no run to read" if reading else None
        return _file_problem(url, Path(parsed.database), creating, reading)
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()  # SQLAlchemy 2 / 1.4
    except ImportError as error:
        hint = " (pip install .[postgres])" if parsed.get_backend_name() == "postgresql" else ""
        return f"--storage {url}: its database driver is not installed ({error}){hint}"
    return None


def _file_problem(url: str, path: Path, creating: Path | None, reading: bool) -> str | None:
    from nas.io import unwritable

    path = path.absolute()
    if path.is_dir():
        return f"--storage {url}: {path} is a folder, not a storage file"
    if reading:
        return None if path.is_file() else f"--storage {url}: {path} does not exist"
    folder = path.parent
    if not folder.is_dir():
        if creating is not None and folder.resolve() == Path(creating).resolve():
            return None  # the run folder, made just before the study
        return f"--storage {url}: the folder {folder} does not exist"
    problem = unwritable(folder, folder=True)  # SQLite and the journal write beside the file too
    return f"--storage {url}: {problem}" if problem else None


def _open(url: str) -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return make_storage(url)


def _unreadable(where: str, error: Exception) -> StorageUnreadable:
    first = (str(error).splitlines() or [""])[0]
    return StorageUnreadable(f"{where}: cannot be read ({type(error).__name__}: {first})")


def study_names(url: str, where: str) -> list[str]:
    """The names of the studies in the storage; ``StorageUnreadable`` (naming ``where``) if it cannot be read."""
    try:
        return [s.study_name for s in optuna.get_all_study_summaries(_open(url))]
    except Exception as error:  # a corrupt file, a foreign database, a refused connection
        raise _unreadable(where, error) from None


def read_study(url: str, name: str, where: str) -> tuple[dict[str, Any], list[TrialRecord]]:
    """The study's search settings (``search_config``) and its trials as records."""
    try:
        study = optuna.load_study(study_name=name, storage=_open(url))
        return dict(study.user_attrs.get(CONFIG_ATTR) or {}), study_records(study)
    except Exception as error:
        raise _unreadable(where, error) from None
