"""What one trial measured, as typed frozen data: its costs, its quality, its timing, where it came from.

The storage format stays the flat metrics dict (the Optuna user attr ``metrics``, each checkpoint's
``metrics.json``): ``TrialResult.from_dict`` reads it and ``to_dict`` gives back the same dict, keys,
values and order, so studies and checkpoints written before these types existed load unchanged. A
key whose value has an unexpected type is kept as it is in ``provenance``, never coerced or dropped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from enum import Enum
from types import MappingProxyType
from typing import Any, Callable, Mapping


class RecordKind(str, Enum):
    """What a point in the report is: a search trial, a baseline preset or a compressed model."""

    SEARCH = "search"
    PRESET = "preset"
    COMPRESSED = "compressed"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, flat: Mapping[str, Any]) -> "RecordKind":
        """From the metrics' ``kind`` key (baselines write ``preset``); a ``parent_trial`` means compressed."""
        declared = flat.get("kind")
        if declared == cls.PRESET.value:
            return cls.PRESET
        if declared == cls.COMPRESSED.value or flat.get("parent_trial") is not None:
            return cls.COMPRESSED
        return cls.SEARCH


# Quality measures a search may optimise (the first objective), with their direction; plus
# ``dice:<class name>`` (maximize), a class's validation Dice.
QUALITY_MEASURES = {"dice": "maximize", "miou": "maximize", "dice_small": "maximize", "hd95": "minimize"}
CLASS_PREFIX = "dice:"


def is_quality_measure(name: str) -> bool:
    """A quality measure name: ``QUALITY_MEASURES`` or ``dice:<class name>``."""
    return name in QUALITY_MEASURES or (name.startswith(CLASS_PREFIX) and len(name) > len(CLASS_PREFIX))


@dataclass(frozen=True)
class ValueType:
    """Which stored values a typed field accepts, and how they are held and written back."""

    accepts: Callable[[Any], bool]
    load: Callable[[Any], Any] = lambda value: value
    dump: Callable[[Any], Any] = lambda value: value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sequence_of(item: Callable[[Any], bool]) -> ValueType:
    """A JSON list held as a tuple (frozen); written back as a list."""
    return ValueType(lambda v: isinstance(v, (list, tuple)) and all(item(x) for x in v), tuple, list)


def _is_splits(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items())


INT = ValueType(_is_int)
NUMBER = ValueType(_is_number)
TEXT = ValueType(lambda v: isinstance(v, str))
FLAG = ValueType(lambda v: isinstance(v, bool))
INTS = _sequence_of(_is_int)
TEXTS = _sequence_of(lambda v: isinstance(v, str))
MATRIX = ValueType(lambda v: isinstance(v, (list, tuple)) and all(INTS.accepts(row) for row in v),
               lambda v: tuple(tuple(row) for row in v), lambda v: [list(row) for row in v])
NUMBERS = _sequence_of(lambda v: v is None or _is_number(v))  # NaN was stored as null
PER_IMAGE = ValueType(lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and NUMBERS.accepts(s) for k, s in v.items()),
                  lambda v: MappingProxyType({k: tuple(s) for k, s in v.items()}),
                  lambda v: {k: list(s) for k, s in v.items()})
SPLITS = ValueType(_is_splits, lambda v: MappingProxyType({k: MappingProxyType(copy.deepcopy(dict(s))) for k, s in v.items()}),
               lambda v: {k: copy.deepcopy(dict(s)) for k, s in v.items()})


def read_flat(flat: Mapping[str, Any] | None, kinds: Mapping[str, ValueType]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored flat dict split losslessly: (the values of the keys in ``kinds`` that their type accepts,
    loaded; every other key with its value as stored). None stays None."""
    typed, rest = {}, {}
    for key, value in (flat or {}).items():
        kind = kinds.get(key)
        if kind is not None and (value is None or kind.accepts(value)):
            typed[key] = None if value is None else kind.load(value)
        else:
            rest[key] = copy.deepcopy(value)
    return typed, rest


def write_flat(values: Mapping[str, tuple[Any, ValueType]], rest: Mapping[str, Any],
               keys: tuple[str, ...]) -> dict[str, Any]:
    """The flat dict back (``read_flat``'s inverse): the stored ``keys`` in their order, then typed values
    set since, then the rest. ``values``: key -> (value, type); a None is written only where it was stored."""
    typed = {}
    for key, (value, kind) in values.items():
        if value is not None or (key in keys and key not in rest):
            typed[key] = None if value is None else kind.dump(value)
    out = {}
    for key in (*keys, *typed, *rest):
        if key in typed:
            out.setdefault(key, typed[key])
        elif key in rest:
            out.setdefault(key, copy.deepcopy(rest[key]))
    return out


def _typed(kind: ValueType, key: str | None = None) -> Any:
    """A field stored under ``key`` (default: the field's name) in the flat dict."""
    return field(default=None, metadata={"type": kind, "key": key})


@dataclass(frozen=True)
class TrialCosts:
    """What the architecture costs, known before training (``nas.costs``)."""

    params: int | None = _typed(INT)  # the parameter count (never the sampled dimensions)
    macs: int | None = _typed(INT)  # multiply-accumulates of one batch-1 forward at ``input_shape``
    flops: int | None = _typed(INT)  # always 2 * macs
    latency_ms: float | None = _typed(NUMBER)  # median batch-1 forward
    latency_device: str | None = _typed(TEXT)
    input_shape: tuple[int, ...] | None = _typed(INTS)
    train_memory_mb: float | None = _typed(NUMBER)  # one training step, estimated (nas.costs.constraints)
    activation_bytes: int | None = _typed(INT)
    state_bytes: int | None = _typed(INT)
    train_memory_batch: int | None = _typed(INT)


@dataclass(frozen=True)
class TrialQuality:
    """How well it segments: the best validation Dice, its curve, and every split's metrics block."""

    dice: float | None = _typed(NUMBER)
    dice_definition: str | None = _typed(TEXT)
    best_epoch: int | None = _typed(INT)
    epoch_dice: tuple[float | None, ...] | None = _typed(NUMBERS)
    epoch_loss: tuple[float | None, ...] | None = _typed(NUMBERS)
    splits: Mapping[str, Mapping[str, Any]] | None = _typed(SPLITS, "quality")  # {"val": {...}, "test": {...}}
    threshold: float | None = _typed(NUMBER)  # probability threshold chosen on validation (nas.train.threshold)
    dice_at_threshold: float | None = _typed(NUMBER)  # mean validation Dice at it
    dice_at_half: float | None = _typed(NUMBER)  # mean validation Dice at 0.5, beside it
    per_image_dice: Mapping[str, tuple[float | None, ...]] | None = _typed(PER_IMAGE)  # split -> Dice per image at it
    # label maps (docs/multiclass.md); binary runs store them too, older runs lack them
    miou: float | None = _typed(NUMBER)  # mean IoU over the foreground classes (binary: the foreground IoU)
    num_classes: int | None = _typed(INT)  # background included; 2 = binary
    class_names: tuple[str, ...] | None = _typed(TEXTS)  # index = label value
    class_colours: tuple[tuple[int, ...], ...] | None = _typed(MATRIX)  # (R, G, B) per label value
    per_class: Mapping[str, Mapping[str, Any]] | None = _typed(SPLITS)  # class name -> {"dice", "iou", "size_strata"}
    confusion: tuple[tuple[int, ...], ...] | None = _typed(MATRIX)  # validation pixels, rows truth, columns prediction


@dataclass(frozen=True)
class TrialTiming:
    """Where and how long it trained (compute accounting)."""

    seconds: float | None = _typed(NUMBER)  # wall clock of the whole trial
    train_seconds: float | None = _typed(NUMBER)
    train_images_per_second: float | None = _typed(NUMBER)
    train_device: str | None = _typed(TEXT)
    device_name: str | None = _typed(TEXT)
    train_peak_memory_bytes: int | None = _typed(INT)
    epochs_run: int | None = _typed(INT)
    stopped_early: bool | None = _typed(FLAG)


_SECTIONS = {"costs": TrialCosts, "quality": TrialQuality, "timing": TrialTiming}
# flat key -> (section, attribute, type)
_SLOTS = {f.metadata["key"] or f.name: (section, f.name, f.metadata["type"])
          for section, cls in _SECTIONS.items() for f in fields(cls)}


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TrialResult:
    """Everything a trial measured; empty (all None) when it measured nothing."""

    costs: TrialCosts = TrialCosts()
    quality: TrialQuality = TrialQuality()
    timing: TrialTiming = TrialTiming()
    provenance: Mapping[str, Any] = field(default_factory=dict)  # kind, preset, trial, parent_trial, ...
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the stored dict's keys, in order

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance", _frozen(self.provenance))

    @classmethod
    def from_dict(cls, flat: Mapping[str, Any] | None) -> "TrialResult":
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        typed, provenance = read_flat(flat, {key: slot[2] for key, slot in _SLOTS.items()})
        for key, value in typed.items():
            sections[_SLOTS[key][0]][_SLOTS[key][1]] = value
        return cls(**{name: _SECTIONS[name](**values) for name, values in sections.items()},
                   provenance=provenance, keys=tuple(flat or ()))

    def to_dict(self) -> dict[str, Any]:
        """The flat metrics dict: the stored keys in their order, then values set since."""
        values = {key: (getattr(getattr(self, section), name), kind) for key, (section, name, kind) in _SLOTS.items()}
        return write_flat(values, self.provenance, self.keys)

    def merged(self, values: Mapping[str, Any], *, replace: bool = True) -> "TrialResult":
        """This result with the flat ``values`` set, as ``{**self.to_dict(), **values}`` (new keys after
        the stored ones); ``replace=False`` adds only the keys it lacks."""
        flat = self.to_dict()
        return TrialResult.from_dict({**flat, **{k: v for k, v in values.items() if replace or k not in flat}})

    @property
    def kind(self) -> RecordKind:
        return RecordKind.of(self.provenance)

    def quality_value(self, name: str) -> float | None:
        """A stored quality measure by its objective name (``QUALITY_MEASURES`` or ``dice:<class>``);
        None when this result lacks it (see ``nas.engine.objectives`` and docs/multiclass.md)."""
        quality = self.quality
        val = (quality.splits or {}).get("val") or {}
        if name == "dice":
            value = quality.dice
        elif name == "miou":
            value = quality.miou if quality.miou is not None else val.get("iou")
        elif name == "dice_small":
            value = ((val.get("size_strata") or {}).get("small") or {}).get("dice")
        elif name == "hd95":
            value = val.get("hd95")
        elif name.startswith(CLASS_PREFIX):
            per_class = quality.per_class or val.get("per_class") or {}
            value = (per_class.get(name[len(CLASS_PREFIX):]) or {}).get("dice")
        else:
            raise ValueError(f"unknown quality measure {name!r}; known: {', '.join(QUALITY_MEASURES)}, "
                             f"{CLASS_PREFIX}<class name>")
        return float(value) if _is_number(value) else None
