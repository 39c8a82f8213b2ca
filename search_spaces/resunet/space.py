"""The ``resunet`` search space: declared dimensions and ``sample_spec(suggest) -> ResUNetSpec``."""
from __future__ import annotations

from ..dimensions import CategoricalDimension, Dimension, IntDimension, Suggest
from .spec import DILATIONS, SKIP_ATTENTIONS, ResUNetSpec

DIMENSIONS: tuple[Dimension, ...] = (
    IntDimension("depth", 3, 5, help="encoder stages, bridge included (depth-1 downsamplings)"),
    IntDimension("base_width", 8, 32, step=4, help="width of stage 0; widths double per stage"),
    CategoricalDimension("bridge_dilation", DILATIONS, help="dilation of the deepest stage's convs"),
    CategoricalDimension("skip_attention", SKIP_ATTENTIONS, help="attention applied to each skip"),
)


def widths_doubling(base_width: int, depth: int) -> tuple[int, ...]:
    return tuple(base_width * 2**level for level in range(depth))


def sample_spec(suggest: Suggest) -> ResUNetSpec:
    """Draw one architecture; needs only ``suggest_int`` / ``suggest_categorical``."""
    values = {dim.name: dim.suggest(suggest) for dim in DIMENSIONS}
    encoder = widths_doubling(values["base_width"], values["depth"])
    return ResUNetSpec(
        encoder_widths=encoder,
        decoder_widths=encoder[:-1],
        bridge_dilation=values["bridge_dilation"],
        skip_attention=values["skip_attention"],
    )
