"""The objectives a search optimises: Dice first, then one or two costs, named on the command line.

Plain data, no Optuna: the adapter turns ``directions`` into a study and ``values`` into what a
trial returns; reports read the same names from a trial's metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

# name -> (metrics key, TrialRecord attribute, direction). Memory is the training-step estimate of
# nas.costs.constraints.training_step_memory (device independent), in MB = 2**20 bytes.
KNOWN = {
    "dice": ("dice", "dice", "maximize"),
    "macs": ("macs", "macs", "minimize"),
    "latency": ("latency_ms", "latency_ms", "minimize"),
    "params": ("params", "param_count", "minimize"),
    "memory": ("train_memory_mb", "train_memory_mb", "minimize"),
}
DEFAULT = ("dice", "macs")


@dataclass(frozen=True)
class Objectives:
    """``dice`` plus one or two distinct costs, in command-line order."""

    names: tuple[str, ...] = DEFAULT

    def __post_init__(self) -> None:
        names = tuple(self.names)
        unknown = [n for n in names if n not in KNOWN]
        if unknown:
            raise ValueError(f"unknown objective {unknown[0]!r}; known: {', '.join(KNOWN)}")
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a name: {','.join(names)}")
        if not names or names[0] != "dice" or not 2 <= len(names) <= 3:
            raise ValueError("objectives must be dice followed by one or two costs, e.g. dice,macs or "
                             f"dice,latency,memory; got {','.join(names)}")
        object.__setattr__(self, "names", names)

    @classmethod
    def parse(cls, text: str) -> "Objectives":
        return cls(tuple(part.strip().lower() for part in text.split(",") if part.strip()))

    @property
    def directions(self) -> list[str]:
        return [KNOWN[name][2] for name in self.names]

    @property
    def costs(self) -> tuple[str, ...]:
        """The cost names (everything after Dice)."""
        return self.names[1:]

    @property
    def needs_memory(self) -> bool:
        return "memory" in self.names

    def metric_keys(self) -> list[str]:
        return [KNOWN[name][0] for name in self.names]

    def record_fields(self) -> list[str]:
        """The ``TrialRecord`` attribute of each objective (``reports.Objective`` names)."""
        return [KNOWN[name][1] for name in self.names]

    def values(self, metrics: Mapping[str, Any]) -> tuple[float, ...]:
        """The objective vector of one finished trial, from its metrics dict."""
        missing = [key for key in self.metric_keys() if metrics.get(key) is None]
        if missing:
            raise KeyError(f"trial metrics lack {', '.join(missing)}")
        return tuple(float(metrics[key]) for key in self.metric_keys())

    def cost_values(self, metrics: Mapping[str, Any]) -> tuple[float, ...]:
        """The costs alone (known before training): what early stopping compares trials by."""
        return tuple(float(metrics[KNOWN[name][0]]) for name in self.costs)

    def __str__(self) -> str:
        return ",".join(self.names)

