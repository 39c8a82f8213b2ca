"""Open a finished (or running) run directory: its trials, its search settings, which study they came from.

``nas-report`` and ``nas-compress`` read runs through ``open_run``, never through Optuna. Every
reason a run cannot be opened is a ``RunError`` with a one-line message (the CLIs print it with
exit code 2). Importing this module loads neither torch nor Optuna nor pandas (``nas.RunError``,
``nas.open_run``): the functions import them when called.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.engine.early_stop import early_stop_policy
from nas.results.family_records import family_name
from nas.results.pareto import pareto_front
from nas.results.records import TrialRecord
from nas.results.table import trials_frame
from nas.run.settings import RunSettings


class RunError(ValueError):
    """The run cannot be opened: missing, no storage, several or no studies, an unreadable storage."""


@dataclass(frozen=True)
class OpenedRun:
    run_dir: Path
    study_name: str
    storage: str
    settings: RunSettings = RunSettings()  # the search's settings (``search_config``), empty if none
    records: list[TrialRecord] = field(default_factory=list)

    @property
    def title(self) -> str:
        data = self.settings.data or "?"
        name = data if data.startswith("synthetic") else Path(data).name
        return f"nas-search: {self.settings.space or '?'} on {name}"

    def run_settings(self) -> RunSettings:
        """The settings with the study and storage they were read from (what the report shows)."""
        return self.settings.updated(study=self.study_name, storage=self.storage)


def open_run(run_dir: str | Path, storage: str | None = None, study_name: str | None = None) -> OpenedRun:
    """The run's records and settings; ``storage`` / ``study_name`` pick another storage or study.

    Without ``study_name`` the storage must hold exactly one study. Reads only: nothing is created.
    """
    from nas.engine.optuna_adapter import (StorageUnreadable, read_study, run_storage,  # lazy: Optuna, torch
                                           storage_problem, study_names)

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
    return OpenedRun(run_dir=run, study_name=name, storage=url, settings=RunSettings.from_dict(config),
                     records=records)


# the defaults study_settings leaves out of the study (it stores only what differs from them)
_DEFAULTS = {"objectives": "dice,macs", "sampler": "tpe", "early_stop": "on", "latency_engine": "torch",
             "family_rungs": 3, "restriction": {}, "constraints": {}}


def effective_settings(stored: RunSettings, run_dir: str | Path | None = None) -> dict[str, Any]:
    """The study's stored settings with every default filled in: ``objectives``, ``sampler``,
    ``early_stop`` (and its rungs), the full ``recipe``, and the ``budget`` (``trials``, ``timeout``
    and why the search stopped, from ``search_end.json``; None where the run has no such file)."""
    from nas.run.run_files import search_end  # lazy, with the next line: torch
    from nas.run.search_config import DEFAULT_VAL_FRACTION, RECIPE_FIELDS, SearchConfig

    defaults = SearchConfig()
    settings = {**_DEFAULTS, **stored.to_dict()}
    settings["recipe"] = {**{name: getattr(defaults, name) for name in RECIPE_FIELDS},
                          "val_fraction": DEFAULT_VAL_FRACTION, **dict(stored.recipe or {})}
    if "early_stop_rungs" not in settings and settings["early_stop"] != "off":
        try:
            rule = "halving" if settings["early_stop"] == "on" else str(settings["early_stop"])
            policy = early_stop_policy(rule, stored.epochs if stored.epochs is not None else defaults.epochs, ())
            settings["early_stop_rungs"] = list(policy.rungs) if policy is not None else []
        except (TypeError, ValueError, AttributeError):
            pass
    end = search_end(run_dir) if run_dir is not None else {}
    settings["budget"] = {"trials": end.get("trials", stored.trials), "timeout": end.get("timeout"),
                          "stopped": end.get("stopped")}
    return settings


def point_kind(record: TrialRecord) -> str:
    """``search``, ``family``, ``preset`` or ``compressed``: what the report draws the point as."""
    return "family" if family_name(record) is not None else str(record.kind)


def load_run(run_dir: str | Path, storage: str | None = None, study_name: str | None = None):
    """The run's trials as a pandas DataFrame: one row per trial, typed columns, the spec as JSON.

    The numbers ``trials.csv`` and the report show: the latency is the end-of-search re-measurement
    where the run has one (``latency.json``), ``on_front`` marks the members of the front of the
    search's own objectives (the models ``best/`` is chosen from), ``point`` is ``search``,
    ``family``, ``preset`` or ``compressed``. ``frame.attrs["config"]`` holds the full effective
    settings (``effective_settings``: defaults filled in, recipe, budget), ``attrs["study"]`` the study.
    """
    import pandas  # lazy: pandas and, below, torch

    from nas.run.latency_pass import with_remeasured_latency
    from nas.run.outputs import run_objectives

    opened = open_run(run_dir, storage=storage, study_name=study_name)
    records = with_remeasured_latency(opened.records, opened.run_dir)
    frame = trials_frame(records)
    front = pareto_front(records, run_objectives(opened.settings)).numbers
    by_number = {r.number: r for r in records}
    frame["on_front"] = pandas.array([int(n) in front for n in frame["number"]], dtype="boolean")
    frame["point"] = pandas.array([point_kind(by_number[int(n)]) for n in frame["number"]], dtype="string")
    frame.attrs.update(config=effective_settings(opened.settings, opened.run_dir), study=opened.study_name,
                       storage=opened.storage)
    return frame
