"""``build_model(spec, in_channels, out_channels) -> ResUNet``: the network a spec describes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SqueezeExcitation, Stage, make_upsample
from .spec import ResUNetSpec


class ResUNet(nn.Module):
    """Encoder of residual stages, decoder that adds skips back, 1x1 head producing logits.

    Any input size works: the input is padded to a multiple of ``spec.downsampling_factor`` and
    the logits are cropped back, so the output always has the input's H and W.
    """

    def __init__(self, spec: ResUNetSpec, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.spec = spec
        self.in_channels = in_channels
        self.out_channels = out_channels
        enc = spec.encoder_widths
        last = spec.depth - 1

        self.encoder = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(enc):
            dilation = spec.bridge_dilation if level == last else 1
            self.encoder.append(Stage(previous, width, spec.blocks_per_stage, dilation))
            previous = width
        self.pool = nn.MaxPool2d(2)

        # Decoder, built deepest level first (the order it runs in); level i gets skip i.
        self.upsamples = nn.ModuleList()
        self.skip_gates = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(last)):
            self.upsamples.append(make_upsample(previous, enc[level]))
            self.skip_gates.append(
                SqueezeExcitation(enc[level], spec.se_reduction)
                if spec.skip_attention == "se" else nn.Identity()
            )
            self.decoder.append(Stage(enc[level], spec.decoder_widths[level], spec.blocks_per_stage))
            previous = spec.decoder_widths[level]
        self.head = nn.Conv2d(previous, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        factor = self.spec.downsampling_factor
        pad_h, pad_w = (-height) % factor, (-width) % factor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # (B, C, H', W'), multiples of factor

        skips = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                x = self.pool(x)  # (B, C, H/2^level, W/2^level)
            x = stage(x)  # (B, enc[level], H/2^level, W/2^level)
            skips.append(x)
        skips.pop()  # the bridge output is x itself, not a skip

        for upsample, gate, stage in zip(self.upsamples, self.skip_gates, self.decoder):
            skip = skips.pop()  # (B, enc[level], h, w)
            x = upsample(x) + gate(skip)  # (B, enc[level], h, w): fusion by addition
            x = stage(x)  # (B, dec[level], h, w)
        logits = self.head(x)  # (B, out_channels, H', W')
        return logits[..., :height, :width]


def build_model(spec: ResUNetSpec, in_channels: int = 1, out_channels: int = 1) -> ResUNet:
    """The noun-in, noun-out builder every stage uses."""
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    return ResUNet(spec, in_channels, out_channels)
