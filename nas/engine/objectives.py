"""The objectives a search optimises: a quality measure first, then one or two costs, named on the command line.

Quality: ``dice`` (the default), ``miou``, ``dice_small`` (the validation Dice around objects under
8 px: the ``small`` size stratum of ``nas.train.metrics``), ``hd95`` (minimised) or ``dice:<class>``
(one class's validation Dice), read from a trial's metrics by ``TrialResult.quality_value``; see
docs/multiclass.md. Plain data, no Optuna: the adapter turns ``directions`` into a study and
``values`` into what a trial returns; reports read the same names from a trial's metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from nas.results.trial_result import CLASS_PREFIX, QUALITY_MEASURES, TrialResult, is_quality_measure

# name -> (metrics key, TrialRecord attribute, direction). Memory is the training-step estimate of
# nas.costs.constraints.training_step_memory (device independent), in MB = 2**20 bytes.
KNOWN = {
    "dice": ("dice", "dice", "maximize"),
    "macs": ("macs", "macs", "minimize"),
    "latency": ("latency_ms", "latency_ms", "minimize"),
    "params": ("params", "params", "minimize"),
    "memory": ("train_memory_mb", "train_memory_mb", "minimize"),
}
DEFAULT = ("dice", "macs")
COSTS = tuple(name for name in KNOWN if name != "dice")
QUALITY = tuple(QUALITY_MEASURES)


def _entry(name: str) -> tuple[str, str, str]:
    """(metrics key, TrialRecord measure, direction) of a known name or ``dice:<class>``."""
    if name in KNOWN:
        return KNOWN[name]
    return (name, name, QUALITY_MEASURES.get(name, "maximize"))



@dataclass(frozen=True)
class Objectives:
    """A quality measure plus one or two distinct costs, in command-line order."""

    names: tuple[str, ...] = DEFAULT

    def __post_init__(self) -> None:
        names = tuple(self.names)
        unknown = [n for n in names if n not in KNOWN and not is_quality_measure(n)]
        if unknown:
            raise ValueError(f"unknown objective {unknown[0]!r}; known: {', '.join(QUALITY)}, "
                             f"{CLASS_PREFIX}<class name>, {', '.join(COSTS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a name: {','.join(names)}")
        if (not names or not is_quality_measure(names[0]) or any(is_quality_measure(n) for n in names[1:])
                or not 2 <= len(names) <= 3):
            raise ValueError(f"objectives must be one quality measure ({', '.join(QUALITY)} or {CLASS_PREFIX}<class>) "
                             "followed by one or two costs, e.g. dice,macs, miou,latency or dice_small,macs,memory; "
                             f"got {','.join(names)}")
        object.__setattr__(self, "names", names)

    @classmethod
    def parse(cls, text: str) -> "Objectives":
        """Names are lower-cased, except a class name after ``dice:``, which is kept as written."""
        parts = [part.strip() for part in text.split(",") if part.strip()]
        return cls(tuple(part if part.lower().startswith(CLASS_PREFIX) and len(part) > len(CLASS_PREFIX)
                         else part.lower() for part in parts))

    @property
    def quality(self) -> str:
        """The quality objective's name (the first)."""
        return self.names[0]

    @property
    def directions(self) -> list[str]:
        return [_entry(name)[2] for name in self.names]

    @property
    def costs(self) -> tuple[str, ...]:
        """The cost names (everything after the quality measure)."""
        return self.names[1:]

    @property
    def needs_memory(self) -> bool:
        return "memory" in self.names

    def metric_keys(self) -> list[str]:
        """The name each objective's value is reported under (the metrics key of ``dice`` and costs)."""
        return [_entry(name)[0] for name in self.names]

    def record_fields(self) -> list[str]:
        """The ``TrialRecord`` measure of each objective (``nas.results.pareto.Objective`` names)."""
        return [_entry(name)[1] for name in self.names]

    def values(self, metrics: Mapping[str, Any]) -> tuple[float, ...]:
        """The objective vector of one finished trial, from its metrics dict."""
        got = {name: metrics.get(key) for name, key in zip(self.names, self.metric_keys())}
        if self.quality != "dice":  # dice and the costs are flat keys; the rest live in the quality blocks
            got[self.quality] = TrialResult.from_dict(metrics).quality_value(self.quality)
        missing = [name for name, value in got.items() if value is None]
        if missing:
            raise KeyError(f"trial metrics lack {', '.join(missing)}")
        return tuple(float(got[name]) for name in self.names)

    def check_data(self, data: Any) -> None:
        """Refuse (one line, ``ValueError``) a quality objective the validation split cannot score: a
        ``dice:<class>`` the data lacks or whose class is absent from validation, ``dice_small``
        without a validation object under 8 px. ``data`` is a ``nas.data.dataset.SegmentationData``."""
        _, masks, fovs = data.split("val")
        if self.quality.startswith(CLASS_PREFIX):
            wanted, known = self.quality[len(CLASS_PREFIX):], list(data.class_names)[1:]
            if wanted not in known:
                raise ValueError(f"{self.quality}: the data has no class {wanted!r}; its classes are {', '.join(known)}")
            value = known.index(wanted) + 1
            if not any(bool(((m == value) if data.num_classes > 2 else (m > 0.5)).any()) for m in masks):
                raise ValueError(f"{self.quality}: no validation mask has class {wanted!r}, so no trial could be "
                                 "scored on it (change --seed / --val-fraction or the split)")
        if self.quality == "dice_small" and not _has_small_object(masks, data.num_classes):
            raise ValueError("dice_small: the validation masks have no object under 8 px, so no trial could be "
                             "scored on it; use dice or miou")

    def cost_values(self, metrics: Mapping[str, Any]) -> tuple[float, ...]:
        """The costs alone (known before training): what early stopping compares trials by."""
        return tuple(float(metrics[KNOWN[name][0]]) for name in self.costs)

    def __str__(self) -> str:
        return ",".join(self.names)



def _has_small_object(masks: Sequence[Any], num_classes: int) -> bool:
    """Whether any validation mask has a connected object of some class under 8 px (the small stratum)."""
    from nas.train.metrics import STRATA, connected_components, equivalent_diameter

    small = STRATA[0][2]
    values = range(1, num_classes) if num_classes > 2 else (None,)
    for mask in masks:
        truth = mask[0].numpy()
        for value in values:
            labels, count = connected_components(truth > 0.5 if value is None else truth == value)
            if count and (equivalent_diameter(np.bincount(labels.ravel())[1:], truth.ndim) < small).any():
                return True
    return False
