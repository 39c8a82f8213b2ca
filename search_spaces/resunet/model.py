"""``build_model(spec, in_channels, out_channels) -> ResUNet``: the network a spec describes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .blocks import ASPP, ATTENTION_TYPES, BLOCK_TYPES, AttentionGate, Layers, Upsample
from .spec import ResUNetSpec


class Stage(nn.Sequential):
    """``len(hidden)`` blocks of one type; the first changes the width (and strides, if asked).

    A plain block's output width is its second inner width (nothing else ties it to the stage's);
    every other block outputs ``cout``.
    """

    def __init__(self, layers: Layers, block: str, cin: int, cout: int,
                 hidden: tuple[tuple[int, ...], ...], stride: int = 1,
                 dilations: tuple[int, ...] | None = None, first: bool = False,
                 shortcut: str | None = None) -> None:
        cls = BLOCK_TYPES[block]
        per_block = cls.spatial_convs
        dilations = dilations or (1,) * (per_block * len(hidden))
        blocks = []
        for i, inner in enumerate(hidden):
            out = inner[1] if block == "plain" else cout
            blocks.append(cls(layers, cin, out, inner, stride if i == 0 else 1,
                              dilations[i * per_block:(i + 1) * per_block], first=first and i == 0,
                              shortcut=shortcut if i == 0 else None))
            cin = out
        super().__init__(*blocks)


def _stage_hidden(spec: ResUNetSpec, decoder: bool, level: int, cin: int,
                  cout: int) -> tuple[tuple[int, ...], ...]:
    return tuple(spec.hidden_widths(decoder, level, b, cin if b == 0 else cout, cout)
                 for b in range(spec.blocks_per_stage))


class ResUNet(nn.Module):
    """Encoder of residual stages, decoder that fuses the skips back, 1x1 head producing logits.

    Any input size works: the input is padded to a multiple of ``spec.downsampling_factor`` and
    the logits are cropped back, so the output always has the input's spatial size. The padding is
    computed from the traced shape without a Python branch, so an ONNX export keeps dynamic sizes.
    """

    def __init__(self, spec: ResUNetSpec, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.spec = spec
        self.in_channels = in_channels
        self.out_channels = out_channels
        layers = Layers(spec.spatial_dims, spec.norm, spec.activation)
        enc, dec, last = spec.encoder_widths, spec.decoder_widths, spec.depth - 1
        strided = spec.downsample == "strided"

        self.encoder = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(enc):
            cin = previous + (in_channels if spec.multiscale_input and level > 0 else 0)
            hidden = _stage_hidden(spec, False, level, cin, width)
            convs = BLOCK_TYPES[spec.block].spatial_convs * len(hidden)
            self.encoder.append(Stage(
                layers, spec.block, cin, width, hidden, stride=2 if strided and level > 0 else 1,
                dilations=spec.bridge_dilations(convs) if level == last else None, first=level == 0,
                shortcut=spec.shortcut(False, level)))
            previous = width
        self.pool = nn.Identity() if strided else ops.max_pool(spec.spatial_dims)
        self.image_pool = ops.avg_pool(spec.spatial_dims, 2)
        self.aspp = ASPP(layers, enc[-1], spec.aspp_width or enc[-1]) if spec.aspp else nn.Identity()
        self.bridge_dropout = ops.dropout(spec.spatial_dims, spec.dropout)

        # Decoder, built deepest level first (the order it runs in); level i gets skip i.
        self.upsamples = nn.ModuleList()
        self.skip_gates = nn.ModuleList()
        self.skip_gains = nn.ParameterList()
        self.decoder = nn.ModuleList()
        self.decoder_attention = nn.ModuleList()
        self.decoder_dropout = nn.ModuleList()
        self.aux_heads = nn.ModuleList()
        attention = ATTENTION_TYPES.get(spec.skip_attention)
        on_skip = spec.attention_place == "skip"
        for index, level in enumerate(reversed(range(last))):
            up_width = spec.upsample_width(level)
            self.upsamples.append(Upsample(layers, spec.upsample, previous, up_width))
            if spec.skip_attention == "gate":
                self.skip_gates.append(AttentionGate(layers, enc[level], up_width,
                                                     spec.attention_width(index, enc[level])))
            elif attention is not None and on_skip:
                self.skip_gates.append(attention(layers, enc[level], spec.attention_width(index, enc[level])))
            else:
                self.skip_gates.append(nn.Identity())
            if spec.skip_gain:
                self.skip_gains.append(nn.Parameter(torch.ones(1)))
            fused = enc[level] if spec.skip_fusion == "add" else up_width + enc[level]
            hidden = _stage_hidden(spec, True, level, fused, dec[level])
            self.decoder.append(Stage(layers, spec.block, fused, dec[level], hidden,
                                      shortcut=spec.shortcut(True, level)))
            self.decoder_attention.append(
                attention(layers, dec[level], spec.attention_width(index, dec[level]))
                if attention is not None and not on_skip else nn.Identity())
            self.decoder_dropout.append(ops.dropout(spec.spatial_dims, spec.dropout))
            if spec.deep_supervision and level > 0:
                self.aux_heads.append(layers.conv(dec[level], out_channels, 1, bias=True))
            previous = dec[level]
        self.head = layers.conv(previous, out_channels, 1, bias=True)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.spec.downsampling_factor
        pads: list = []
        for size in reversed(x.shape[2:]):
            pads += [0, (factor - size % factor) % factor]
        return F.pad(x, pads)  # (B, C, *S'), every side a multiple of factor

    def _run(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spatial = x.shape[2:]
        crop = (slice(None), slice(None), *[slice(0, s) for s in spatial])
        x = self._pad(x)  # (B, C, *S')
        padded = x.shape[2:]
        image = x  # the image pyramid level at x's current resolution
        strided = isinstance(self.pool, nn.Identity)
        skips = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                x = self.pool(x)  # maxpool: (B, C, S'/2^level); strided: unchanged, the block strides
                if self.spec.multiscale_input:
                    if not strided:
                        image = self.image_pool(image)  # (B, C_in, S'/2^level)
                    x = torch.cat([x, image], dim=1)  # (B, enc[level-1] + C_in, ...)
                    if strided:
                        image = self.image_pool(image)  # the next stage's input scale
            x = stage(x)  # (B, enc[level], S'/2^level)
            skips.append(x)
        skips.pop()  # the bridge output is x itself, not a skip
        x = self.bridge_dropout(self.aspp(x))  # (B, enc[-1], S'/2^(depth-1))

        aux = []
        for index, (upsample, gate, stage) in enumerate(zip(self.upsamples, self.skip_gates, self.decoder)):
            skip = skips.pop()  # (B, enc[level], s)
            up = upsample(x)  # (B, up_width, s)
            skip = gate(skip, up) if self.spec.skip_attention == "gate" else gate(skip)
            if self.spec.skip_gain:
                skip = skip * self.skip_gains[index]
            x = up + skip if self.spec.skip_fusion == "add" else torch.cat([up, skip], dim=1)
            x = stage(x)  # (B, dec[level], s)
            x = self.decoder_dropout[index](self.decoder_attention[index](x))
            if with_aux and index < len(self.aux_heads):
                logits = ops.interpolate(self.aux_heads[index](x), padded)  # (B, out, *S')
                aux.append(logits[crop])
        logits = self.head(x)  # (B, out_channels, *S')
        return logits[crop], aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits, (B, out_channels, *S) for input (B, in_channels, *S)."""
        return self._run(x, with_aux=False)[0]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits and the deep-supervision logits (deepest first), each resized to the input."""
        return self._run(x, with_aux=True)


def build_model(spec: ResUNetSpec, in_channels: int = 1, out_channels: int | None = None) -> ResUNet:
    """The noun-in, noun-out builder every stage uses.

    The head has ``spec.out_channels`` outputs (1 for a binary spec, ``num_classes`` otherwise).
    ``out_channels`` is kept for callers that pass it: ``None`` or 1 (the binary default every
    caller passed before label maps) mean the spec's head; a binary spec honours any value as before.
    """
    if out_channels is None or (spec.num_classes != 2 and out_channels == 1):
        out_channels = spec.out_channels
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    if spec.num_classes != 2 and out_channels != spec.num_classes:
        raise ValueError(f"a {spec.num_classes}-class spec needs {spec.num_classes} output channels, got {out_channels}")
    return ResUNet(spec, in_channels, out_channels)
