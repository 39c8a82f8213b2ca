"""Registry of search spaces: ``get_space(name)``, ``list_spaces()``.

A space bundles its declared dimensions, ``sample_spec(suggest)``, ``spec_from_dict`` and
``build_model(spec, in_channels, out_channels)``; stages downstream only use these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from . import resunet
from .dimensions import Dimension, RandomSuggest, Suggest


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    dimensions: tuple[Dimension, ...]
    sample_spec: Callable[[Suggest], Any]
    spec_from_dict: Callable[[dict], Any]
    build_model: Callable[..., nn.Module]
    spatial_dims: int = 2  # inputs are (B, C, H, W) for 2, (B, C, D, H, W) for 3


_SPACES: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> SearchSpace:
    if space.name in _SPACES:
        raise ValueError(f"search space {space.name!r} is already registered")
    _SPACES[space.name] = space
    return space


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def get_space(name: str) -> SearchSpace:
    try:
        return _SPACES[name]
    except KeyError:
        raise ValueError(
            f"unknown search space {name!r}; known spaces: {', '.join(list_spaces())}"
        ) from None


register_space(SearchSpace(
    name="resunet",
    description="Residual U-Net family (2D): block type, widths, depth, attention, skip fusion, "
                "up-sampling, dilation/ASPP, multi-scale input, deep supervision, norm, activation",
    dimensions=resunet.DIMENSIONS,
    sample_spec=resunet.sample_spec,
    spec_from_dict=resunet.ResUNetSpec.from_dict,
    build_model=resunet.build_model,
))
register_space(SearchSpace(
    name="resunet3d",
    description="The resunet space with 3D convolutions, for volumes (B, C, D, H, W)",
    dimensions=resunet.DIMENSIONS_3D,
    sample_spec=resunet.sample_spec_3d,
    spec_from_dict=resunet.ResUNetSpec.from_dict,
    build_model=resunet.build_model,
    spatial_dims=3,
))

__all__ = ["RandomSuggest", "SearchSpace", "Suggest", "get_space", "list_spaces", "register_space"]
