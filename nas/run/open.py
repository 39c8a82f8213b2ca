"""Open a finished (or running) run directory: its trials, its search settings, which study they came from.

``nas-report`` and ``nas-compress`` read runs through ``open_run``, never through Optuna. Every
reason a run cannot be opened is a ``RunError`` with a one-line message (the CLIs print it with
exit code 2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.results.records import TrialRecord


class RunError(ValueError):
    """The run cannot be opened: missing, no storage, several or no studies, an unreadable storage."""


@dataclass(frozen=True)
class OpenedRun:
    run_dir: Path
    study_name: str
    storage: str
    config: dict[str, Any] = field(default_factory=dict)  # the search's settings (``search_config``), {} if none
    records: list[TrialRecord] = field(default_factory=list)

    @property
    def title(self) -> str:
        data = str(self.config.get("data", "?"))
        name = data if data.startswith("synthetic") else Path(data).name
        return f"nas-search: {self.config.get('space', '?')} on {name}"


def open_run(run_dir: str | Path, storage: str | None = None, study_name: str | None = None) -> OpenedRun:
    """The run's records and settings; ``storage`` / ``study_name`` pick another storage or study.

    Without ``study_name`` the storage must hold exactly one study. Reads only: nothing is created.
    """
    from nas.engine.optuna_adapter.reading import (StorageUnreadable, read_study, run_storage, storage_problem,
                                                   study_names)

    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"--run {run_dir}: no such run directory")
    if storage is None:
        url = run_storage(run)
        if url is None:
            raise RunError(f"--run {run_dir}: no study.db or study.journal in it "
                           "(pass --storage for another storage)")
        where = url.split(":///", 1)[-1]
    else:
        problem = storage_problem(storage, reading=True)
        if problem:
            raise RunError(problem)
        url, where = storage, f"--storage {storage}"
    try:
        names = study_names(url, where)
        if study_name is None and len(names) != 1:
            found = ", ".join(names) or "none"
            raise RunError(f"{url}: {'no study' if not names else 'several studies'} in it "
                           f"(found: {found}); pass --study-name")
        name = study_name or names[0]
        if name not in names:
            raise RunError(f"--study-name {name!r}: no such study in {url} (found: {', '.join(names) or 'none'})")
        config, records = read_study(url, name, where)
    except StorageUnreadable as error:
        raise RunError(str(error)) from None
    return OpenedRun(run_dir=run, study_name=name, storage=url, config=config, records=records)


def load_run(run_dir: str | Path, storage: str | None = None, study_name: str | None = None):
    """The run's trials as a pandas DataFrame: one row per trial, typed columns, the spec as JSON.

    The same frame ``trials.csv`` is written from (``nas.results.table.trials_frame``); the search
    settings are in ``frame.attrs["config"]``, the study in ``frame.attrs["study"]``.
    """
    from nas.results.table import trials_frame

    opened = open_run(run_dir, storage=storage, study_name=study_name)
    frame = trials_frame(opened.records)
    frame.attrs.update(config=dict(opened.config), study=opened.study_name, storage=opened.storage)
    return frame
