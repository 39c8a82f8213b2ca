"""``TrialRecord``: one trial as plain data, the currency between the study and the reports.

The Optuna adapter turns frozen trials into records; reports and CSV read only records, so
they never import Optuna.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from nas.io import atomic_write_text


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: str  # "COMPLETE" | "FAIL" | "RUNNING" | "PRUNED" | "WAITING"
    params: dict[str, Any] = field(default_factory=dict)  # the sampled dimensions
    spec: dict[str, Any] | None = None  # ResUNetSpec.to_dict()
    dice: float | None = None  # best validation Dice: foreground, per image, mean over images
    macs: int | None = None  # multiply-accumulates of one forward pass at the search input size
    flops: int | None = None  # = 2 * macs
    param_count: int | None = None
    latency_ms: float | None = None  # median forward time, batch 1, at the search input size
    latency_device: str | None = None
    seconds: float | None = None  # wall clock of the whole trial
    best_epoch: int | None = None
    epoch_dice: tuple[float, ...] = ()
    fail_reason: str | None = None
    checkpoint: str | None = None  # folder relative to the run directory
    metrics: dict[str, Any] = field(default_factory=dict)  # everything measured (the trial's metrics attr)

    @property
    def finished(self) -> bool:
        return self.state == "COMPLETE" and self.dice is not None and self.macs is not None


CSV_COLUMNS = (
    "number", "state", "dice", "macs", "flops", "param_count", "latency_ms", "latency_device",
    "seconds", "best_epoch", "params", "fail_reason", "checkpoint",
)


def trials_csv(records: list[TrialRecord]) -> str:
    """One row per trial; ``params`` is a JSON object so the file stays one row per trial."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in sorted(records, key=lambda r: r.number):
        row = {name: getattr(record, name) for name in CSV_COLUMNS if name != "params"}
        row["params"] = json.dumps(record.params, sort_keys=True)
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def write_trials_csv(records: list[TrialRecord], path) -> None:
    atomic_write_text(path, trials_csv(records))
