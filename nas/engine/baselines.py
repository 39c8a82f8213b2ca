"""Baseline presets trained with the search's own data and recipe, so the report shows where the
search stands against known designs (``nas-search --baselines unet-16,mobile-resunet``).

Each baseline is an ordinary checkpoint under ``<run>/baselines/<preset>/`` whose metrics carry
``kind: "preset"``; the report draws them with their own marker and they never enter ``best/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from search_spaces import get_space
from search_spaces.presets import get_preset

from nas.data.loading import SegmentationData
from nas.engine.trial import TrialSettings, train_and_save
from nas.results.outcome import TrialState
from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind

BASELINES_DIR = "baselines"


def train_baselines(names: list[str], data: SegmentationData, settings: TrialSettings, run_dir: Path,
                    *, log: Callable[[str], None] = print,
                    on_epoch: Callable[[int, float, float], None] | None = None) -> list[Path]:
    """Train each preset once per run directory (an existing checkpoint is kept: resumable)."""
    folders = []
    for name in names:
        preset = get_preset(name)
        folder = Path(run_dir) / BASELINES_DIR / name
        folders.append(folder)
        if (folder / "metrics.json").is_file():
            log(f"baseline {name}: already trained ({folder})")
            continue
        log(f"baseline {name}  {preset.spec.summary()}")
        metrics = train_and_save(preset.spec, get_space(preset.space), data, settings, folder,
                                 extra={"kind": "preset", "preset": name}, on_epoch=on_epoch)
        log(f"    -> dice {metrics['dice']:.3f}  {metrics['macs'] / 1e6:.1f} MMAC  "
            f"{metrics['params'] / 1e3:.1f} k params  {metrics['seconds']:.1f} s")
    return folders


def baseline_records(run_dir: Path) -> list[TrialRecord]:
    """The run's trained baselines as records; numbered -1, -2, ... so they never clash with trials."""
    records = []
    folders = sorted(p.parent for p in (Path(run_dir) / BASELINES_DIR).glob("*/metrics.json"))
    for index, folder in enumerate(folders, start=1):
        try:
            metrics: dict[str, Any] = json.loads((folder / "metrics.json").read_text())
            spec = json.loads((folder / "spec.json").read_text()).get("spec")
        except (OSError, ValueError):
            continue  # a half-copied folder is not a baseline; the next run retrains it
        records.append(TrialRecord.from_metrics(
            -index, TrialState.COMPLETE, metrics, params={"preset": folder.name}, spec=spec,
            checkpoint=f"{BASELINES_DIR}/{folder.name}", kind=RecordKind.PRESET))
    return records
