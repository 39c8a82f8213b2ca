"""The ResUNet family: spec, spaces (2D and 3D), builder."""
from .model import ResUNet, build_model
from .space import DIMENSIONS, DIMENSIONS_3D, sample_spec, sample_spec_3d
from .spec import SCHEMA_VERSION, ResUNetSpec

__all__ = ["DIMENSIONS", "DIMENSIONS_3D", "SCHEMA_VERSION", "ResUNet", "ResUNetSpec", "build_model",
           "sample_spec", "sample_spec_3d"]
