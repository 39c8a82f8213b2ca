"""The ``resunet`` search spaces: declared dimensions and ``sample_spec(suggest) -> ResUNetSpec``.

Conditional dimensions are suggested only where they apply (``applies_when``), so a sampler never
sees a parameter that does nothing, and combinations that make no sense are never drawn: widths
are built non-decreasing, ``gate`` attention is skip-only, the parameter-free ``bilinear``
up-sampling (preset-only) is not offered. Default ranges are sized for a CPU search at 64 px.
"""
from __future__ import annotations

from typing import Callable

from ..dimensions import CategoricalDimension, Dimension, IntDimension, Suggest
from .spec import ResUNetSpec

WIDTH_STEPS = (1.0, 1.5, 2.0)
DILATION_SCHEDULES = {"1": (1, False), "2": (2, False), "4": (4, False), "1-2-4": (4, True)}
MAX_STAGES = 6


def make_dimensions(spatial_dims: int = 2) -> tuple[Dimension, ...]:
    """The declared dimensions; 3D gets shallower, narrower defaults (volumes cost ~S times more)."""
    max_depth, max_base = (6, 16) if spatial_dims == 2 else (5, 12)
    return (
        IntDimension("depth", 3, max_depth, help="encoder stages, bridge included (depth-1 downsamplings)"),
        CategoricalDimension("width_mode", ("growth", "per_stage"),
                             help="stage widths as base x growth^level, or a chosen step per stage"),
        IntDimension("base_width", 8, max_base, step=4, help="width of encoder stage 0"),
        CategoricalDimension("width_growth", (1.5, 2.0), help="width ratio between consecutive stages",
                             applies_when="width_mode=growth"),
        *[CategoricalDimension(f"width_step_{level}", WIDTH_STEPS,
                               help=f"width of stage {level} / width of stage {level - 1} (never shrinks)",
                               applies_when=f"width_mode=per_stage and depth>{level}")
          for level in range(1, MAX_STAGES if spatial_dims == 2 else 5)],
        IntDimension("blocks_per_stage", 1, 3, help="blocks in every encoder and decoder stage"),
        CategoricalDimension("block", ("basic", "bottleneck", "preact", "inverted", "plain"),
                             help="unit of every stage: residual basic / bottleneck / pre-activation, "
                                  "MobileNetV2 inverted residual, or U-Net double conv without shortcut"),
        IntDimension("expansion", 2, 6, help="inverted residual expansion ratio",
                     applies_when="block=inverted"),
        CategoricalDimension("downsample", ("maxpool", "strided"),
                             help="max-pool before a stage, or stride 2 in its first block"),
        CategoricalDimension("dilation", tuple(DILATION_SCHEDULES),
                             help="dilation of the bridge stage's 3x3 convs; 1-2-4 = hybrid sawtooth"),
        CategoricalDimension("aspp", (False, True), help="ASPP module after the bridge"),
        CategoricalDimension("attention", ("none", "se", "scse", "cbam", "gate"),
                             help="attention: squeeze-excitation, spatial+channel SE, CBAM, or the "
                                  "Attention U-Net gate on skips"),
        CategoricalDimension("attention_place", ("skip", "decoder"),
                             help="apply attention to each skip or to each decoder stage's output",
                             applies_when="attention in se,scse,cbam"),
        CategoricalDimension("skip_fusion", ("add", "concat"), help="merge skip and up-sampled features"),
        CategoricalDimension("skip_gain", (False, True), help="learnable scalar gain on every skip"),
        CategoricalDimension("upsample", ("transposed", "bilinear_conv", "pixel_shuffle"),
                             help="2x up-sampling in the decoder (all three cost the same MACs)"),
        CategoricalDimension("multiscale_input", (False, True),
                             help="concatenate the down-scaled image at the input of every encoder stage"),
        CategoricalDimension("deep_supervision", (False, True),
                             help="extra 1x1 logit heads on the coarser decoder stages (forward_with_aux)"),
        CategoricalDimension("norm", ("batch", "group", "instance"), help="normalisation layer"),
        CategoricalDimension("activation", ("relu", "leaky_relu", "gelu", "silu"), help="activation"),
        CategoricalDimension("dropout", (0.0, 0.1, 0.2), help="channel dropout after bridge and decoder stages"),
    )


def stage_widths(base: int, depth: int, steps: list[float]) -> tuple[int, ...]:
    """Non-decreasing widths from ``base`` and one ratio per further stage, rounded to ints."""
    widths = [base]
    for step in steps[:depth - 1]:
        widths.append(max(widths[-1], int(round(widths[-1] * step))))
    return tuple(widths)


def make_sampler(spatial_dims: int) -> Callable[[Suggest], ResUNetSpec]:
    dims = {dim.name: dim for dim in make_dimensions(spatial_dims)}

    def sample_spec(suggest: Suggest) -> ResUNetSpec:
        """Draw one architecture; needs only ``suggest_int`` / ``suggest_categorical``."""
        def draw(name: str):
            return dims[name].suggest(suggest)

        depth = draw("depth")
        base = draw("base_width")
        if draw("width_mode") == "growth":
            steps = [float(draw("width_growth"))] * (depth - 1)
        else:
            steps = [float(draw(f"width_step_{level}")) for level in range(1, depth)]
        encoder = stage_widths(base, depth, steps)
        blocks = draw("blocks_per_stage")
        block = draw("block")
        expansion = draw("expansion") if block == "inverted" else 4
        downsample = draw("downsample")
        dilation, hybrid = DILATION_SCHEDULES[draw("dilation")]
        aspp = draw("aspp")
        attention = draw("attention")
        place = draw("attention_place") if attention in ("se", "scse", "cbam") else "skip"
        return ResUNetSpec(
            encoder_widths=encoder, decoder_widths=encoder[:-1], blocks_per_stage=blocks,
            block=block, expansion=expansion, downsample=downsample, bridge_dilation=dilation,
            hybrid_dilation=hybrid, aspp=aspp, skip_attention=attention, attention_place=place,
            skip_fusion=draw("skip_fusion"), skip_gain=draw("skip_gain"), upsample=draw("upsample"),
            multiscale_input=draw("multiscale_input"), deep_supervision=draw("deep_supervision"),
            norm=draw("norm"), activation=draw("activation"), dropout=float(draw("dropout")),
            spatial_dims=spatial_dims,
        )

    return sample_spec


DIMENSIONS = make_dimensions(2)
DIMENSIONS_3D = make_dimensions(3)
sample_spec = make_sampler(2)
sample_spec_3d = make_sampler(3)
