"""Baselines trained with the search's own data and recipe, so the report shows where the search
stands against known designs: presets (``nas-search --baselines unet-16,mobile-resunet``) and the
baseline family (``--baselines family``, ``nas.stages.family_planning``) when it is not already in the study
as warm-start trials.

Each baseline is an ordinary checkpoint under ``<run>/baselines/<name>/`` whose metrics carry
``kind: "preset"`` (with ``preset: <name>``) or ``kind: "family"`` (with ``family: <member name>``
and its MAC target); the report draws them with their own marker and they never enter ``best/``.
An existing checkpoint is kept, so a rerun trains only the missing ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from search_spaces import SearchSpace, get_space
from search_spaces.presets import get_preset

from nas.data.loading import SegmentationData
from nas.engine.trial import TrialSettings, train_and_save
from nas.io import read_json
from nas.results.family_records import FAMILY_KEY
from nas.results.outcome import TrialState
from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind
from nas.stages.family_planning import FamilyMember

BASELINES_DIR = "baselines"
FAMILY = "family"  # the --baselines entry that stands for the whole family
Log = Callable[[str], None]
OnEpoch = Callable[[int, float, float], None]


def _train_one(name: str, spec: Any, space: SearchSpace, extra: dict[str, Any], data: SegmentationData,
               settings: TrialSettings, run_dir: Path, log: Log, on_epoch: OnEpoch | None) -> Path:
    folder = Path(run_dir) / BASELINES_DIR / name
    if (folder / "metrics.json").is_file():
        log(f"baseline {name}: already trained ({folder})")
        return folder
    log(f"baseline {name}  {spec.summary()}")
    result = train_and_save(spec, space, data, settings, folder, extra=extra, on_epoch=on_epoch)
    log(f"    -> dice {result.quality.dice:.3f}  {result.costs.macs / 1e6:.1f} MMAC  "
        f"{result.costs.params / 1e3:.1f} k params  {result.timing.seconds:.1f} s")
    return folder


def train_baselines(names: Sequence[str], data: SegmentationData, settings: TrialSettings, run_dir: Path,
                    *, log: Log = print, on_epoch: OnEpoch | None = None) -> list[Path]:
    """Train each preset once per run directory (``family`` is left to ``train_family``)."""
    folders = []
    for name in names:
        if name == FAMILY:
            continue
        preset = get_preset(name)
        folders.append(_train_one(name, preset.spec, get_space(preset.space), {"kind": "preset", "preset": name},
                                  data, settings, run_dir, log, on_epoch))
    return folders


def train_family(members: Sequence[FamilyMember], space: SearchSpace, data: SegmentationData,
                 settings: TrialSettings, run_dir: Path, *, log: Log = print,
                 on_epoch: OnEpoch | None = None) -> list[Path]:
    """Train each family member's planned spec once per run directory, as a baseline."""
    return [_train_one(member.name, member.spec, space,
                       {"kind": FAMILY, FAMILY_KEY: member.name, "family_target_macs": member.target_macs},
                       data, settings, run_dir, log, on_epoch)
            for member in members]


def baseline_records(run_dir: Path) -> list[TrialRecord]:
    """The run's trained baselines as records; numbered -1, -2, ... so they never clash with trials.

    ``params`` names them: ``{"preset": name}`` or ``{"family": member name}``."""
    records = []
    folders = sorted(p.parent for p in (Path(run_dir) / BASELINES_DIR).glob("*/metrics.json"))
    for index, folder in enumerate(folders, start=1):
        try:
            metrics: dict[str, Any] = read_json(folder / "metrics.json")
            header = read_json(folder / "spec.json")
        except (OSError, ValueError):
            continue  # a half-copied folder is not a baseline; the next run retrains it
        if not isinstance(metrics, dict) or not isinstance(header, dict) or not isinstance(header.get("spec"), dict):
            continue  # not a checkpoint this tool wrote
        spec = header["spec"]
        key = FAMILY_KEY if metrics.get(FAMILY_KEY) else "preset"
        records.append(TrialRecord.from_metrics(
            -index, TrialState.COMPLETE, metrics, params={key: folder.name}, spec=spec,
            checkpoint=f"{BASELINES_DIR}/{folder.name}", kind=RecordKind.PRESET))
    return records
