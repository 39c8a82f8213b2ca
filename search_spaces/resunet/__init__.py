"""The ResUNet family: spec, space, builder."""
from .model import ResUNet, build_model
from .space import DIMENSIONS, sample_spec
from .spec import SCHEMA_VERSION, ResUNetSpec

__all__ = ["DIMENSIONS", "SCHEMA_VERSION", "ResUNet", "ResUNetSpec", "build_model", "sample_spec"]
