"""Checkpoints of a run directory that must never be lost or overwritten, and notes about them.

* ``restore_lost_checkpoints``: ``best/trial_N`` is a copy of ``trials/trial_N``. When the trial's own
  folder was deleted, the ``best/`` copy is the model's last one; it is copied back to ``trials/``
  before ``best/`` is rebuilt, so a rebuild (which drops models that left the front) never deletes it.
* ``orphan_checkpoints``: checkpoint folders whose trial number the study does not have: the study
  was deleted or replaced, and a new one would number its trials from 0 again and overwrite them.
* ``annotate_best``: the end-of-search latency of each ``best/`` model written into its
  ``metrics.json`` and model card.
* ``precision_notes``: which ONNX precision of a compressed model pays on the device it was measured
  on, and which does not (an fp16 model slower than fp32 on a CPU is not an option there).
* ``trivial.json`` (``ensure_trivial`` / ``read_trivial``): the Dice of the constant predictors on the
  run's validation and test splits (``nas.train.trivial``), computed where the data is loaded (a
  search, the finalist stage); a run without it (made before it existed) shows nothing.
* ``below_trivial``: the finished trials whose validation Dice is not above the best trivial
  predictor's: never deployed to ``best/``, drawn apart in the report, counted by the search.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

from nas.deploy.checkpoint import METRICS_FILE, WEIGHTS_FILE, replace_folder
from nas.deploy.model_card import write_model_card
from nas.io import atomic_write_json, read_json, staging_dir
from nas.train.trivial import trivial_baselines

_TRIAL = re.compile(r"^trial_(\d+)$")
CHECKPOINT_DIRS = ("trials", "best")
TRIVIAL_FILE = "trivial.json"
SEARCH_END_FILE = "search_end.json"  # written by nas-search: its budget and how it ended (nas.run.search)


def _numbered(folder: Path) -> dict[int, Path]:
    found = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = _TRIAL.match(path.name)
            if match and path.is_dir() and (path / WEIGHTS_FILE).is_file():
                found[int(match.group(1))] = path
    return found


def restore_lost_checkpoints(run_dir: Path) -> list[Path]:
    """Copy ``best/trial_N`` back to ``trials/trial_N`` where the latter is gone; returns the restored folders."""
    run_dir = Path(run_dir)
    trials, restored = _numbered(run_dir / "trials"), []
    for number, copy in _numbered(run_dir / "best").items():
        target = run_dir / "trials" / copy.name
        if number in trials or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(target)
        try:
            shutil.copytree(copy, staging, dirs_exist_ok=True)
            replace_folder(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        restored.append(target)
    return restored


def orphan_checkpoints(run_dir: Path, numbers: Iterable[int]) -> list[str]:
    """``trials/trial_N`` and ``best/trial_N`` folders (relative) whose N is not among the study's trial ``numbers``."""
    known = set(numbers)
    return [f"{sub}/{path.name}" for sub in CHECKPOINT_DIRS
            for number, path in _numbered(Path(run_dir) / sub).items() if number not in known]


def annotate_best(run_dir: Path, remeasured: dict[str, Any]) -> None:
    """Write each ``best/trial_N`` model's re-measured latency into its ``metrics.json`` and card."""
    for name, entry in (remeasured.get("models") or {}).items():
        folder = Path(run_dir) / "best" / Path(name).name
        if not name.startswith("trials/") or not (folder / METRICS_FILE).is_file():
            continue
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        search = entry.get("search_latency_ms") or metrics.get("latency_ms_search", metrics.get("latency_ms"))
        atomic_write_json(folder / METRICS_FILE, {**metrics, "latency_ms": entry["latency_ms"],
                                                   "latency_device": entry.get("device"),
                                                   "latency_ms_search": search, "latency_remeasured": entry})
        write_model_card(folder)


def precision_notes(variants: Iterable[dict[str, Any]]) -> list[str]:
    """One line per compressed variant with ONNX precisions: which pay on the measured device, which do not."""
    lines = []
    for variant in variants:
        metrics = variant.get("metrics") or {}
        quantization = metrics.get("quantization") or {}
        precisions = quantization.get("precisions") or {}
        fp32 = (precisions.get("fp32") or {}).get("latency_ms")
        if not variant.get("kept") or not isinstance(fp32, (int, float)):
            continue
        device = quantization.get("device") or "CPU (ONNX Runtime)"
        parts = []
        for name in ("int8", "fp16"):
            entry = precisions.get(name) or {}
            latency = entry.get("latency_ms")
            if entry.get("error"):
                parts.append(f"{name} not measured ({entry['error']})")
            elif isinstance(latency, (int, float)) and latency > fp32:
                parts.append(f"{name} does not pay on {device}: {latency:.3g} ms, slower than fp32's {fp32:.3g} ms "
                             "(not an option there)")
            elif isinstance(latency, (int, float)):
                parts.append(f"{name} {fp32 / latency:.2f}x faster than fp32 on {device} ({latency:.3g} ms)")
        if parts:
            lines.append(f"{variant.get('name')}: " + "; ".join(parts))
    return lines


def read_trivial(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``trivial.json``, or None (an older run, or an unreadable file): never computed here."""
    try:
        trivial = read_json(Path(run_dir) / TRIVIAL_FILE)  # size- and depth-bounded
    except (OSError, ValueError):
        return None
    if not isinstance(trivial, dict) or not isinstance(trivial.get("splits"), dict):
        return None
    blocks = trivial["splits"].values()  # the report computes with each split's Dice and constants
    numbers = all(isinstance(b, dict) and isinstance(b.get("constants") or {}, dict)
                  and all(isinstance(v, (int, float)) for v in (b.get("constants") or {}).values()) for b in blocks)
    return trivial if numbers else None


def ensure_trivial(run_dir: Path, data: Any) -> dict[str, Any]:
    """``trivial.json`` of ``data`` (the run's ``SegmentationData``), computed (milliseconds: a pass over
    the masks, so never stale) and written atomically when the stored one differs."""
    trivial = trivial_baselines(data)
    if read_trivial(run_dir) != json.loads(json.dumps(trivial)):
        atomic_write_json(Path(run_dir) / TRIVIAL_FILE, trivial)
    return trivial


def trivial_floor(trivial: dict[str, Any] | None) -> tuple[str, float] | None:
    """(name, validation Dice) of the best trivial predictor of ``trivial.json``, or None without one."""
    block = ((trivial or {}).get("splits") or {}).get("val")
    if not isinstance(block, dict) or not isinstance(block.get("dice"), (int, float)):
        return None
    return str(block.get("best")), float(block["dice"])


def below_trivial(records: Iterable[Any], trivial: dict[str, Any] | None) -> set[int]:
    """Numbers of the finished trials whose validation Dice is not above the best trivial predictor's."""
    floor = trivial_floor(trivial)
    if floor is None:
        return set()
    return {r.number for r in records if r.finished and r.dice is not None and r.dice <= floor[1]}


def search_end(run_dir: str | Path) -> dict[str, Any]:
    """``search_end.json`` of a run, its fields checked (a file from someone else is input): ``trials``
    and ``finished`` / ``below_trivial`` counts, ``timeout`` (finite seconds > 0), ``stopped`` (why the
    search stopped early, a word); a missing, unreadable or wrong field is left out, so ``{}`` at worst."""
    try:
        data = read_json(Path(run_dir) / SEARCH_END_FILE)  # size- and depth-bounded
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12

    checks = {"trials": count, "finished": count, "below_trivial": count,
              "timeout": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e12,
              "stopped": lambda v: isinstance(v, str) and v.isidentifier() and len(v) <= 40}
    return {key: data[key] for key, ok in checks.items() if key in data and (data[key] is None or ok(data[key]))}
