"""Fixing and narrowing a space's dimensions (``--fix``, ``--choices``, a TOML file) before a search.

A ``Restriction`` is checked against the declared dimensions once, before anything runs; then
``RestrictedSuggest`` applies it to every trial: a fixed dimension never reaches the sampler (its
value is recorded in ``fixed``), a narrowed one offers the sampler only the allowed values. It
works over any ``Suggest`` and any space's declared dimensions, so new dimensions need no code here.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .dimensions import CategoricalDimension, Dimension, FloatDimension, IntDimension, RandomSuggest, Suggest

CONFIG_TABLES = ("fix", "choices")
CHECK_SAMPLES = 200  # seeded samples that must show a restriction can be met and that it applies
# Built-in ``--config`` names. "compact": the resunet space with the dimensions of least importance
# (PED-ANOVA on Dice; all but downsample under 0.05 in three synthetic studies of 2026-12-01) fixed at
# the value whose trials scored at least as well (README "The compact space", with the shares);
# width_mode=growth also drops the five width_step dimensions. Conditional
# dimensions stay free (fixing one would refuse a --fix that switches its condition off).
NAMED_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "compact": {"fix": {"width_mode": "growth", "downsample": "maxpool", "skip_fusion": "concat",
                        "skip_gain": False, "multiscale_input": False, "deep_supervision": False,
                        "activation": "relu", "dropout": 0.0},
                "choices": {}},
}


class OverrideError(ValueError):
    """A restriction that cannot apply to the space: unknown dimension, value outside it, bad file."""


class RestrictionConflict(OverrideError):
    """A restricted dimension whose allowed values this particular architecture does not offer."""


@dataclass(frozen=True)
class Restriction:
    """Per dimension: one fixed value, or the allowed values (two or more), as the dimension spells them."""

    fixed: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fixed or self.choices)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe and stable: part of the study config that a resume must match."""
        return {"fix": {k: self.fixed[k] for k in sorted(self.fixed)},
                "choices": {k: list(self.choices[k]) for k in sorted(self.choices)}}

    def describe(self, name: str) -> str:
        if name in self.fixed:
            return f"fixed: {self.fixed[name]}"
        if name in self.choices:
            return "restricted to " + ", ".join(map(str, self.choices[name]))
        return ""


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: True is not the choice 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _contains(values: Iterable[Any], value: Any) -> bool:
    return any(_same(v, value) for v in values)


def _same_number(choice: Any, text: Any) -> bool:
    if isinstance(choice, bool) or not isinstance(choice, (int, float)) or isinstance(text, bool):
        return False
    try:
        return float(text) == choice
    except (TypeError, ValueError):
        return False


def parse_value(dimension: Dimension, raw: Any, source: str) -> Any:
    """``raw`` (CLI text or a TOML value) as the dimension's own value; ``source`` prefixes errors."""
    text = raw.strip() if isinstance(raw, str) else raw
    if isinstance(dimension, IntDimension):
        try:
            if isinstance(text, bool) or not isinstance(text, (int, str)):
                raise ValueError
            value = int(text)
        except ValueError:
            raise OverrideError(f"{source}: {dimension.name} takes an integer, got {raw!r}") from None
        if not dimension.low <= value <= dimension.high or (value - dimension.low) % dimension.step:
            raise OverrideError(f"{source}: {dimension.name} must be {dimension.describe()}, got {value}")
        return value
    if isinstance(dimension, FloatDimension):
        try:
            if isinstance(text, bool):
                raise ValueError
            value = float(text)
        except (TypeError, ValueError):
            raise OverrideError(f"{source}: {dimension.name} takes a number, got {raw!r}") from None
        if not dimension.low <= value <= dimension.high:
            raise OverrideError(f"{source}: {dimension.name} must be {dimension.describe()}, got {value}")
        return value
    if isinstance(dimension, CategoricalDimension):
        for choice in dimension.choices:
            if _same(choice, text) or (isinstance(text, str) and str(choice).lower() == text.lower()):
                return choice
        for choice in dimension.choices:  # a TOML number or bool for a text choice; '0' for 0.0
            if str(choice).lower() == str(text).lower() or _same_number(choice, text):
                return choice
        raise OverrideError(f"{source}: {dimension.name} must be {dimension.describe()}, got {raw!r}")
    raise OverrideError(f"{source}: dimension {dimension.name} of type {type(dimension).__name__} "
                        "cannot be restricted")


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    """``'depth=4'`` -> ``('depth', '4')``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise OverrideError(f"{flag} takes NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """A TOML file with ``[fix]`` and ``[choices]`` tables (or a ``NAMED_CONFIGS`` name that is not a
    file here); anything else is refused."""
    if str(path) in NAMED_CONFIGS and not Path(path).exists():
        return {table: dict(NAMED_CONFIGS[str(path)][table]) for table in CONFIG_TABLES}
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise OverrideError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise OverrideError(f"--config {path}: not valid TOML ({error})") from None
    unknown = sorted(set(data) - set(CONFIG_TABLES))
    if unknown:
        raise OverrideError(f"--config {path}: unknown key(s) {unknown}; expected the tables "
                            f"{', '.join(f'[{t}]' for t in CONFIG_TABLES)}")
    for table in CONFIG_TABLES:
        if not isinstance(data.get(table, {}), dict):
            raise OverrideError(f"--config {path}: {table} must be a table ([{table}]), "
                                f"got {type(data[table]).__name__}")
    return {table: dict(data.get(table, {})) for table in CONFIG_TABLES}


def _split_choices(raw: Any, source: str) -> list[Any]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or any(isinstance(i, str) and not i.strip() for i in items):
        raise OverrideError(f"{source}: needs a comma-separated list (or a TOML array) of values, got {raw!r}")
    return items


def make_restriction(dimensions: Sequence[Dimension], fix: Mapping[str, Any],
                     choices: Mapping[str, Any], *, fix_source: str = "--fix",
                     choices_source: str = "--choices") -> Restriction:
    """Check every name and value against the declared dimensions; a single choice is a fix."""
    by_name = {d.name: d for d in dimensions}
    known = ", ".join(by_name)
    fixed: dict[str, Any] = {}
    allowed: dict[str, tuple[Any, ...]] = {}
    for table, source in ((fix, fix_source), (choices, choices_source)):
        for name in table:
            if name not in by_name:
                raise OverrideError(f"{source} {name}: unknown dimension; known dimensions: {known}")
    for name in sorted(set(fix) & set(choices)):
        raise OverrideError(f"{name} is both fixed and given choices; use one of {fix_source}, {choices_source}")
    for name, raw in fix.items():
        fixed[name] = parse_value(by_name[name], raw, f"{fix_source} {name}={raw}")
    for name, raw in choices.items():
        source = f"{choices_source} {name}={raw}"
        values: list[Any] = []
        for item in _split_choices(raw, source):
            value = parse_value(by_name[name], item, source)
            if not _contains(values, value):
                values.append(value)
        if len(values) == 1:
            fixed[name] = values[0]
        else:
            allowed[name] = tuple(values)
    return Restriction(fixed=fixed, choices=allowed)


def restriction_from_args(dimensions: Sequence[Dimension], fix_args: Sequence[str] = (),
                          choices_args: Sequence[str] = (), config: str | Path | None = None) -> Restriction:
    """Merge a ``--config`` file with ``--fix``/``--choices`` flags; a flag overrides the file's entry."""
    fix: dict[str, Any] = {}
    choices: dict[str, Any] = {}
    if config is not None:
        tables = load_config(config)
        file_restriction = make_restriction(dimensions, tables["fix"], tables["choices"],
                                            fix_source=f"--config {config} [fix]",
                                            choices_source=f"--config {config} [choices]")
        fix.update(file_restriction.fixed)
        choices.update({k: list(v) for k, v in file_restriction.choices.items()})
    flag_fix: dict[str, str] = {}
    flag_choices: dict[str, str] = {}
    for flag, args, target in (("--fix", fix_args, flag_fix), ("--choices", choices_args, flag_choices)):
        for text in args:
            name, value = parse_assignment(text, flag)
            if name in target:
                raise OverrideError(f"{flag} {name} is given twice ({target[name]} and {value})")
            target[name] = value
    for name in flag_fix:
        choices.pop(name, None)
    for name in flag_choices:
        fix.pop(name, None)
    # The file's entries are already parsed values; re-parsing them is a no-op that keeps one path.
    return make_restriction(dimensions, {**fix, **flag_fix}, {**choices, **flag_choices})


class RestrictedSuggest:
    """A ``Suggest`` that applies a ``Restriction`` and forwards everything else to ``inner``.

    ``fixed`` collects the fixed values this architecture used: they are not sampler params, so the
    caller stores them next to the params (the Optuna adapter merges them into the record).
    """

    def __init__(self, inner: Suggest, restriction: Restriction) -> None:
        self.inner, self.restriction = inner, restriction
        self.fixed: dict[str, Any] = {}
        self.asked: set[str] = set()

    def __getattr__(self, name: str) -> Any:  # e.g. an Optuna trial's number / set_user_attr
        return getattr(self.inner, name)

    def _allowed(self, name: str, available: Callable[[Any], bool], offered: str) -> list[Any] | None:
        self.asked.add(name)
        if name in self.restriction.fixed:
            value = self.restriction.fixed[name]
            if not available(value):
                raise RestrictionConflict(f"--fix {name}={value} does not apply here: this architecture "
                                          f"offers {name} {offered}")
            return [value]
        if name in self.restriction.choices:
            values = [v for v in self.restriction.choices[name] if available(v)]
            if not values:
                given = ",".join(map(str, self.restriction.choices[name]))
                raise RestrictionConflict(f"--choices {name}={given} does not apply here: this "
                                          f"architecture offers {name} {offered}")
            return values
        return None

    def _fixed(self, name: str, value: Any) -> Any:
        self.fixed[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        values = self._allowed(name, lambda v: low <= v <= high and (v - low) % step == 0,
                               f"{low}..{high}" + (f" step {step}" if step != 1 else ""))
        if values is None:
            return self.inner.suggest_int(name, low, high, step=step, log=log)
        if len(values) == 1:
            return self._fixed(name, values[0])
        values.sort()
        if values == list(range(values[0], values[-1] + 1, step)):  # still a range: keep it ordinal
            return self.inner.suggest_int(name, values[0], values[-1], step=step, log=log)
        return self.inner.suggest_categorical(name, values)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        values = self._allowed(name, lambda v: low <= v <= high, f"{low}..{high}")
        if values is None:
            return self.inner.suggest_float(name, low, high, step=step, log=log)
        if len(values) == 1:
            return self._fixed(name, values[0])
        return self.inner.suggest_categorical(name, sorted(values))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        offered = list(choices)
        values = self._allowed(name, lambda v: _contains(offered, v), "one of " + ", ".join(map(str, offered)))
        if values is None:
            return self.inner.suggest_categorical(name, offered)
        if len(values) == 1:
            return self._fixed(name, values[0])
        return self.inner.suggest_categorical(name, [c for c in offered if _contains(values, c)])


def check_restriction(sample_spec: Callable[[Suggest], Any], restriction: Restriction,
                      dimensions: Sequence[Dimension] = (), samples: int = CHECK_SAMPLES) -> None:
    """Refuse a restriction that no architecture can meet, or one naming a dimension it never reaches.

    Conditional dimensions (asked only for some architectures) are why this samples: seeded, so
    the verdict is the same every run, and cheap since no model is built.
    """
    if not restriction:
        return
    asked: set[str] = set()
    first_error: Exception | None = None
    met = 0
    for seed in range(samples):
        suggest = RestrictedSuggest(RandomSuggest(seed), restriction)
        try:
            sample_spec(suggest)
        except (RestrictionConflict, ValueError) as error:
            first_error = first_error or error
            continue
        met += 1
        asked |= suggest.asked
    if not met:
        raise OverrideError(f"no architecture of the space meets the restriction: {first_error}")
    for name in (*restriction.fixed, *restriction.choices):
        if name not in asked:
            flag = "--fix" if name in restriction.fixed else "--choices"
            when = next((getattr(d, "applies_when", "") for d in dimensions if d.name == name), "")
            raise OverrideError(f"{flag} {name}: the dimension never applies under this restriction "
                                f"(it applies only when {when or 'another dimension allows it'})")


def describe_dimensions(dimensions: Sequence[Dimension], restriction: Restriction = Restriction()) -> list[str]:
    """One line per dimension: name, values, the active restriction, what it changes."""
    def meaning(d: Dimension) -> str:
        when = getattr(d, "applies_when", "")
        return f"{d.help} (only when {when})" if when else d.help

    rows = [(d.name, d.describe(), restriction.describe(d.name) or "-", meaning(d)) for d in dimensions]
    header = ("dimension", "values", "restriction", "what it changes")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(3)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3]
            for row in (header, *rows)]
