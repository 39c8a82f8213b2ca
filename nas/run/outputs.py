"""What a run directory holds after a search: ``trials.csv``, ``best/``, ``report.html``, static fronts.

The report's extras (parameter importance, prediction overlays) are computed here from what a run
can reach (its study storage, its ``best/`` checkpoints); a failure in an extra becomes a note on
the page, never a failed search. After a search, the front members and baselines are re-timed in
one latency pass (``nas.run.latency_pass``) before the fronts, ``best/`` and the report use them;
``best/`` follows the front of the search's own objectives, less the models whose validation Dice is
not above the best trivial predictor's (``trivial.json``: not ready to deploy), and a ``best/`` copy
whose trial folder was deleted is copied back first (``nas.run.run_files``), never dropped.
"""
from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from compress.index import compressed_records, read_index
from nas.deploy.checkpoint import replace_folder
from nas.deploy.export import checked_onnx
from nas.deploy.model_card import prepare_deployment
from nas.deploy.overlays import prediction_overlays, validation_data
from nas.engine.job import report_objectives
from nas.engine.optuna_adapter import importances_from_storage, param_importances
from nas.failpoints import failpoint
from nas.io import read_json, staging_dir
from nas.results.pareto import Objective, ParetoFront, pareto_front
from nas.results.records import TrialRecord
from nas.results.table import write_trials_csv
from nas.run.latency_pass import latency_note, remeasure_latency, with_remeasured_latency
from nas.run.run_files import (annotate_best, below_trivial, precision_notes, read_trivial, restore_lost_checkpoints,
                                search_end)
from nas.run.settings import RunSettings
from nas.stages.baseline_training import baseline_records
from nas.stages.finalist_training import finalized, mark_finalized, read_summary
from reports import render_report, save_static_figures

OBJECTIVES = (Objective("dice", "maximize"), Objective("macs", "minimize"))


def run_objectives(settings: RunSettings) -> tuple[Objective, ...]:
    """The axes ``best/`` is ranked by: the search's ``--objectives`` (Dice vs MACs by default)."""
    return report_objectives(settings.objectives) if settings.objectives else OBJECTIVES


VERSIONED = ("torch", "optuna", "numpy", "plotly", "onnxruntime")


def _already_deployed(previous: Path, source: Path) -> bool:
    """``best/trial_N`` from an earlier call holds the same weights and its deployment files."""
    def weights_hash(folder: Path) -> Any:
        try:
            metrics = read_json(folder / "metrics.json")
            return metrics.get("weights_sha256") if isinstance(metrics, dict) else None
        except (OSError, ValueError):
            return None

    def vouched(folder: Path) -> bool:  # an old copy without the ONNX hash is exported again
        try:
            return checked_onnx(folder) is not None
        except ValueError:
            return False

    return ((previous / "model.onnx").is_file() and (previous / "README.md").is_file()
            and weights_hash(previous) is not None and weights_hash(previous) == weights_hash(source)
            and vouched(previous))


def export_best(front: ParetoFront, run_dir: Path, *, deploy: bool = True,
                skip: frozenset[int] | set[int] = frozenset()) -> list[Path]:
    """Copy each Pareto-optimal checkpoint into ``best/`` with ``model.onnx`` and a model card; the
    trial numbers in ``skip`` (no better than a trivial predictor) are left out.

    The new ``best/`` is assembled beside the old one and swapped in as a whole; folders whose
    weights did not change since the last call are reused instead of exported again.
    """
    run_dir = Path(run_dir)
    for folder in restore_lost_checkpoints(run_dir):  # the best/ copy was its last one: keep it
        print(f"{folder.relative_to(run_dir)} was missing: restored from best/{folder.name}", flush=True)
    staging = staging_dir(run_dir / "best")
    try:
        exported = []
        for record in front.front:
            if record.number not in skip and record.checkpoint and (run_dir / record.checkpoint).is_dir():
                final = finalized(run_dir, record.checkpoint)  # the finalist stage's weights, when it ran
                source = final[0] if final else run_dir / record.checkpoint
                target = staging / Path(record.checkpoint).name
                previous = run_dir / "best" / target.name
                if deploy and _already_deployed(previous, source):
                    shutil.copytree(previous, target)
                else:
                    shutil.copytree(source, target)
                    if final:
                        mark_finalized(target, final[1])
                    if deploy:
                        prepare_deployment(target)
                exported.append(run_dir / "best" / target.name)
        replace_folder(staging, run_dir / "best")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return exported


def environment(settings: RunSettings, records: list[TrialRecord]) -> dict[str, str]:
    """Versions read from package metadata (no heavy imports) and the devices the trials ran on."""
    env = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in VERSIONED:
        try:
            env[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    train = sorted({r.result.timing.train_device for r in records if r.result.timing.train_device})
    latency = sorted({r.latency_device for r in records if r.latency_device})
    env["device (training)"] = ", ".join(train) or str(settings.device or "?")
    env["device (latency)"] = ", ".join(latency) or "not measured"
    if settings.torch_threads:
        env["torch threads"] = str(settings.torch_threads)
    return env


def _warn(what: str, error: Exception) -> str:
    text = f"{what} unavailable ({type(error).__name__}: {error})"
    print(f"report: {text}", file=sys.stderr, flush=True)
    return text


def report_extras(run_dir: Path, settings: RunSettings, records: list[TrialRecord], *, study: Any = None,
                  overlays: bool = True, overlay_images: int = 3) -> dict[str, Any]:
    """``importance`` / ``overlays`` / ``environment`` keyword arguments for ``render_report``.

    ``study`` is an Optuna study when the caller has one; otherwise it is reloaded from
    ``settings.storage`` and ``settings.study`` (both set by ``nas-search`` and ``nas-report``).
    """
    extras: dict[str, Any] = {"environment": environment(settings, records), "finalists": read_summary(run_dir)}
    try:
        if study is not None:
            extras["importance"] = param_importances(study)
        elif settings.storage and settings.study:
            extras["importance"] = importances_from_storage(settings.storage, settings.study)
    except Exception as error:  # an optional section: say why it is missing instead of failing the run
        extras["importance"] = {"targets": {}, "note": _warn("importance", error)}
    if overlays and (Path(run_dir) / "best").is_dir():
        try:
            extras["overlays"] = prediction_overlays(run_dir, lambda: _validation_data(settings),
                                                     image_size=settings.image_size, n_images=overlay_images)
        except Exception as error:
            note = _warn("prediction overlays", error)
            front = pareto_front(records, run_objectives(settings)).front
            extras["overlays"] = {r.number: {"error": note} for r in front}
    return extras


def _validation_data(settings: RunSettings) -> Any:
    """The run's validation split for the overlays, as the search made it (data, image size, seed, classes)."""
    if settings.data is None or settings.image_size is None or settings.seed is None:
        raise ValueError("the run's settings name no data, image_size or seed")
    return validation_data(settings.data, image_size=settings.image_size, seed=settings.seed,
                           num_classes=settings.num_classes)


def write_run_outputs(records: list[TrialRecord], run_dir: Path, *, title: str, settings: RunSettings,
                      study: Any = None, overlays: bool = True, overlay_images: int = 3,
                      export: bool = True, latency_pass: bool = True) -> ParetoFront:
    """Table, Pareto checkpoints, static figures and the full report, each written atomically.

    ``export=False`` keeps ``best/`` as it is (``nas-report`` rebuilds the page without touching models);
    ``latency_pass=False`` keeps the latencies the run has (``latency.json`` or the search's).
    """
    run_dir = Path(run_dir)
    ending = search_end(run_dir)  # nas-search's budget and why it stopped: the report states both
    budget = {key: ending[key] for key in ("trials", "timeout") if ending.get(key) is not None}
    settings = settings.beneath(**budget)  # the Reproduce commands carry the budget
    remeasured = _latency_pass(records, run_dir, settings) if export and latency_pass else {}
    records = with_remeasured_latency(records, run_dir)
    write_trials_csv(records, run_dir / "trials.csv")
    failpoint("report")
    front = pareto_front(records, run_objectives(settings))
    trivial = read_trivial(run_dir)  # the constant predictors' Dice; None for runs made before trivial.json
    if export:
        export_best(front, run_dir, skip=below_trivial(records, trivial))
        annotate_best(run_dir, remeasured)
    first = max((r.number for r in records), default=-1) + 1
    # compressed variants and baselines are drawn (own markers) but never exported to best/
    shown = (records + compressed_records(run_dir, first_number=first)
             + with_remeasured_latency(baseline_records(run_dir), run_dir))
    save_static_figures(shown, run_dir, objectives=run_objectives(settings),  # + pareto_objectives when not Dice
                        trivial=trivial)
    extras = report_extras(run_dir, settings, records, study=study, overlays=overlays,
                           overlay_images=overlay_images)
    best = {int(p.name.rsplit("_", 1)[-1]): f"best/{p.name}" for p in sorted((run_dir / "best").glob("trial_*"))
            if p.name.rsplit("_", 1)[-1].isdigit()}
    render_report(shown, run_dir / "report.html", title=title, config=settings.to_dict(), exported=best,
                  conventions=_notes(run_dir), front_objectives=run_objectives(settings), trivial=trivial,
                  ending=ending, **extras)
    return front


def _latency_pass(records: list[TrialRecord], run_dir: Path, settings: RunSettings) -> dict[str, Any]:
    """The end-of-search latency pass; a failure keeps the search-time numbers and says why."""
    try:
        return remeasure_latency(records + baseline_records(run_dir), run_dir, settings, run_objectives(settings))
    except Exception as error:  # an exporter or runtime refusing one model must not lose the report
        _warn("latency re-measurement", error)
        return {}


def _notes(run_dir: Path) -> dict[str, str]:
    """Conventions the page states for this run: how the front's latency was measured, which precisions pay."""
    notes = {}
    latency = latency_note(run_dir)
    if latency:
        notes["Latency of the fronts"] = latency
    precisions = precision_notes(read_index(run_dir))
    if precisions:
        notes["ONNX precisions of the compressed models"] = " · ".join(precisions)
    return notes
