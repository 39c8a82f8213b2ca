"""A search's settings as typed frozen data: ``RunSettings``, built once by the plan.

Stored as a flat JSON dict: the study keeps the settings a resume must match (``search_config``,
written by ``nas.run.search_plan``, only the values that differ from the defaults), and the run's
outputs add where it ran (``trials``, ``study``, ``storage``, ``device``, ``torch_threads``, the
budget). ``RunSettings.from_dict`` reads such a dict, of any age, and ``to_dict`` gives back the same
dict: keys, values and order. A field that was not stored is None (its default applies); a key this
code does not know, or a value of an unexpected type, is kept as it is in ``extra``, never dropped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

from nas.engine.objectives import Objectives
from nas.results.trial_result import INT, INTS, NUMBER, TEXT, ValueType, read_flat, write_flat


def _objectives_text(value: Any) -> bool:
    """A stored ``objectives`` this code reads and writes back unchanged."""
    try:
        return isinstance(value, str) and str(Objectives.parse(value)) == value
    except ValueError:
        return False


OBJECTIVES = ValueType(_objectives_text, Objectives.parse, str)
OBJECT = ValueType(lambda v: isinstance(v, Mapping), lambda v: MappingProxyType(copy.deepcopy(dict(v))),
                   lambda v: copy.deepcopy(dict(v)))


def _stored(kind: ValueType) -> Any:
    return field(default=None, metadata={"type": kind})


@dataclass(frozen=True)
class RunSettings:
    """The settings of one search; the fields in the order the plan stores them."""

    # what a resume must match (the study's ``search_config``)
    space: str | None = _stored(TEXT)
    data: str | None = _stored(TEXT)  # "synthetic..." or the data folder, resolved
    epochs: int | None = _stored(INT)
    image_size: int | None = _stored(INT)
    batch_size: int | None = _stored(INT)
    seed: int | None = _stored(INT)
    restriction: Mapping[str, Any] | None = _stored(OBJECT)  # Restriction.to_dict(); None: unrestricted
    constraints: Mapping[str, Any] | None = _stored(OBJECT)  # Constraints.to_dict(); None: no limits
    recipe: Mapping[str, Any] | None = _stored(OBJECT)  # the training recipe's changes from its defaults
    patches_per_epoch: int | None = _stored(INT)  # None: one patch per training image
    test_fraction: float | None = _stored(NUMBER)  # None: no test split carved
    num_classes: int | None = _stored(INT)  # None: binary (2)
    family_rungs: int | None = _stored(INT)  # None: the default (SearchConfig.family_rungs)
    early_stop_rungs: tuple[int, ...] | None = _stored(INTS)
    objectives: Objectives | None = _stored(OBJECTIVES)  # None: dice,macs
    sampler: str | None = _stored(TEXT)  # None: tpe
    early_stop: str | None = _stored(TEXT)  # "off", a rule name; None: "on" (halving)
    latency_engine: str | None = _stored(TEXT)  # None: torch
    # where and how long it ran (the run's outputs, never the study)
    trials: int | None = _stored(INT)
    timeout: float | None = _stored(NUMBER)
    study: str | None = _stored(TEXT)
    storage: str | None = _stored(TEXT)
    device: str | None = _stored(TEXT)
    torch_threads: int | None = _stored(INT)
    search_seed: int | None = _stored(INT)  # None: the sampler was seeded by ``seed``
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown keys, unexpected values: kept as stored
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the stored dict's keys, in order

    def __post_init__(self) -> None:
        for name in ("restriction", "constraints", "recipe"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, OBJECT.load(value))
        if self.early_stop_rungs is not None:
            object.__setattr__(self, "early_stop_rungs", tuple(self.early_stop_rungs))
        if not isinstance(self.extra, MappingProxyType):
            object.__setattr__(self, "extra", MappingProxyType(copy.deepcopy(dict(self.extra))))

    @classmethod
    def from_dict(cls, flat: Mapping[str, Any] | None) -> "RunSettings":
        values, extra = read_flat(flat, _KINDS)
        return cls(**values, extra=extra, keys=tuple(flat or ()))

    def to_dict(self) -> dict[str, Any]:
        """The flat dict: the stored keys in their order, then the fields set since, then ``extra``."""
        return write_flat({key: (getattr(self, key), kind) for key, kind in _KINDS.items()}, self.extra, self.keys)

    def updated(self, **values: Any) -> "RunSettings":
        """These settings with ``values`` set, as ``{**self.to_dict(), **values}`` (new keys last)."""
        order = tuple(self.to_dict())
        return replace(self, **values, keys=(*order, *(key for key in values if key not in order)))

    def beneath(self, **values: Any) -> "RunSettings":
        """``values`` where these settings lack them, as ``{**values, **self.to_dict()}`` (their keys first)."""
        order = tuple(self.to_dict())
        missing = {key: value for key, value in values.items() if key not in order}
        return replace(self, **missing, keys=(*values, *(key for key in order if key not in values)))

    @property
    def stored(self) -> bool:
        """Anything stored at all (a study not written by ``nas-search`` has no settings)."""
        return bool(self.to_dict())


_KINDS: dict[str, ValueType] = {f.name: f.metadata["type"] for f in fields(RunSettings) if "type" in f.metadata}
