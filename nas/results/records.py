"""``TrialRecord``: one trial as typed plain data, the currency between the study and the reports.

The Optuna adapter turns frozen trials into records; reports, the trials table and the live view
read only records, so they never import Optuna. What the trial measured is a ``TrialResult``; the
measures the reports and the Pareto objectives read (``dice``, ``macs``, ``params``, ...) carry the
result's own names. The record's ``params`` field is the sampled dimensions, so the parameter count
is ``measure("params")`` (``result.costs.params``) and keeps its stored name ``param_count`` where a
name is shared with the record's fields: ``STORED_NAMES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Mapping, TypeVar

from nas.results.outcome import FailureKind, StopReason, TrialState, classify_legacy
from nas.results.trial_result import RecordKind, TrialResult, is_quality_measure

# Numeric measures a Pareto objective may name (``nas.results.pareto.Objective``), besides
# ``dice:<class name>`` (``is_measure``): the ``TrialResult``'s own names.
MEASURES = ("dice", "macs", "flops", "params", "latency_ms", "seconds", "best_epoch", "train_memory_mb",
            "miou", "dice_small", "hd95")
# The one place a stored name differs from the measure's: the parameter count is ``param_count`` as a
# trials.csv column (``nas.results.table``) and a ``from_metrics`` keyword, since ``params`` there is
# the record's sampled dimensions. (``fail_reason``, the record's ``message``, is a property below.)
STORED_NAMES = {"param_count": "params"}
E = TypeVar("E", bound=Enum)


def _enum(kind: type[E], value: Any) -> E | None:
    return None if value is None else kind(value)


@dataclass(frozen=True)
class TrialRecord:
    """A trial's identity, outcome and measurements; build one with ``from_metrics`` from the stored dict."""

    number: int
    state: TrialState  # a str Enum: ``record.state == "COMPLETE"`` still holds
    params: dict[str, Any] = field(default_factory=dict)  # the sampled dimensions (not the parameter count)
    spec: dict[str, Any] | None = None  # ResUNetSpec.to_dict()
    result: TrialResult = TrialResult()  # everything measured (empty when nothing was)
    stop_reason: StopReason | None = None  # PRUNED trials
    failure_kind: FailureKind | None = None  # FAIL trials
    message: str | None = None  # the one-line reason of a pruned or failed trial
    stopped_at_epoch: int | None = None  # early-stopped or scheduler-stopped trials
    checkpoint: str | None = None  # folder relative to the run directory (COMPLETE trials)
    kind: RecordKind | None = None  # None: decided from the result's provenance

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", TrialState(self.state))
        object.__setattr__(self, "stop_reason", _enum(StopReason, self.stop_reason))
        object.__setattr__(self, "failure_kind", _enum(FailureKind, self.failure_kind))
        object.__setattr__(self, "kind", RecordKind(self.kind) if self.kind is not None else self.result.kind)

    @classmethod
    def from_metrics(cls, number: int, state: TrialState | str, metrics: Mapping[str, Any] | None = None,
                     **values: Any) -> "TrialRecord":
        """One line for adapters and tests: ``values`` are record fields or measurements by their flat metrics
        key or ``STORED_NAMES`` (``dice=0.8, macs=10**6, param_count=...``), merged over the flat ``metrics``.
        Without a stop
        reason or failure kind, they are read from the message (``classify_legacy``); an unknown stored
        value is read the same way.
        """
        fields, flat = _split(values)
        state = TrialState(state)
        stop, failure = (_known(StopReason, fields.pop("stop_reason", None)),
                         _known(FailureKind, fields.pop("failure_kind", None)))
        if stop is None and failure is None:
            legacy = classify_legacy(state, fields.get("message"))
            stop, failure = (legacy, None) if isinstance(legacy, StopReason) else (None, legacy)
        return cls(number, state, result=TrialResult.from_dict({**(metrics or {}), **flat}), stop_reason=stop,
                   failure_kind=failure, **fields)

    def updated(self, metrics: Mapping[str, Any] | None = None, **values: Any) -> "TrialRecord":
        """A copy with fields or measurements replaced (same keywords as ``from_metrics``)."""
        fields, flat = _split(values)
        if metrics or flat:
            fields["result"] = TrialResult.from_dict({**self.result.to_dict(), **(metrics or {}), **flat})
        return replace(self, **fields)

    # --- the names the reports and Pareto objectives read ---------------------------------------
    @property
    def dice(self) -> float | None:
        """Best validation Dice of a COMPLETE trial (a failed one's stays in ``result.quality.dice``)."""
        return self.result.quality.dice if self.state == TrialState.COMPLETE else None

    @property
    def miou(self) -> float | None:
        """Mean validation IoU over the foreground classes (binary: the foreground IoU) of a COMPLETE trial."""
        return self.measure("miou")

    @property
    def dice_small(self) -> float | None:
        """Validation Dice around the objects under 8 px (``nas.train.metrics`` size strata) of a COMPLETE trial."""
        return self.measure("dice_small")

    @property
    def hd95(self) -> float | None:
        """Mean validation HD95 (px) of a COMPLETE trial."""
        return self.measure("hd95")

    def measure(self, name: str) -> float | None:
        """A measure by name: one of ``MEASURES`` or ``dice:<class name>``; quality measures only for
        COMPLETE trials (as ``dice``)."""
        if is_quality_measure(name):
            return self.result.quality_value(name) if self.state == TrialState.COMPLETE else None
        if name == "params":  # the count; the record's own ``params`` field is the sampled dimensions
            return self.result.costs.params
        return getattr(self, name)

    @property
    def macs(self) -> int | None:
        return self.result.costs.macs

    @property
    def flops(self) -> int | None:
        """Stored FLOPs, else 2 x MACs (the convention everywhere)."""
        costs = self.result.costs
        return costs.flops if costs.flops is not None else (2 * costs.macs if costs.macs is not None else None)

    @property
    def latency_ms(self) -> float | None:
        return self.result.costs.latency_ms

    @property
    def latency_device(self) -> str | None:
        return self.result.costs.latency_device

    @property
    def train_memory_mb(self) -> float | None:
        return self.result.costs.train_memory_mb

    @property
    def seconds(self) -> float | None:
        return self.result.timing.seconds

    @property
    def best_epoch(self) -> int | None:
        return self.result.quality.best_epoch

    @property
    def epoch_dice(self) -> tuple[float | None, ...]:
        return self.result.quality.epoch_dice or ()

    @property
    def fail_reason(self) -> str | None:
        """``message`` under its stored name (the Optuna user attr and the ``trials.csv`` column)."""
        return self.message

    @property
    def finished(self) -> bool:
        return self.state == TrialState.COMPLETE and self.dice is not None and self.macs is not None

    def quality(self, split: str = "val") -> Mapping[str, Any]:
        """The split's quality block (``nas.train.metrics``) or ``{}``: older runs lack it."""
        return (self.result.quality.splits or {}).get(split) or {}

    # --- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; enums as their values, the result as the flat metrics dict."""
        return {"number": self.number, "state": self.state.value, "params": dict(self.params), "spec": self.spec,
                "result": self.result.to_dict(), "stop_reason": _value(self.stop_reason),
                "failure_kind": _value(self.failure_kind), "message": self.message,
                "stopped_at_epoch": self.stopped_at_epoch, "checkpoint": self.checkpoint, "kind": self.kind.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialRecord":
        return cls(**{**data, "params": dict(data.get("params") or {}),
                      "result": TrialResult.from_dict(data.get("result"))})


def is_measure(name: str) -> bool:
    """Whether ``TrialRecord.measure`` knows ``name``."""
    return name in MEASURES or is_quality_measure(name)


def _value(member: Enum | None) -> Any:
    return None if member is None else member.value


def _known(kind: type[E], value: Any) -> E | None:
    try:
        return _enum(kind, value)
    except ValueError:
        return None


_FIELDS = frozenset(("params", "spec", "stop_reason", "failure_kind", "message", "stopped_at_epoch", "checkpoint",
                     "kind"))
# measurement keywords of ``from_metrics`` / ``updated`` -> flat metrics key
_MEASUREMENTS = {name: name for name in (*MEASURES, "latency_device", "epoch_dice") if name not in _FIELDS} | STORED_NAMES


def _split(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keywords -> (record fields, flat metrics); a measurement is stored under its metrics key."""
    unknown = sorted(set(values) - _FIELDS - set(_MEASUREMENTS))
    if unknown:
        raise TypeError(f"TrialRecord has no field or measurement {unknown[0]!r}")
    fields = {k: v for k, v in values.items() if k in _FIELDS}
    flat = {_MEASUREMENTS[k]: (list(v) if k == "epoch_dice" and v is not None else v)
            for k, v in values.items() if k in _MEASUREMENTS}
    return fields, flat
