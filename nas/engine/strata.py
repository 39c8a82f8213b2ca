"""Cost strata: a search's first proposals spread over the space's range of MACs, cheapest first.

A front needs a point at every cost, and uniform draws of the space crowd its middle: at 64 px the
default space's median draw is ~55 MMAC and one in eight is under 10 MMAC, while a cheap model trains
in seconds and is what a user after the smallest model that still segments needs first. So before
the sampler takes over, ``draw_strata`` draws ``pool`` architectures uniformly (seeded, as Optuna's
random sampler would), counts their MACs, splits the pool's log10-MAC range into ``count`` equal
strata and keeps the first draw in each, cheapest stratum first. The engine queues them as trials
(``nas.engine.optuna_adapter.warm_start``); they are ordinary searched trials otherwise (stopped
early like any other). Kept as a default by the replay (benchmarks/RESULTS.md, issue 25).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from search_spaces import RandomSuggest, SearchSpace
from search_spaces.overrides import RestrictedSuggest, Restriction, RestrictionConflict

POOL_PER_STRATUM = 5  # uniform draws per stratum: 30 for 6 strata, a few seconds of MAC counting


@dataclass(frozen=True)
class Stratum:
    """One queued architecture: its sampler params, where it falls and what it (about) costs."""

    index: int  # 0 = the cheapest stratum
    params: dict[str, Any]  # the sampler's params (fixed dimensions left out, as a trial records them)
    macs: int  # at the run's input shape (``nas.costs.measure.count_macs_on_meta``)
    summary: str  # the spec in one line, for the log

    @property
    def name(self) -> str:
        return f"stratum-{self.index}"

    def to_dict(self) -> dict[str, Any]:
        """As the start queue takes it (``nas.engine.optuna_adapter.warm_start.enqueue_start``)."""
        return {"name": self.name, "stratum": self.index, "params": dict(self.params), "macs": self.macs,
                "summary": self.summary}


def draw_strata(space: SearchSpace, *, count: int, seed: int, macs_of: Callable[[Any], int],
                fits: Callable[[Any], bool] = lambda spec: True, max_macs: int | None = None,
                restriction: Restriction = Restriction(), pool: int | None = None) -> list[Stratum]:
    """``count`` architectures, one per equal log10-MAC stratum of ``pool`` uniform draws (default
    ``POOL_PER_STRATUM * count``), cheapest first; fewer when strata are empty or the space is small.

    What the run could never train is never drawn: ``fits(spec)`` (checked before counting: e.g. too
    deep for the image size) and ``max_macs``; ``macs_of(spec)`` counts MACs at the run's input shape."""
    if count < 1:
        return []
    pool = pool or POOL_PER_STRATUM * count
    drawn: list[tuple[float, dict[str, Any], Any, int]] = []
    seen: set[Any] = set()
    for attempt in range(pool * 4):  # a small or restricted space repeats itself: stop trying
        if len(drawn) >= pool:
            break
        inner = RandomSuggest(seed=seed * 1_000_003 + attempt)
        try:
            spec = space.sample_spec(RestrictedSuggest(inner, restriction) if restriction else inner)
        except RestrictionConflict:
            continue
        if spec in seen or not fits(spec):
            continue
        seen.add(spec)
        macs = int(macs_of(spec))
        if max_macs is None or macs <= max_macs:
            drawn.append((math.log10(max(macs, 1)), dict(inner.params), spec, macs))
    if not drawn:
        return []
    low, high = min(d[0] for d in drawn), max(d[0] for d in drawn)
    width = (high - low) / count or 1.0
    first: dict[int, tuple[float, dict[str, Any], Any, int]] = {}
    for item in drawn:  # in draw order: the first draw that falls in a stratum is its architecture
        first.setdefault(min(int((item[0] - low) / width), count - 1), item)
    return [Stratum(index, params, macs, spec.summary())
            for index, (_, params, spec, macs) in sorted(first.items())]
