"""``ResUNetSpec``: the frozen, JSON-round-trippable architecture that every stage passes along.

Only plain values (ints, floats, bools, strings, tuples). Every width a channel pruner can change
is spelled out (stage widths, per-block hidden widths, up-sampling widths, the ASPP width), so a
pruned model gets a new spec with the widths it really has and every checkpoint rebuilds from JSON.
Schema 1 specs (the basic design) load unchanged: every field added in schema 2 defaults to it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .ops import ACTIVATIONS, NORMS

SCHEMA_VERSION = 2

BLOCKS = ("basic", "bottleneck", "preact", "inverted", "plain")
DOWNSAMPLES = ("maxpool", "strided")
UPSAMPLES = ("transposed", "bilinear_conv", "pixel_shuffle", "bilinear")
SKIP_FUSIONS = ("add", "concat")
SKIP_ATTENTIONS = ("none", "se", "scse", "cbam", "gate")
ATTENTION_PLACES = ("skip", "decoder")
DILATIONS = (1, 2, 4)
INNER_WIDTHS = {"basic": 1, "preact": 1, "plain": 2, "inverted": 1, "bottleneck": 2}
SHORTCUTS = ("identity", "projection", "none")
SPATIAL_DIMS = (2, 3)
MAX_DEPTH = 8
MAX_BLOCKS = 4
MAX_CLASSES = 256  # label maps are 8-bit PNGs at most
BINARY = 2  # background + one foreground class: one sigmoid output (the original design)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nested_tuple(value: Any) -> Any:
    return tuple(_nested_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _nested_list(value: Any) -> Any:
    return [_nested_list(v) for v in value] if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class ResUNetSpec:
    """A ResUNet architecture.

    ``encoder_widths[i]`` is the width of encoder stage ``i`` (stage 0 at full resolution, the last
    stage is the bridge). ``decoder_widths[i]`` is the width of the decoder stage that comes back to
    level ``i``; there is one per skip, so ``len(decoder_widths) == depth - 1``.

    Optional explicit widths (empty / ``None`` = derived), so pruned models rebuild exactly:
    ``encoder_hidden_widths[i][b]`` / ``decoder_hidden_widths[i][b]`` are the inner widths of block
    ``b`` of that stage: one for basic/preact (conv1's output, default the stage width) and
    inverted (the expanded width, default block input x ``expansion``), two for bottleneck (after
    the 1x1 reduce and after the 3x3, default width // 4 both) and plain (conv1's and the block's
    output: without a shortcut nothing ties a block's output to the stage width; the last block's
    must equal it). ``shortcuts`` pins the shortcut of every stage's first block, encoder stages
    then decoder levels 0..depth-2 (default: identity when the shape is kept, else projection for
    residual blocks, none for inverted and plain); a pruned model whose widths happen to match
    where the original's did not keeps its projection this way. ``upsample_widths[i]`` is the output
    width of the up-sampling into level ``i`` (default the skip's width; must equal it for
    ``skip_fusion="add"``). ``attention_widths[k]`` is the inner width of the k-th attention module
    in decoder order, deepest first (default channels // ``se_reduction``, gate: skip width // 2).
    ``aspp_width`` is the width of each ASPP branch (default the bridge width).

    ``num_classes`` counts the classes *including* background (label 0); it is fixed by the data,
    not sampled. 2 is the binary case (one sigmoid output, thresholded); K >= 3 gives K softmax
    outputs (argmax). ``to_dict`` leaves it out when it is 2, so binary specs keep their JSON.

    ``skip_attention`` names the attention kind (the field name is kept from schema 1);
    ``attention_place`` says whether it acts on the skips or on each decoder stage's output
    (``gate`` needs the decoder signal, so it is skip-only).
    """

    encoder_widths: tuple[int, ...]
    decoder_widths: tuple[int, ...]
    blocks_per_stage: int = 1
    block: str = "basic"
    expansion: int = 4
    encoder_hidden_widths: tuple[tuple[tuple[int, ...], ...], ...] = ()
    decoder_hidden_widths: tuple[tuple[tuple[int, ...], ...], ...] = ()
    downsample: str = "maxpool"
    bridge_dilation: int = 1
    hybrid_dilation: bool = False
    aspp: bool = False
    aspp_width: int | None = None
    skip_attention: str = "none"
    attention_place: str = "skip"
    se_reduction: int = 4
    attention_widths: tuple[int, ...] = ()
    shortcuts: tuple[str, ...] = ()
    skip_fusion: str = "add"
    skip_gain: bool = False
    upsample: str = "transposed"
    upsample_widths: tuple[int, ...] = ()
    multiscale_input: bool = False
    deep_supervision: bool = False
    norm: str = "batch"
    activation: str = "relu"
    dropout: float = 0.0
    spatial_dims: int = 2
    num_classes: int = BINARY
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Accept lists (JSON) but store tuples, so the spec stays hashable and frozen.
        for name in ("encoder_widths", "decoder_widths", "encoder_hidden_widths",
                     "decoder_hidden_widths", "upsample_widths", "attention_widths", "shortcuts"):
            object.__setattr__(self, name, _nested_tuple(getattr(self, name)))
        if _is_int(self.dropout):
            object.__setattr__(self, "dropout", float(self.dropout))
        self._validate()

    @property
    def out_channels(self) -> int:
        """Logit channels of the head: 1 for the binary case (sigmoid), else ``num_classes`` (softmax)."""
        return 1 if self.num_classes == BINARY else self.num_classes

    @property
    def depth(self) -> int:
        """Number of encoder stages, bridge included."""
        return len(self.encoder_widths)

    @property
    def downsampling_factor(self) -> int:
        """Input sides must be a multiple of this (the model pads to it)."""
        return 2 ** (self.depth - 1)

    def bridge_dilations(self, convs: int) -> tuple[int, ...]:
        """Dilation of each of the bridge stage's ``convs`` 3x3 convs, in order.

        Constant ``bridge_dilation``, or with ``hybrid_dilation`` the sawtooth 1, 2, .., rate,
        1, 2, .. of hybrid dilated convolution (Wang et al. 2018), which avoids gridding.
        """
        if not self.hybrid_dilation:
            return (self.bridge_dilation,) * convs
        cycle = tuple(2**k for k in range(self.bridge_dilation.bit_length()))  # 1, 2[, 4]
        return tuple(cycle[i % len(cycle)] for i in range(convs))

    def hidden_widths(self, decoder: bool, level: int, block: int, cin: int, cout: int) -> tuple[int, ...]:
        """Inner widths of one block: the explicit values if the spec has them, else derived."""
        explicit = self.decoder_hidden_widths if decoder else self.encoder_hidden_widths
        if explicit:
            return explicit[level][block]
        if self.block == "bottleneck":
            return (max(1, cout // 4),) * 2
        if self.block == "inverted":
            return (cin * self.expansion,)
        if self.block == "plain":
            return (cout, cout)
        return (cout,)

    def shortcut(self, decoder: bool, level: int) -> str | None:
        """The pinned shortcut of a stage's first block, or None (derived from its shape)."""
        if not self.shortcuts:
            return None
        return self.shortcuts[self.depth + level if decoder else level]

    def attention_width(self, index: int, channels: int) -> int:
        """Inner width of the ``index``-th attention module (decoder order) over ``channels``."""
        if self.attention_widths:
            return self.attention_widths[index]
        return max(1, channels // (2 if self.skip_attention == "gate" else self.se_reduction))

    def upsample_width(self, level: int) -> int:
        """Output width of the up-sampling into ``level``."""
        if self.upsample == "bilinear":
            return self.encoder_widths[-1] if level == self.depth - 2 else self.decoder_widths[level + 1]
        return self.upsample_widths[level] if self.upsample_widths else self.encoder_widths[level]

    def _validate(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"invalid ResUNetSpec: {message}")

        if not _is_int(self.schema_version) or self.schema_version < 1:
            fail(f"schema_version must be a positive int, got {self.schema_version!r}")
        if self.schema_version > SCHEMA_VERSION:
            fail(f"schema_version {self.schema_version} is newer than this tool understands "
                 f"({SCHEMA_VERSION}); upgrade the tool to read it")
        if not 2 <= self.depth <= MAX_DEPTH:
            fail(f"depth (len(encoder_widths)) must be 2..{MAX_DEPTH}, got {self.depth}")
        for name in ("encoder_widths", "decoder_widths", "upsample_widths", "attention_widths"):
            widths = getattr(self, name)
            if not all(_is_int(w) and w >= 1 for w in widths):
                fail(f"{name} must be positive ints, got {list(widths)}")
        if len(self.decoder_widths) != self.depth - 1:
            fail(f"decoder_widths needs one width per skip ({self.depth - 1}), "
                 f"got {len(self.decoder_widths)}")
        if not _is_int(self.blocks_per_stage) or not 1 <= self.blocks_per_stage <= MAX_BLOCKS:
            fail(f"blocks_per_stage must be 1..{MAX_BLOCKS}, got {self.blocks_per_stage!r}")
        for name, stages in (("encoder_hidden_widths", self.depth),
                             ("decoder_hidden_widths", self.depth - 1)):
            hidden = getattr(self, name)
            inner = INNER_WIDTHS.get(self.block, 1)
            shape_ok = not hidden or (len(hidden) == stages and all(
                isinstance(s, tuple) and len(s) == self.blocks_per_stage
                and all(isinstance(b, tuple) and len(b) == inner for b in s) for s in hidden))
            if not shape_ok:
                fail(f"{name} must be empty or {stages} stages x {self.blocks_per_stage} blocks x "
                     f"{inner} inner width(s) for block {self.block!r}, got {_nested_list(hidden)}")
            if not all(_is_int(w) and w >= 1 for stage in hidden for b in stage for w in b):
                fail(f"{name} must be positive ints, got {_nested_list(hidden)}")
            widths = self.encoder_widths if name.startswith("encoder") else self.decoder_widths
            if hidden and self.block == "plain" and any(s[-1][1] != w for s, w in zip(hidden, widths)):
                fail(f"{name}: a plain stage's last block outputs the stage width, got "
                     f"{_nested_list(hidden)} for widths {list(widths)}")
        if self.shortcuts and (len(self.shortcuts) != 2 * self.depth - 1
                               or any(k not in SHORTCUTS for k in self.shortcuts)):
            fail(f"shortcuts must be empty or {2 * self.depth - 1} of {list(SHORTCUTS)}, "
                 f"got {list(self.shortcuts)}")
        for name, low, high in (("expansion", 1, 8), ("se_reduction", 1, 64)):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                fail(f"{name} must be an int in {low}..{high}, got {value!r}")
        for name in ("hybrid_dilation", "aspp", "skip_gain", "multiscale_input", "deep_supervision"):
            if not isinstance(getattr(self, name), bool):
                fail(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, allowed in (
            ("block", BLOCKS), ("downsample", DOWNSAMPLES), ("bridge_dilation", DILATIONS),
            ("skip_attention", SKIP_ATTENTIONS), ("attention_place", ATTENTION_PLACES),
            ("skip_fusion", SKIP_FUSIONS), ("upsample", UPSAMPLES), ("norm", NORMS),
            ("activation", ACTIVATIONS), ("spatial_dims", SPATIAL_DIMS),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or value not in allowed:
                fail(f"{name} must be one of {list(allowed)}, got {value!r}")
        if self.hybrid_dilation and self.bridge_dilation == 1:
            fail("hybrid_dilation needs bridge_dilation 2 or 4 (the top of the 1-2[-4] sawtooth)")
        if self.aspp_width is not None and (not _is_int(self.aspp_width) or self.aspp_width < 1):
            fail(f"aspp_width must be a positive int or null, got {self.aspp_width!r}")
        if self.attention_widths and (self.skip_attention == "none"
                                      or len(self.attention_widths) != self.depth - 1):
            fail(f"attention_widths needs one width per attention module ({self.depth - 1}) "
                 f"and an attention kind, got {list(self.attention_widths)}")
        if self.skip_attention == "gate" and self.attention_place != "skip":
            fail("skip_attention 'gate' is gated by the decoder signal, so attention_place must be 'skip'")
        if not isinstance(self.dropout, float) or not 0.0 <= self.dropout < 1.0:
            fail(f"dropout must be a float in [0, 1), got {self.dropout!r}")
        if not _is_int(self.num_classes) or not BINARY <= self.num_classes <= MAX_CLASSES:
            fail(f"num_classes (background included) must be an int in {BINARY}..{MAX_CLASSES}, "
                 f"got {self.num_classes!r}")
        self._validate_upsampling(fail)

    def _validate_upsampling(self, fail) -> None:
        if self.upsample == "bilinear":
            if self.upsample_widths:
                fail("upsample 'bilinear' has no conv, so upsample_widths must be empty")
        elif self.upsample_widths and len(self.upsample_widths) != self.depth - 1:
            fail(f"upsample_widths needs one width per skip ({self.depth - 1}), "
                 f"got {len(self.upsample_widths)}")
        if self.skip_fusion == "add":
            for level in range(self.depth - 1):
                if self.upsample_width(level) != self.encoder_widths[level]:
                    fail(f"skip_fusion 'add' needs the up-sampled width into level {level} "
                         f"({self.upsample_width(level)}) to equal the skip's "
                         f"({self.encoder_widths[level]}); use concat or an up-sampling conv")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (tuples become lists); ``num_classes`` only when not binary."""
        return {f.name: _nested_list(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name != "num_classes" or self.num_classes != BINARY}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResUNetSpec":
        """Inverse of ``to_dict``; reads schema 1 and 2, refuses unknown keys and newer schemas."""
        if not isinstance(data, dict):
            raise ValueError(f"invalid ResUNetSpec: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        version = data.get("schema_version", SCHEMA_VERSION)
        if _is_int(version) and version > SCHEMA_VERSION:
            raise ValueError(
                f"invalid ResUNetSpec: schema_version {version} is newer than this tool understands "
                f"({SCHEMA_VERSION}); upgrade the tool to read it")
        if unknown:
            raise ValueError(f"invalid ResUNetSpec: unknown field(s) {unknown}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.name not in data)
        if missing:
            raise ValueError(f"invalid ResUNetSpec: missing field(s) {missing}")
        if _is_int(version) and version >= 1:
            # Schema 1 fields kept their meaning; the added ones default to the schema 1 design.
            data = {**data, "schema_version": SCHEMA_VERSION}
        return cls(**data)

    def summary(self) -> str:
        """One line for progress output and plot hovers."""
        parts = [f"depth {self.depth} enc {'-'.join(map(str, self.encoder_widths))}",
                 f"{self.block}x{self.blocks_per_stage}"]
        if self.block == "inverted":
            parts[-1] += f" e{self.expansion}"
        if self.spatial_dims == 3:
            parts.insert(0, "3D")
        if self.num_classes != BINARY:
            parts.append(f"{self.num_classes} classes")
        if self.downsample != "maxpool":
            parts.append(self.downsample)
        if self.bridge_dilation != 1:
            parts.append(f"dil{'1-' if self.hybrid_dilation else ''}{self.bridge_dilation}")
        if self.aspp:
            parts.append("aspp")
        if self.skip_attention != "none":
            parts.append(f"{self.skip_attention}-{self.attention_place}")
        if self.skip_fusion != "add":
            parts.append(self.skip_fusion)
        if self.skip_gain:
            parts.append("gain")
        if self.upsample != "transposed":
            parts.append(self.upsample)
        for flag, word in ((self.multiscale_input, "pyramid"), (self.deep_supervision, "deepsup")):
            if flag:
                parts.append(word)
        if (self.norm, self.activation) != ("batch", "relu"):
            parts.append(f"{self.norm}/{self.activation}")
        if self.dropout:
            parts.append(f"drop{self.dropout:.2f}")
        return " ".join(parts)
