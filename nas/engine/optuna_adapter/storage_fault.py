"""A storage that fails mid-run (disk full, a folder or database made read-only) ends the search.

Such a failure is the machine's, not the trial's: ``run_study`` turns it into ``StorageFailed``, a
``BaseException`` so Optuna's ``catch=(Exception,)`` does not record the running trial as failed (it
stays RUNNING in the study, and a resume queues it again). A trial that trained but whose attributes
could not be stored leaves them in ``<run>/logs/unstored_trial_NNNN.json`` when the disk allows; the
next run stores them and completes the trial from them (``complete_unstored``) instead of training it
again. ``storage_failure(error)`` says whether an error is such a failure, as one line.
"""
from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

# errno of a disk or folder that refuses writes: full, over quota, read-only, permissions, I/O error
_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
# what SQLite (through SQLAlchemy and Optuna) says when its file cannot be written
_SQLITE_TEXTS = ("database or disk is full", "readonly database", "disk i/o error", "unable to open database",
                 "no space left on device", "read-only file system")
UNSTORED = "unstored_trial_{:04d}.json"


class StorageFailed(BaseException):
    """The study or the run folder stopped taking writes; ``str()`` is one line."""


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def storage_failure(error: BaseException) -> str | None:
    """One line naming the failed write when ``error`` (or what caused it) is a full or read-only
    storage, else None (an error of the trial itself)."""
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in _ERRNOS:
            return " ".join(str(cause).split())
        text = " ".join(str(cause).split())
        if isinstance(cause, sqlite3.Error) or type(cause).__module__.startswith(("sqlalchemy", "optuna")):
            if any(known in text.lower() for known in _SQLITE_TEXTS):
                return f"the study's storage refused a write ({text[:200]})"
    return None


def save_unstored(folder: Path | None, number: int, attrs: dict[str, Any]) -> Path | None:
    """Keep a trained trial's attributes beside the run (``logs/``) when the study would not take them."""
    if folder is None:
        return None
    from nas.io import atomic_write_text

    try:
        return atomic_write_text(folder / UNSTORED.format(number), json.dumps(attrs, default=str))
    except (OSError, TypeError, ValueError):
        return None  # the disk is full too: the trial is queued again on resume


def complete_unstored(study: Any, folder: Path | None, objective_values: Any) -> list[int]:
    """Complete each RUNNING trial whose attributes ``save_unstored`` kept; returns their numbers."""
    from optuna.trial import TrialState

    from nas.io import read_json

    if folder is None or not folder.is_dir():
        return []
    done = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        path = folder / UNSTORED.format(trial.number)
        if not path.is_file():
            continue
        try:
            attrs = read_json(path)
            values = objective_values(attrs["metrics"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, list(values))
        path.unlink(missing_ok=True)
        done.append(trial.number)
    return done


def outputs_after_failure(write: Callable[[], Any], stopped: str, say: Callable[[str], None]) -> tuple[tuple, int, str]:
    """``write()`` the table, ``best/`` and the report of the finished trials as far as the disk allows,
    then ``say`` the one stop line; returns ``(front, finished, line)`` for the ``SearchResult``."""
    note, front, finished = "", (), 0
    try:
        result = write()
        front, finished = result.front, result.finished
    except Exception as error:
        if not storage_failure(error):
            raise
        note = f"; trials.csv and the report not written ({storage_failure(error)})"
    line = (f"nas-search: stopped: {stopped.removeprefix('storage: ')}{note}; the finished trials keep their "
            "checkpoints: free space (or make the folder writable) and run the same command to resume")
    say(line)
    return tuple(front), finished, line
