"""The range every numeric setting must lie in, written once for the CLIs and the Python API.

A ``Range`` parses and checks one value: NaN and infinity are refused, so neither can reach a study
(a NaN stored in the study's settings never equals itself, and the run could not be resumed). The
CLIs use ranges as argparse types (``nas.cli.common.number``); ``SearchConfig`` checks its fields with
the same ranges. ``pixel_budget_problem`` bounds what one batch may ask for, so no size flag can ask
for terabytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

SEED_MAX = 2**32 - 1  # numpy's and the samplers' seeds are 32-bit
MAX_SIDE = 8192  # px: the largest side any command takes (a 4K frame is 3840 x 2160)
MAX_BATCH_PIXELS = 2**26  # batch x pixels (voxels) of one forward: 8192^2, or 4 x 4096^2, or 4 x 256^3


@dataclass(frozen=True)
class Range:
    """Finite numbers in ``[low, high]`` (``low_open``/``high_open`` exclude an end); ints when ``integer``."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def parse(self, text: str) -> int | float:
        """The checked value of a flag's text; ``ValueError`` with a message that names no flag."""
        value = self._convert(str(text).strip(), text)
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def _convert(self, text: str, original: object) -> int | float:
        try:
            if self.integer:
                return int(text)
            return float(text)
        except ValueError:
            kind = "an integer" if self.integer else "a number"
            raise ValueError(f"expected {kind}, got {original!r}") from None

    def problem(self, value: object) -> str | None:
        """Why ``value`` is out of this range (or not a finite number), or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected {'an integer' if self.integer else 'a number'}, got {value!r}"
        if self.integer and not float(value).is_integer():
            return f"expected an integer, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (low_bad or high_bad):
            return None
        if self.low is not None and self.high is not None and not self.integer:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"must be in {left}{_show(self.low)}, {_show(self.high)}{right}, got {_show(value)}"
        if low_bad:
            return f"must be {'>' if self.low_open else '>='} {_show(self.low)}, got {_show(value)}"
        return f"must be {'<' if self.high_open else '<='} {_show(self.high)}, got {_show(value)}"


def _show(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not float(value).is_integer() else str(int(value))


def integers(low: int | None = None, high: int | None = None) -> Range:
    return Range(low, high, integer=True)


def numbers(low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> Range:
    return Range(low, high, low_open=low_open, high_open=high_open)


SEED = integers(0, SEED_MAX)
POSITIVE = numbers(0, None, low_open=True)  # finite and > 0 (limits, budgets, learning rates)
FRACTION = numbers(0, 1)  # [0, 1]
BATCH = integers(1, 4096)


def side_range(low: int, high: int = MAX_SIDE) -> Range:
    """The side of an input in px (``--image-size``); the budget check below bounds the whole batch."""
    return integers(low, high)


def pixel_budget_problem(sides: Sequence[int], batch: int = 1, *, what: str = "--image-size",
                         limit: int = MAX_BATCH_PIXELS) -> str | None:
    """Why a batch of ``batch`` inputs of ``sides`` (2 or 3 of them) is too large for one forward, or None."""
    pixels = batch * math.prod(int(s) for s in sides)
    if pixels <= limit:
        return None
    shape = " x ".join(str(int(s)) for s in sides)
    return (f"{what} {shape} at batch {batch} is {pixels:,} pixels per batch; at most {limit:,} "
            f"(2^{limit.bit_length() - 1}) are allowed: use a smaller size or batch")
