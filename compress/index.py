"""``<run>/compressed/compressed.json``: every compressed variant of a run, kept or rejected by the gate.

Plain JSON, no torch import, so the report side (``nas.run.outputs``) can read it cheaply and turn the
kept variants into ``TrialRecord``s that ``reports.render_report`` draws with the compressed marker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.io import atomic_write_json, read_json
from nas.results.outcome import TrialState
from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind

INDEX_FILE = "compressed.json"
FORMAT = "resunet-nas-compressed"


def index_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "compressed" / INDEX_FILE


def read_index(run_dir: str | Path) -> list[dict[str, Any]]:
    """The variants listed so far (empty when the run was never compressed or the file is unreadable)."""
    try:
        data = read_json(index_path(run_dir))
    except (OSError, ValueError):
        return []
    return list(data.get("variants", [])) if isinstance(data, dict) and data.get("format") == FORMAT else []


def write_index(run_dir: str | Path, variants: list[dict[str, Any]]) -> Path:
    """Merge ``variants`` into the index by name (a re-run replaces its earlier entry), atomically."""
    merged = {v["name"]: v for v in read_index(run_dir)}
    merged.update({v["name"]: v for v in variants})
    return atomic_write_json(index_path(run_dir), {"format": FORMAT, "variants": sorted(
        merged.values(), key=lambda v: v["name"])})


def compressed_records(run_dir: str | Path, first_number: int) -> list[TrialRecord]:
    """Kept variants as records numbered from ``first_number`` (above every search trial's number)."""
    records = []
    for offset, variant in enumerate(v for v in read_index(run_dir) if v.get("kept") and v.get("checkpoint")):
        metrics = variant.get("metrics") or {}
        records.append(TrialRecord.from_metrics(
            first_number + offset, TrialState.COMPLETE, metrics, spec=variant.get("spec"),
            checkpoint=variant["checkpoint"], kind=RecordKind.COMPRESSED,
            params={key: metrics.get(key) for key in ("parent_trial", "importance", "ratio")}))
    return records
