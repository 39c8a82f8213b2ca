"""The finalist stage: a search trains many candidates briefly; a user deploys one, trained properly.

The Pareto members (at most K, spread along the front) and the run's baselines are retrained with a
longer recipe and several seeds. Each (entrant, seed) is its own checkpoint folder,
``<run>/finalists/<entrant>/seed_<S>/``, written atomically: a rerun after a kill trains only the
missing ones, and a failed seed is logged and skipped (retried by the next run), never fatal. The
summary (``finalists.json``) holds per entrant the Dice per seed, mean +- std, a 95 % interval
(``nas.results.finalist_stats``), the other metrics and costs, and the seed ``best/`` deploys: the median
seed by *validation* Dice, so the test numbers stay untouched by any choice. Plain Python: records
in, files out; no Optuna.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from search_spaces import get_space

from nas.data.loading import SegmentationData
from nas.deploy.checkpoint import METRICS_FILE
from nas.engine.trial import TrialSettings, failure_reason, release_memory, train_and_save
from nas.failpoints import failpoint
from nas.io import atomic_write_json, read_json
from nas.results import finalist_stats as stats
from nas.results.family_records import FAMILY_KEY, family_name
from nas.results.pareto import Objective
from nas.results.records import TrialRecord

FINALISTS_DIR = "finalists"
SUMMARY_FILE = "finalists.json"
EPOCHS_FACTOR = 3  # --final-epochs default: this many times the search's epochs
DEFAULT_SEEDS = 3
QUALITY_KEYS = ("dice", "iou", "precision", "sensitivity", "specificity", "hd95")
CHOICE = ("the median seed by validation Dice (the lower middle one for an even count): a typical training, "
          "not the luckiest, chosen without looking at the test images")
Log = Callable[[str], None]
DICE = Objective("dice", "maximize")


@dataclass(frozen=True)
class Entrant:
    """One architecture to retrain: a Pareto member of the search, a baseline preset, or a member of
    the baseline family (a warm-start trial of the study, or a baseline trained beside it)."""

    key: str  # folder under finalists/: "trial_0006", "baseline_unet-16" or "baseline_family-unet-m1"
    label: str  # "trial 6", "unet-16", "family-unet-m1" or "family-unet-m1 (trial 2)"
    kind: str  # "finalist" or "baseline"
    space: str
    spec: Mapping[str, Any]
    search_dice: float | None  # validation Dice of the short search training
    trial: int | None = None
    family: str | None = None  # the family member's name


def spread(front: Sequence[TrialRecord], k: int, quality: Objective = DICE) -> list[TrialRecord]:
    """At most ``k`` members of ``front`` (sorted cheapest first), evenly spaced by rank, both ends
    kept; ``k == 1`` keeps the best by the run's quality objective (Dice by default; ``hd95`` lowest)."""
    members = list(front)
    if k <= 0 or not members:
        return []
    if len(members) <= k:
        return members
    if k == 1:
        sign = 1.0 if quality.direction == "maximize" else -1.0
        return [max(members, key=lambda r: (-math.inf if (v := r.measure(quality.name)) is None else sign * v,
                                            -r.number))]
    picks = sorted({round(i * (len(members) - 1) / (k - 1)) for i in range(k)})
    return [members[i] for i in picks]


def entrants(front: Sequence[TrialRecord], baselines: Sequence[TrialRecord], k: int, space: str,
             family: Sequence[TrialRecord] = (), quality: Objective = DICE) -> list[Entrant]:
    """The chosen front members, then every baseline (by preset or family member name), then the
    family's warm-start trials (``family``: study records whose metrics name their member)."""
    from search_spaces.presets import get_preset

    out = [Entrant(f"trial_{r.number:04d}", f"trial {r.number}", "finalist", space, dict(r.spec or {}), r.dice,
                   r.number) for r in spread(front, k, quality) if r.spec]
    for record in baselines:
        member = record.params.get(FAMILY_KEY)
        name = str(member or record.params.get("preset") or Path(record.checkpoint or "").name)
        out.append(Entrant(f"baseline_{name}", name, "baseline", space if member else get_preset(name).space,
                           dict(record.spec or {}), record.dice, family=member))
    for record in family:
        member = family_name(record)
        if record.spec and member:
            out.append(Entrant(f"trial_{record.number:04d}", f"{member} (trial {record.number})", "baseline", space,
                               dict(record.spec), record.dice, record.number, member))
    return out


def seed_folder(run_dir: Path, entrant: Entrant, seed: int) -> Path:
    return Path(run_dir) / FINALISTS_DIR / entrant.key / f"seed_{seed}"


def train_entrants(items: Sequence[Entrant], data: SegmentationData, settings: TrialSettings, seeds: Sequence[int],
                   run_dir: Path, *, log: Log = print,
                   on_epoch: Callable[[int, float, float], None] | None = None) -> dict[tuple[str, int], str]:
    """Train every (entrant, seed) that has no checkpoint yet; returns the failures' reasons.

    ``settings.train`` is the final recipe; each seed trains with ``seed`` (data and split unchanged).
    """
    failures: dict[tuple[str, int], str] = {}
    for entrant in items:
        space = get_space(entrant.space)
        spec = space.spec_from_dict(dict(entrant.spec))
        for seed in seeds:
            folder = seed_folder(run_dir, entrant, seed)
            if (folder / METRICS_FILE).is_file():
                log(f"finalist {entrant.label} seed {seed}: already trained ({folder.relative_to(run_dir)})")
                continue
            log(f"finalist {entrant.label} seed {seed}: {settings.train.epochs} epochs  {spec.summary()}")
            extra = {"kind": "finalist", "entrant": entrant.key, "seed": seed, "final_epochs": settings.train.epochs}
            if entrant.trial is not None:
                extra["trial"] = entrant.trial
            try:
                result = train_and_save(spec, space, data, replace(settings, train=replace(settings.train, seed=seed)),
                                        folder, extra=extra, on_epoch=on_epoch)
            except Exception as error:  # one seed's failure must not end the stage (KeyboardInterrupt does)
                failures[(entrant.key, seed)] = failure_reason(error)
                log(f"    -> failed: {failures[(entrant.key, seed)]} (the next run retries it)")
                release_memory()
                continue
            quality = result.quality
            threshold = quality.threshold  # None: a K-class model (argmax, docs/multiclass.md)
            dice = quality.dice_at_threshold if quality.dice_at_threshold is not None else quality.dice
            log(f"    -> val dice {dice:.3f} {'by argmax' if threshold is None else f'at threshold {threshold:g}'}  "
                f"{result.timing.seconds:.1f} s")
            failpoint("finalist_seed")
    return failures


def other_recipes(items: Sequence[Entrant], run_dir: Path, seeds: Sequence[int], epochs: int) -> list[str]:
    """Seed folders already trained for another number of final epochs: mixing them would compare
    unlike trainings, so the stage refuses to run (as a search refuses a resume with other settings)."""
    found = []
    for entrant in items:
        for seed in seeds:
            metrics = _read_json(seed_folder(run_dir, entrant, seed) / METRICS_FILE)
            if metrics is not None and metrics.get("final_epochs") not in (None, epochs):
                found.append(f"{entrant.key}/seed_{seed} ({metrics['final_epochs']} epochs)")
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json(path)  # size- and depth-bounded: the run may come from someone else
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _seed_rows(run_dir: Path, entrant: Entrant, seeds: Sequence[int], split: str) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        folder = seed_folder(run_dir, entrant, seed)
        metrics = _read_json(folder / METRICS_FILE)
        if metrics is None:
            continue
        quality = metrics.get("quality") or {}
        per_image = (metrics.get("per_image_dice") or {}).get(split) or []
        rows.append({"seed": seed, "folder": folder.relative_to(run_dir).as_posix(),
                     "val_dice": metrics.get("dice_at_threshold", metrics.get("dice")),
                     "threshold": metrics.get("threshold", 0.5), "dice": (quality.get(split) or {}).get("dice"),
                     "per_image": per_image, "quality": quality.get(split) or {},
                     "costs": {k: metrics.get(k) for k in ("macs", "params", "latency_ms")},
                     "epochs_run": metrics.get("epochs_run"), "seconds": metrics.get("seconds")})
    return rows


def choose_seed(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The median row by validation Dice (lower middle for an even count; ties by seed)."""
    ordered = sorted(rows, key=lambda r: (r["val_dice"] if r["val_dice"] is not None else -1.0, r["seed"]))
    return ordered[(len(ordered) - 1) // 2]


def _entry(entrant: Entrant, rows: list[dict[str, Any]], failures: Mapping[tuple[str, int], str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": entrant.key, "label": entrant.label, "kind": entrant.kind,
                             "trial": entrant.trial, "family": entrant.family, "search_dice": entrant.search_dice,
                             "failed": {str(seed): reason for (key, seed), reason in failures.items()
                                        if key == entrant.key}}
    scored = [r for r in rows if r["per_image"]]
    entry["seeds"] = [{k: r[k] for k in ("seed", "dice", "val_dice", "threshold", "epochs_run", "seconds", "folder")}
                      for r in rows]
    if not scored or len({len(r["per_image"]) for r in scored}) != 1:
        return entry
    table = [r["per_image"] for r in scored]
    mean, std = stats.mean_std(stats.seed_means(table))
    entry.update(dice=mean, std=std, ci=list(stats.bootstrap_ci(table)), per_image=table,
                 metrics={k: statistics.fmean(v) for k in QUALITY_KEYS
                          if (v := [r["quality"][k] for r in scored if isinstance(r["quality"].get(k), (int, float))])},
                 costs={k: statistics.median(v) for k in ("macs", "params", "latency_ms")
                        if (v := [r["costs"][k] for r in scored if isinstance(r["costs"].get(k), (int, float))])})
    chosen = choose_seed(scored)
    entry["chosen"] = {"seed": chosen["seed"], "folder": chosen["folder"], "threshold": chosen["threshold"],
                       "val_dice": chosen["val_dice"], "dice": chosen["dice"], "why": CHOICE}
    return entry


def summarize(items: Sequence[Entrant], run_dir: Path, seeds: Sequence[int], *, split: str,
              failures: Mapping[tuple[str, int], str] | None = None, info: Mapping[str, Any] | None = None,
              ) -> dict[str, Any]:
    """Everything the report and ``best/`` need, from the seed folders on disk (plain JSON data)."""
    entries = [_entry(e, _seed_rows(run_dir, e, seeds, split), failures or {}) for e in items]
    done = [e for e in entries if "dice" in e]
    ranked = [e for e in done if e["search_dice"] is not None]
    tau = stats.kendall_tau([e["search_dice"] for e in ranked], [e["dice"] for e in ranked]) if ranked else None
    contenders = {e["key"]: stats.Contender(e["label"], e["dice"], e["costs"].get("macs"), e["costs"].get("latency_ms"),
                                            e["costs"].get("params")) for e in done}
    verdicts = []
    for base in (e for e in done if e["kind"] == "baseline"):
        finals = [e for e in done if e["kind"] == "finalist"]
        differences = {e["label"]: stats.difference_ci(e["per_image"], base["per_image"]) for e in finals
                       if len(e["per_image"][0]) == len(base["per_image"][0])}
        verdict = stats.verdict(contenders[base["key"]], [contenders[e["key"]] for e in finals], differences)
        verdicts.append({"baseline": verdict.baseline, "finalist": verdict.finalist, "savings": verdict.savings,
                         "difference": list(verdict.difference) if verdict.difference else None, "text": verdict.text})
    return {"settings": {**dict(info or {}), "seeds": list(seeds), "split": split, "bootstrap": stats.BOOTSTRAP,
                         "margin": stats.MARGIN, "choice": CHOICE},
            "entrants": entries, "tau": {"value": tau, "n": len(ranked)}, "verdicts": verdicts}


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    return atomic_write_json(Path(run_dir) / FINALISTS_DIR / SUMMARY_FILE, dict(summary))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``finalists.json``, or None (no finalist stage ran, or the file is unreadable or not
    shaped as this tool writes it: the run may come from someone else, and the report reads it)."""
    summary = _read_json(Path(run_dir) / FINALISTS_DIR / SUMMARY_FILE)
    return summary if summary is not None and _well_formed(summary) else None


def _well_formed(summary: Mapping[str, Any]) -> bool:
    """Objects and lists where ``write_summary`` puts them (the report renders every other value as text)."""
    def objects(items: Any) -> bool:
        return isinstance(items, list) and all(isinstance(item, dict) for item in items)

    entrants = summary.get("entrants") or []
    return (all(isinstance(summary.get(k) or {}, dict) for k in ("settings", "tau", "trivial"))
            and objects(summary.get("verdicts") or []) and objects(entrants)
            and all(isinstance(e.get(k) or {}, dict) for e in entrants for k in ("metrics", "costs", "failed", "chosen"))
            and all(objects(e.get("seeds") or []) and isinstance(e.get("ci") or [], list) for e in entrants))


def finalized(run_dir: Path, checkpoint: str | None) -> tuple[Path, dict[str, Any]] | None:
    """For a search checkpoint (``trials/trial_0006``): the finalised seed folder ``best/`` deploys
    instead, with what to tell its reader; None when that trial was not finalised."""
    summary = read_summary(run_dir)
    if not summary or not checkpoint:
        return None
    key = Path(checkpoint).name
    for entry in summary.get("entrants") or []:
        chosen = entry.get("chosen")
        if entry.get("key") == key and entry.get("trial") is not None and chosen:  # a study trial, family or not
            folder = Path(run_dir) / str(chosen.get("folder"))
            settings = summary.get("settings") or {}
            inside = folder.resolve().is_relative_to((Path(run_dir) / FINALISTS_DIR).resolve())  # never ../elsewhere
            if inside and (folder / METRICS_FILE).is_file():
                return folder, {"seed": chosen.get("seed"), "why": chosen.get("why"), "seeds": len(entry.get("seeds") or []),
                                "dice_mean": entry.get("dice"), "dice_std": entry.get("std"),
                                "dice_ci": entry.get("ci"), "split": settings.get("split"),
                                "epochs": settings.get("final_epochs")}
    return None



def mark_finalized(folder: Path, info: Mapping[str, Any]) -> None:
    """Add ``finalized`` (which seed, why, the seeds' Dice) to a deployed copy's ``metrics.json``."""
    path = Path(folder) / METRICS_FILE
    metrics = _read_json(path) or {}
    atomic_write_json(path, {**metrics, "finalized": dict(info)})
