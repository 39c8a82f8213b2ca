"""The baseline family of a search: known designs scaled by hand to the search's range of MACs.

A search has to beat what an engineer gets by scaling a known design, not one preset. The family is
each design of ``search_spaces.family_designs.DESIGNS`` (the residual U-Net ``resunet-standard`` and the
plain ``unet-16``, as the space expresses them) at the depth nnU-Net plans for the image size
(``planned_depth``: the bottleneck at least 4 px, within the space's depth range), scaled uniformly
in width to a ladder of MAC targets:

* **Range.** From the space's bounds at the run's input shape: the low end is the cheaper design
  at the space's smallest depth, base width and width growth, the high end the costlier design at
  its planned depth with the largest ones (as far as ``--fix``/``--choices`` allow): the MACs the
  designs can take inside the space. ``--max-macs`` caps the top.
* **Ladder.** ``rungs`` targets spaced geometrically from the bottom to the top of that range, the
  same for every design; member ``m0`` is the cheapest.
* **Width.** Bisection over the base width (``search_spaces.family_designs.base_widths``: two significant
  bits, 4, 5, 6, 7, 8, 10, 12, ...), stage widths base x 2^i; the member is the base whose MACs are
  nearest the target in ratio. MACs grow with the square of the base and neighbouring bases differ
  by at most 25 %, so every target at or above the base-4 member's MACs is met within +25 % / -20 %
  (``TOLERANCE``; ``tests/test_family.py`` checks it at 64 px). A member over ``--max-macs`` takes
  the next smaller base; one over ``--max-params`` is left out; two rungs that land on the same
  width are one member.

MACs are counted (``nas.costs.measure.count_macs``, batch 1, ``in_channels``) at the run's image size.
``point`` is the member as a point of the search space (for warm starts): exact when the space can
say it, else the nearest point by MACs among the space's base widths and growths at the same depth
(e.g. base 4 is below the ``resunet`` space's 8..16), recorded with its own spec and MACs.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from search_spaces import SearchSpace
from search_spaces.family_designs import (DESIGNS, base_widths, design_template, planned_depth, scaled,
                                          space_point, spec_params)
from search_spaces.overrides import Restriction

from nas.costs.constraints import Constraints
from nas.costs.measure import count_macs, count_params

DEFAULT_RUNGS = 3
TOLERANCE = 0.25  # relative MACs error of a member against its target (base width >= 4)
PREFIX = "family-"


@dataclass(frozen=True)
class FamilyMember:
    """One rung of one design: the planned spec and, for warm starts, its point in the space."""

    name: str  # "family-resunet-m1"
    design: str  # a key of DESIGNS
    rung: int  # 0 = the cheapest target
    target_macs: int
    macs: int  # of ``spec`` at the run's input shape
    spec: Any  # the planned, width-scaled spec (frozen; ``space.spec_from_dict(spec.to_dict())`` rebuilds it)
    params: dict[str, Any] | None = field(default=None, compare=False)  # the space point's sampler params
    point_spec: Any = None  # the spec the point gives (== spec when exact)
    point_macs: int | None = None

    @property
    def preset(self) -> str:
        return DESIGNS[self.design]

    @property
    def exact(self) -> bool:
        """The space expresses the planned spec exactly (its warm-start trial is the member itself)."""
        return self.point_spec is not None and self.point_spec == self.spec

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "design": self.design, "preset": self.preset, "rung": self.rung,
                "target_macs": self.target_macs, "macs": self.macs, "spec": self.spec.to_dict()}
        if self.params is not None:
            data.update(params=dict(self.params), point_spec=self.point_spec.to_dict(), point_macs=self.point_macs,
                        exact=self.exact)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], space: SearchSpace) -> "FamilyMember":
        point = data.get("point_spec")
        return cls(str(data["name"]), str(data["design"]), int(data["rung"]), int(data["target_macs"]),
                   int(data["macs"]), space.spec_from_dict(dict(data["spec"])),
                   dict(data["params"]) if data.get("params") is not None else None,
                   space.spec_from_dict(dict(point)) if point else None,
                   int(data["point_macs"]) if data.get("point_macs") is not None else None)


def member_name(design: str, rung: int) -> str:
    return f"{PREFIX}{design}-m{rung}"


class MacCounter:
    """MACs of specs at one input shape, each spec counted once (bisection and ranges revisit them)."""

    def __init__(self, space: SearchSpace, image_size: int, in_channels: int) -> None:
        self.space, self.in_channels = space, in_channels
        self.shape = (1, in_channels, *[image_size] * space.spatial_dims)
        self._known: dict[Any, int] = {}

    def __call__(self, spec: Any) -> int:
        if spec not in self._known:
            self._known[spec] = count_macs(self.space.build_model(spec, self.in_channels, 1), self.shape)
        return self._known[spec]


def space_mac_range(space: SearchSpace, templates: Sequence[Any], macs: MacCounter,
                    restriction: Restriction = Restriction()) -> tuple[float, float]:
    """(low, high): the cheaper design at the space's smallest depth, base width and width growth,
    and the costlier design at its planned depth with the space's largest ones, as far as the
    (restricted) space allows: the MACs the designs can take inside the space, read from its bounds."""
    lows, highs = [], []
    for template in templates:
        params = spec_params(template)
        steps = [key for key in params if key.startswith("width_step_")]
        for extreme, depth, found in ((0.0, 1, lows), (1e9, template.depth, highs)):
            wanted = {**params, "depth": depth, "base_width": extreme, "width_growth": extreme,
                      **{key: extreme for key in steps}}
            found.append(macs(space_point(space.sample_spec, wanted, restriction)[1]))
    return float(min(lows)), float(max(highs))


def mac_ladder(low: float, high: float, rungs: int) -> list[int]:
    """``rungs`` targets from ``low`` to ``high``, geometrically spaced (one rung: their geometric mean)."""
    if rungs < 1:
        raise ValueError(f"a family needs at least one rung, got {rungs}")
    if rungs == 1:
        return [int(round(math.sqrt(low * high)))]
    ratio = (high / low) ** (1 / (rungs - 1))
    return [int(round(low * ratio**i)) for i in range(rungs)]


def fit_width(template: Any, target: float, macs: Callable[[Any], int],
              widths: Sequence[int] | None = None) -> tuple[Any, int]:
    """(spec, MACs) of ``template`` at the base width whose MACs are nearest ``target`` in ratio: a
    bisection for the first base at or over the target, then the closer of it and the one below."""
    widths = list(widths or base_widths())
    lo, hi = 0, len(widths) - 1
    while lo < hi:  # MACs grow with the base: find the first base reaching the target
        mid = (lo + hi) // 2
        if macs(scaled(template, widths[mid])) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [scaled(template, widths[i]) for i in {max(lo - 1, 0), lo}]
    best = min(candidates, key=lambda spec: (abs(math.log(macs(spec) / target)), macs(spec)))
    return best, macs(best)


def nearest_point(space: SearchSpace, spec: Any, macs: MacCounter,
                  restriction: Restriction = Restriction()) -> tuple[dict[str, Any], Any]:
    """(params, spec) of the space point that is ``spec``, or else the one nearest to it in MACs among
    the space's base widths and width growths (everything else as close as the space allows)."""
    wanted = spec_params(spec)
    params, point = space_point(space.sample_spec, wanted, restriction)
    if point == spec:
        return params, point
    dims = {d.name: d for d in space.dimensions}
    bases = [wanted["base_width"]]
    if "base_width" in dims and hasattr(dims["base_width"], "low"):
        bases = list(range(dims["base_width"].low, dims["base_width"].high + 1, dims["base_width"].step))
    growths = list(getattr(dims.get("width_growth"), "choices", (wanted["width_growth"],)))
    options = {}
    for base in bases:
        for growth in growths:
            steps = {f"width_step_{level}": growth for level in range(1, spec.depth)}
            found = space_point(space.sample_spec, {**wanted, **steps, "base_width": base, "width_growth": growth},
                                restriction)
            options.setdefault(found[1], found[0])
    target = macs(spec)
    best = min(options, key=lambda s: (abs(math.log(macs(s) / target)), -s.encoder_widths[-1]))
    return options[best], best


def plan_family(space: SearchSpace, *, image_size: int, in_channels: int = 1, rungs: int = DEFAULT_RUNGS,
                restriction: Restriction = Restriction(), constraints: Constraints = Constraints(),
                designs: Sequence[str] = tuple(DESIGNS), points: bool = True,
                log: Callable[[str], None] | None = None) -> list[FamilyMember]:
    """The family of a search (the rule is the module's docstring), cheapest rung first per design.

    ``points`` also maps each member to the space (``nearest_point``), which a warm start needs; a
    member whose point is an earlier member's is then left out (a warm start would queue it twice).
    """
    macs = MacCounter(space, image_size, in_channels)
    depth_dim = {d.name: d for d in space.dimensions}.get("depth")
    depth = planned_depth(image_size, getattr(depth_dim, "low", 3), getattr(depth_dim, "high", 6))
    templates = {}
    for design in designs:
        try:
            templates[design] = design_template(design, space.sample_spec, depth, restriction)
        except ValueError as error:
            if log:
                log(f"family: {error}; left out")
    for design, template in list(templates.items()):
        if image_size // template.downsampling_factor < 2:  # as the trial policy refuses it
            del templates[design]
            if log:
                log(f"family: the {design} family at depth {template.depth} halves {image_size} px "
                    "under 2 px; left out")
    if not templates:
        return []
    low, high = space_mac_range(space, list(templates.values()), macs, restriction)
    if constraints.max_macs is not None:
        high = min(high, float(constraints.max_macs))
        low = min(low, high)
    targets = mac_ladder(low, high, rungs)
    members: list[FamilyMember] = []
    for design, template in templates.items():
        seen: set[Any] = set()
        seen_points: dict[Any, str] = {}
        for rung, target in enumerate(targets):
            spec, count = fit_width(template, target, macs)
            name, widths, limit = member_name(design, rung), base_widths(), constraints.max_macs
            while limit is not None and count > limit and spec.encoder_widths[0] > widths[0]:
                spec = scaled(template, widths[bisect.bisect_left(widths, spec.encoder_widths[0]) - 1])
                count = macs(spec)
            if spec in seen:
                continue  # two targets closer than one width step: one member
            if limit is not None and count > limit:
                if log:
                    log(f"family: {name} left out: {count / 1e6:.1f} MMAC > --max-macs even at base width {widths[0]}")
                continue
            if constraints.max_params is not None:
                params = count_params(space.build_model(spec, in_channels, 1))
                if params > constraints.max_params:
                    if log:
                        log(f"family: {name} left out: {params} params > --max-params {constraints.max_params}")
                    continue
            seen.add(spec)
            member = FamilyMember(name, design, rung, target, count, spec)
            if points:
                params, point = nearest_point(space, spec, macs, restriction)
                if point in seen_points:  # the space says two members the same way: one warm-start trial
                    if log:
                        log(f"family: {name} left out: the space's nearest point is that of {seen_points[point]}")
                    continue
                seen_points[point] = name
                member = FamilyMember(name, design, rung, target, count, spec, params, point, macs(point))
            members.append(member)
    return members


def describe(member: FamilyMember) -> str:
    """One line: name, target and actual MACs, widths, and how the space point differs."""
    line = (f"{member.name}: target {member.target_macs / 1e6:.1f} MMAC, {member.macs / 1e6:.1f} MMAC  "
            f"{member.spec.summary()}")
    if member.point_spec is not None and not member.exact:
        line += (f"; the space's nearest point {member.point_spec.summary()} "
                 f"({member.point_macs / 1e6:.1f} MMAC, {member.point_macs / member.macs:.2f}x)")
    return line

