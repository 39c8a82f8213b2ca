"""The trials table: one row per trial as a pandas DataFrame, and ``trials.csv`` written from it.

Typed columns (nullable ``Int64`` for counts, ``float64`` for measurements, ``string`` for text and
enum values; ``params`` and ``spec`` as JSON text), so a notebook gets the same table the run
directory holds. pandas is imported only when a table is built.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable

from nas.io import atomic_write_text
from nas.results.records import STORED_NAMES, TrialRecord

if TYPE_CHECKING:
    import pandas

# column -> dtype; the columns trials.csv had first, then the outcome enums and the record kind
COLUMNS = {
    "number": "Int64", "state": "string", "dice": "float64", "macs": "Int64", "flops": "Int64",
    "param_count": "Int64", "latency_ms": "float64", "latency_device": "string", "seconds": "float64",
    "best_epoch": "Int64", "params": "string", "fail_reason": "string", "checkpoint": "string",
    "stop_reason": "string", "failure_kind": "string", "kind": "string",
    "stopped_at_epoch": "Int64", "train_memory_mb": "float64", "spec": "string",
}
CSV_COLUMNS = tuple(COLUMNS)[:16]  # today's trials.csv: everything up to ``kind``


def _cell(record: TrialRecord, column: str) -> Any:
    if column in ("params", "spec"):
        value = getattr(record, column)
        return None if value is None else json.dumps(value, sort_keys=True)
    value = record.measure(STORED_NAMES[column]) if column in STORED_NAMES else getattr(record, column)
    return value.value if hasattr(value, "value") else value


def trials_frame(records: Iterable[TrialRecord]) -> pandas.DataFrame:
    """One row per trial, by trial number; missing values are ``<NA>`` / ``NaN``."""
    import pandas

    rows = sorted(records, key=lambda r: r.number)
    return pandas.DataFrame({column: pandas.array([_cell(r, column) for r in rows], dtype=dtype)
                             for column, dtype in COLUMNS.items()})


def trials_csv(records: Iterable[TrialRecord]) -> str:
    """``trials.csv``: the frame's first columns; ``params`` is JSON so the file stays one row per trial."""
    return trials_frame(records)[list(CSV_COLUMNS)].to_csv(index=False, lineterminator="\n")


def write_trials_csv(records: Iterable[TrialRecord], path) -> None:
    atomic_write_text(path, trials_csv(records))
