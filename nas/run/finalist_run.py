"""The finalist stage on a run directory: after the trials of ``nas-search --finalists K``, or alone
with ``nas-finalize --run DIR``. Both hand ``finalize_run`` the run's records and search settings;
it retrains (``nas.stages.finalist_training``), writes ``finalists/finalists.json`` and leaves ``best/`` and the
report to ``write_run_outputs``, which deploy the finalised weights and show the stage.

The data is loaded as the search loaded it (same source, seed and splits), so the test images the
final numbers come from were never trained on nor selected on. A run made before test splits existed
records no ``test_fraction``: its folder data then gets none (those images were trained on), and the
stage reports validation numbers, labelled as such. Beside them the summary keeps the trivial
predictors' Dice on the same split (``trivial.json``, computed here for a run made before it existed).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from search_spaces import get_space

from nas.costs.footprint import footprint_problem, spec_footprint
from nas.data.errors import DataError
from nas.data.loading import SegmentationData, load_data
from nas.deploy.checkpoint_checks import first_line
from nas.engine.trial import TrialSettings
from nas.io import printable
from nas.results.family_records import family_records, searched_records
from nas.results.pareto import pareto_front
from nas.results.records import TrialRecord
from nas.run.open import OpenedRun, RunError, open_run
from nas.run.outputs import run_objectives
from nas.run.run_files import below_trivial, ensure_trivial
from nas.run.settings import RunSettings
from nas.stages.baseline_training import baseline_records
from nas.stages.finalist_training import (DEFAULT_SEEDS, EPOCHS_FACTOR, entrants, other_recipes, summarize,
                                          train_entrants, write_summary)
from nas.train.trainer import TrainConfig
from reports.trivial import trivial_line

Log = Callable[[str], None]


class FinalizeError(ValueError):
    """The stage cannot run as asked (one line): e.g. finalists/ was trained with other final epochs."""


@dataclass(frozen=True)
class FinalOptions:
    finalists: int  # K: at most this many Pareto members, spread along the front
    final_epochs: int | None = None  # default: EPOCHS_FACTOR x the search's epochs
    final_seeds: int = DEFAULT_SEEDS
    device: str = "auto"

    def epochs(self, settings: RunSettings) -> int:
        return self.final_epochs or EPOCHS_FACTOR * (settings.epochs or 1)


def final_recipe(settings: RunSettings, options: FinalOptions) -> TrialSettings:
    """The search's recipe (its stored settings) with the final epochs and ``options.device``."""
    image_size = _image_size(settings)
    recipe = dict(settings.recipe or {})
    given = {"epochs", "batch_size", "patch_size", "seed", "device", "patches_per_epoch"}
    known = {f.name for f in fields(TrainConfig)} - given
    train = TrainConfig(**{k: v for k, v in recipe.items() if k in known},
                        epochs=options.epochs(settings), batch_size=_given(settings.batch_size, 8),
                        patch_size=image_size, seed=_given(settings.seed, 0),
                        device=options.device, patches_per_epoch=settings.patches_per_epoch)
    return TrialSettings(image_size=image_size, train=train, latency_engine=settings.latency_engine or "torch")


def load_run_data(settings: RunSettings) -> SegmentationData:
    """The search's data with its splits (``DataError`` if the source is gone or changed)."""
    if settings.data is None:
        raise ValueError("the run's settings name no data")
    source = settings.data
    recipe = settings.recipe or {}
    test_fraction = settings.test_fraction  # None: a run made before test splits, its folder data gets none
    if test_fraction is None and not source.startswith("synthetic"):
        test_fraction = 0.0
    return load_data(source, image_size=_image_size(settings), seed=_given(settings.seed, 0),
                     val_fraction=float(recipe.get("val_fraction", 0.25)), test_fraction=test_fraction,
                     num_classes=settings.num_classes)  # label maps: the class count the search had


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def _image_size(settings: RunSettings) -> int:
    if settings.image_size is None:
        raise ValueError("the run's settings name no image_size")
    return settings.image_size


def open_for_finalize(run_dir: Path, storage: str | None = None,
                      study_name: str | None = None) -> tuple[OpenedRun, SegmentationData]:
    """The run's records and settings and its data as the search split it; ``RunError`` (one line)
    when the run has no search settings, no finished trial, or its data cannot be loaded."""
    opened = open_run(run_dir, storage=storage, study_name=study_name)
    if not opened.settings.image_size or not opened.settings.data:
        raise RunError(f"--run {run_dir}: its study holds no search settings (not written by nas-search)")
    if not any(r.finished for r in opened.records):
        raise RunError(f"--run {run_dir}: no finished trial to finalise")
    try:
        return opened, load_run_data(opened.settings)
    except (DataError, ValueError) as error:
        raise RunError(f"the run's data {opened.settings.data}: {error}") from None


def finalize_run(run_dir: Path, records: Sequence[TrialRecord], settings: RunSettings,
                 data: SegmentationData, options: FinalOptions, *, log: Log = print) -> dict[str, Any]:
    """Retrain the chosen front members and the baselines; write and return the summary.

    ``FinalizeError`` (nothing trained) when ``finalists/`` holds seeds of other final epochs."""
    run_dir = Path(run_dir)
    # finalists come from the searched front of the models above the trivial predictor (the ones the
    # search deploys: the cheap end of a log-MAC front is often a model that learned nothing); the
    # family's warm-start trials enter as baselines
    trivial_splits = ensure_trivial(run_dir, data)
    junk = below_trivial(records, trivial_splits)
    front = pareto_front([r for r in searched_records(records) if r.number not in junk], run_objectives(settings)).front
    family = [r for r in family_records(records) if r.finished]
    items = entrants(front, baseline_records(run_dir), options.finalists, settings.space or "resunet",
                     family, quality=run_objectives(settings)[0])  # k = 1: the best by the run's quality objective
    if not items:
        raise FinalizeError(f"nothing to finalise: no model of the searched front is above the trivial predictor "
                            f"({len(junk)} left out) and the run has no baselines")
    problem = entrant_problem(items, data.in_channels)
    if problem:
        raise FinalizeError(problem)
    final = final_recipe(settings, options)
    seeds = [final.train.seed + i for i in range(options.final_seeds)]
    split = "test" if data.test_images else "val"
    other = other_recipes(items, run_dir, seeds, final.train.epochs)
    if other:
        raise FinalizeError(f"--final-epochs {final.train.epochs}: {run_dir / 'finalists'} holds seeds trained for "
                            f"other final epochs ({', '.join(other[:3])}); pass the same --final-epochs or move "
                            "finalists/ away")
    left_out = f" ({len(junk)} trial(s) not above the trivial predictor left out)" if junk else ""
    log(f"finalists: {sum(e.kind == 'finalist' for e in items)} of {len(front)} Pareto member(s){left_out} and "
        f"{sum(e.kind == 'baseline' for e in items)} baseline(s) x {len(seeds)} seed(s), {final.train.epochs} epochs "
        f"each; final numbers on the {'test' if split == 'test' else 'validation (no test split)'} images"
        f"{'' if not data.test_note else ' (' + data.test_note + ')'}")
    def on_epoch(epoch: int, loss: float, dice: float) -> None:
        log(f"    epoch {epoch}/{final.train.epochs}  loss {loss:.3f}  val dice {dice:.3f}")

    failures = train_entrants(items, data, final, seeds, run_dir, log=log, on_epoch=on_epoch)
    info = {"finalists": options.finalists, "final_epochs": final.train.epochs,
            "search_epochs": settings.epochs, "split_note": data.test_note,
            "test_images": len(data.test_images) if split == "test" else 0, "val_images": len(data.val_images)}
    summary = summarize(items, run_dir, seeds, split=split, failures=failures, info=info)
    summary["trivial"] = trivial = trivial_splits["splits"].get(split)  # the floor, same images
    write_summary(run_dir, summary)
    if trivial:
        log(f"{trivial_line(trivial, 3)} (the floor every final Dice above is measured against)")
    for verdict in summary["verdicts"]:
        log(f"verdict: {verdict['text']}")
    tau = summary["tau"]
    if tau["value"] is not None:
        log(f"search vs final Dice: Kendall tau {tau['value']:+.2f} over {tau['n']} entrants")
    return summary


def entrant_problem(items: Sequence[Any], in_channels: int) -> str | None:
    """Why an entrant's architecture (a spec from the study or a baseline's ``spec.json``: input from
    whoever made the run) cannot be trained here, counted on the meta device before anything is
    allocated: a spec that does not parse, or weights, gradients and Adam's moments that would not fit."""
    for entrant in items:
        try:
            space = get_space(entrant.space)
            spec = space.spec_from_dict(dict(entrant.spec))
            footprint = spec_footprint(space, spec, in_channels, getattr(spec, "out_channels", 1))
        except (TypeError, ValueError, RuntimeError) as error:
            return f"{printable(entrant.label)}: its architecture cannot be read ({first_line(error)})"
        problem = footprint_problem(footprint, copies=4)
        if problem:
            return f"{printable(entrant.label)}: {problem}; nothing was trained"
    return None
