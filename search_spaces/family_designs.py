"""Hand-scaled designs as a search space can express them: the pure spec side of the baseline family.

A family member is a known design (``DESIGNS``: the residual U-Net the product grew from and a plain
U-Net) at the depth nnU-Net would plan for the image size, scaled uniformly in width. Everything
here is plain specs and params, no model and no cost: ``nas.stages.family_planning`` counts the MACs and
chooses the widths.

``space_point`` answers the other question, what the search space can say about a spec: the params
that the space's ``sample_spec`` turns into it (or into its nearest expressible neighbour), which is
what a warm start enqueues as a trial.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

from .overrides import RestrictedSuggest, Restriction, RestrictionConflict
from .presets import get_preset
from .resunet import ResUNetSpec
from .resunet.space import DILATION_SCHEDULES

DESIGNS = {"resunet": "resunet-standard", "unet": "unet-16"}  # family design -> the preset it scales
MIN_BOTTLENECK = 4  # px: nnU-Net stops halving before a feature map side would drop under 4
SUBSTITUTES = {"bilinear": "bilinear_conv"}  # a preset value the space lacks -> the nearest value it offers


def planned_depth(image_size: int, low: int, high: int) -> int:
    """Stages (bridge included) that halve ``image_size`` down to a bottleneck of at least
    ``MIN_BOTTLENECK`` px (nnU-Net's rule: 64 px -> 5 stages, a 4 px bridge), within ``low..high``."""
    halvings = max(0, int(math.floor(math.log2(max(image_size, 1) / MIN_BOTTLENECK))))
    return min(max(halvings + 1, low), high)


def base_widths(largest: int = 1024) -> list[int]:
    """The base widths a member may have: two significant bits (4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ...,
    i.e. multiples of 2 from 8, of 4 from 16, of 8 from 32), so neighbours differ by at most 25 % in
    width; MACs grow with its square, so the nearest base is within +25 % / -20 % of any MAC target."""
    widths = sorted({m * 2**e for e in range(9) for m in (4, 5, 6, 7)})
    return [w for w in widths if w <= largest]


def scaled(spec: ResUNetSpec, base: int, depth: int | None = None) -> ResUNetSpec:
    """``spec`` with ``depth`` stages of widths ``base * 2**i`` (the presets' doubling), decoders
    mirroring the encoder as in both presets; every other choice of the design is kept."""
    depth = depth or spec.depth
    widths = tuple(base * 2**i for i in range(depth))
    return dataclasses.replace(spec, encoder_widths=widths, decoder_widths=widths[:-1], encoder_hidden_widths=(),
                               decoder_hidden_widths=(), upsample_widths=(), attention_widths=(), shortcuts=())


def spec_params(spec: ResUNetSpec) -> dict[str, Any]:
    """The ``resunet`` space's params that describe ``spec`` (the inverse of ``sample_spec``), before
    any check that the space offers each value: both width forms are given, the space asks for one."""
    widths = spec.encoder_widths
    ratios = [b / a for a, b in zip(widths, widths[1:])]
    dilation = next((key for key, value in DILATION_SCHEDULES.items()
                     if value == (spec.bridge_dilation, spec.hybrid_dilation)), "1")
    params: dict[str, Any] = {
        "depth": spec.depth, "base_width": widths[0],
        "width_mode": "growth" if len(set(ratios)) <= 1 else "per_stage",
        "width_growth": ratios[0] if ratios else 2.0,
        **{f"width_step_{level}": ratio for level, ratio in enumerate(ratios, start=1)},
        "blocks_per_stage": spec.blocks_per_stage, "block": spec.block, "expansion": spec.expansion,
        "downsample": spec.downsample, "dilation": dilation, "aspp": spec.aspp, "attention": spec.skip_attention,
        "attention_place": spec.attention_place, "skip_fusion": spec.skip_fusion, "skip_gain": spec.skip_gain,
        "upsample": spec.upsample, "multiscale_input": spec.multiscale_input,
        "deep_supervision": spec.deep_supervision, "norm": spec.norm, "activation": spec.activation,
        "dropout": spec.dropout,
    }
    return params


def _nearest(value: Any, offered: Sequence[Any]) -> Any:
    """``value`` if offered; else its substitute, the closest number, or the first choice."""
    offered = list(offered)
    if any(value == choice and type(value) is type(choice) for choice in offered):
        return value
    if SUBSTITUTES.get(value) in offered:
        return SUBSTITUTES[value]
    numbers = [c for c in offered if isinstance(c, (int, float)) and not isinstance(c, bool)]
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(numbers, key=lambda c: (abs(c - value), c))
    return offered[0]


class NearestSuggest:
    """A ``Suggest`` that answers from ``params``, with the nearest value the space offers where a
    param is out of range or missing; ``asked`` keeps every answer (the params of the point)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self.asked: dict[str, Any] = {}

    def _answer(self, name: str, offered: Sequence[Any]) -> Any:
        value = _nearest(self.params.get(name, offered[0]), offered)
        self.asked[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._answer(name, list(range(low, high + 1, step))))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        value = float(self.params.get(name, low))
        self.asked[name] = min(max(value, low), high)
        return self.asked[name]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._answer(name, list(choices))


def space_point(sample_spec: Callable[[Any], Any], params: dict[str, Any],
                restriction: Restriction = Restriction()) -> tuple[dict[str, Any], Any]:
    """(the sampler's params, the spec they give) for the point of the space nearest to ``params``,
    under ``restriction`` (fixed dimensions never reach the sampler, so they are not in the params).

    ``RestrictionConflict`` when the restriction leaves no such point (e.g. a fixed value that this
    design's block type does not offer)."""
    inner = NearestSuggest(params)
    suggest = RestrictedSuggest(inner, restriction) if restriction else inner
    spec = sample_spec(suggest)
    return dict(inner.asked), spec


WIDTH_KEYS = ("depth", "base_width", "width_mode", "width_growth", *(f"width_step_{i}" for i in range(1, 8)))
FOLLOWED = ("norm", "activation", "dropout")  # a restriction may change these: the design stays itself


def design_template(design: str, sample_spec: Callable[[Any], Any], depth: int,
                    restriction: Restriction = Restriction()) -> ResUNetSpec:
    """The design's preset as the space expresses it (e.g. bilinear up-sampling -> bilinear + 1x1 conv),
    at ``depth`` (a fixed depth wins); ``scaled`` then sets its widths. The restriction's norm,
    activation and dropout are followed; ``ValueError`` when it changes what makes the design (its
    block, fusion, sampling, attention, ...): that is not the design any more."""
    preset = get_preset(DESIGNS[design])
    params = spec_params(scaled(preset.spec, preset.spec.encoder_widths[0], depth))
    try:
        free = space_point(sample_spec, params)[1]
        spec = space_point(sample_spec, params, restriction)[1] if restriction else free
    except (RestrictionConflict, ValueError) as error:
        raise ValueError(f"the {design} family does not fit the restriction: {error}") from None
    wanted, got = spec_params(free), spec_params(spec)
    changed = sorted(key for key in wanted if key not in (*WIDTH_KEYS, *FOLLOWED) and wanted[key] != got.get(key))
    if changed:
        raise ValueError(f"the {design} family does not fit the restriction: it changes its "
                         + ", ".join(f"{key} {wanted[key]} -> {got.get(key)}" for key in changed))
    return spec


__all__ = ["DESIGNS", "NearestSuggest", "base_widths", "design_template", "planned_depth", "scaled", "space_point",
           "spec_params"]
