"""Declared search dimensions, driven by anything with Optuna's three ``suggest_*`` methods.

An Optuna trial, ``optuna.trial.FixedTrial`` and a Ray config adapter all satisfy ``Suggest``,
so the core never imports Optuna.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence


class Suggest(Protocol):
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class IntDimension:
    name: str
    low: int
    high: int
    step: int = 1
    help: str = ""
    applies_when: str = ""  # empty: always suggested; else when it is (e.g. "block=inverted")

    def suggest(self, suggest: Suggest) -> int:
        return suggest.suggest_int(self.name, self.low, self.high, step=self.step)

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"int {self.low}..{self.high}{step}"


@dataclass(frozen=True)
class CategoricalDimension:
    name: str
    choices: tuple[Any, ...]
    help: str = ""
    applies_when: str = ""  # empty: always suggested; else when it is (e.g. "block=inverted")

    def suggest(self, suggest: Suggest) -> Any:
        return suggest.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


@dataclass(frozen=True)
class FloatDimension:
    name: str
    low: float
    high: float
    step: float | None = None
    log: bool = False
    help: str = ""
    applies_when: str = ""  # empty: always suggested; else when it is (e.g. "block=inverted")

    def suggest(self, suggest: Suggest) -> float:
        return suggest.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        step = f" step {self.step}" if self.step is not None else ""
        return f"float {self.low}..{self.high}{step}{' log' if self.log else ''}"


Dimension = IntDimension | CategoricalDimension | FloatDimension


class RandomSuggest:
    """A seeded ``Suggest`` without Optuna: for tests, smoke runs and random baselines."""

    def __init__(self, seed: int = 0) -> None:
        import random

        self._rng = random.Random(seed)
        self.params: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = self._rng.randrange(low, high + 1, step)
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        value = self._rng.uniform(low, high)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = self._rng.choice(list(choices))
        self.params[name] = value
        return value
