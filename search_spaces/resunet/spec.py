"""``ResUNetSpec``: the frozen, JSON-round-trippable architecture that every stage passes along.

Only plain values (ints, strings, tuples of ints). Per-stage widths are spelled out, so a pruned
model gets a new spec with the widths it really has and every checkpoint rebuilds from JSON.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

BLOCKS = ("basic",)
DOWNSAMPLES = ("maxpool",)
UPSAMPLES = ("transposed",)
SKIP_FUSIONS = ("add",)
SKIP_ATTENTIONS = ("none", "se")
DILATIONS = (1, 2, 4)
MAX_DEPTH = 8


@dataclass(frozen=True)
class ResUNetSpec:
    """A ResUNet architecture.

    ``encoder_widths[i]`` is the width of encoder stage ``i`` (stage 0 at full resolution, the last
    stage is the bridge). ``decoder_widths[i]`` is the width of the decoder stage that comes back to
    level ``i``; there is one per skip, so ``len(decoder_widths) == depth - 1``.
    """

    encoder_widths: tuple[int, ...]
    decoder_widths: tuple[int, ...]
    blocks_per_stage: int = 1
    block: str = "basic"
    bridge_dilation: int = 1
    skip_attention: str = "none"
    se_reduction: int = 4
    downsample: str = "maxpool"
    upsample: str = "transposed"
    skip_fusion: str = "add"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Accept lists (JSON) but store tuples, so the spec stays hashable and frozen.
        object.__setattr__(self, "encoder_widths", tuple(self.encoder_widths))
        object.__setattr__(self, "decoder_widths", tuple(self.decoder_widths))
        self._validate()

    @property
    def depth(self) -> int:
        """Number of encoder stages, bridge included."""
        return len(self.encoder_widths)

    @property
    def downsampling_factor(self) -> int:
        """Input sides must be a multiple of this (the model pads to it)."""
        return 2 ** (self.depth - 1)

    def _validate(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"invalid ResUNetSpec: {message}")

        if not isinstance(self.schema_version, int) or self.schema_version < 1:
            fail(f"schema_version must be a positive int, got {self.schema_version!r}")
        if self.schema_version > SCHEMA_VERSION:
            fail(
                f"schema_version {self.schema_version} is newer than this tool understands "
                f"({SCHEMA_VERSION}); upgrade the tool to read it"
            )
        if not 2 <= self.depth <= MAX_DEPTH:
            fail(f"depth (len(encoder_widths)) must be 2..{MAX_DEPTH}, got {self.depth}")
        for name in ("encoder_widths", "decoder_widths"):
            widths = getattr(self, name)
            if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
                fail(f"{name} must be positive ints, got {list(widths)}")
        if len(self.decoder_widths) != self.depth - 1:
            fail(
                f"decoder_widths needs one width per skip ({self.depth - 1}), "
                f"got {len(self.decoder_widths)}"
            )
        if not isinstance(self.blocks_per_stage, int) or not 1 <= self.blocks_per_stage <= 4:
            fail(f"blocks_per_stage must be 1..4, got {self.blocks_per_stage!r}")
        if not isinstance(self.se_reduction, int) or self.se_reduction < 1:
            fail(f"se_reduction must be a positive int, got {self.se_reduction!r}")
        for name, allowed in (
            ("block", BLOCKS),
            ("bridge_dilation", DILATIONS),
            ("skip_attention", SKIP_ATTENTIONS),
            ("downsample", DOWNSAMPLES),
            ("upsample", UPSAMPLES),
            ("skip_fusion", SKIP_FUSIONS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                fail(f"{name} must be one of {list(allowed)}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["encoder_widths"] = list(self.encoder_widths)
        out["decoder_widths"] = list(self.decoder_widths)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResUNetSpec":
        """Inverse of ``to_dict``; unknown keys and newer schema versions are refused clearly."""
        if not isinstance(data, dict):
            raise ValueError(f"invalid ResUNetSpec: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        version = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ValueError(
                f"invalid ResUNetSpec: schema_version {version} is newer than this tool understands "
                f"({SCHEMA_VERSION}); upgrade the tool to read it"
            )
        if unknown:
            raise ValueError(f"invalid ResUNetSpec: unknown field(s) {unknown}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.name not in data)
        if missing:
            raise ValueError(f"invalid ResUNetSpec: missing field(s) {missing}")
        return cls(**data)

    def summary(self) -> str:
        """One line for progress output and plot hovers."""
        attention = "" if self.skip_attention == "none" else f" {self.skip_attention}-skips"
        dilation = "" if self.bridge_dilation == 1 else f" dil{self.bridge_dilation}"
        return (f"depth {self.depth} enc {'-'.join(map(str, self.encoder_widths))}"
                f" x{self.blocks_per_stage}{dilation}{attention}")
