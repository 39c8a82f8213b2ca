"""Named, fixed specs that serve as baselines: ``list_presets()``, ``get_preset(name)``.

``in_channels`` is the input the published cost figures assume. The figures quoted for
ResUNet (8.22 M params, 45.2 GMAC) and U-Net (31.0 M, 48.2 GMAC) at 256 px are for a 3-channel
(RGB) input: with one gray channel the same networks have 8,218,305 / 31,036,481 params and
45.14 / 48.09 GMAC (only the first 3x3 conv and the first 1x1 shortcut see the input channels).
"""
from __future__ import annotations

from dataclasses import dataclass

from .resunet import ResUNetSpec


@dataclass(frozen=True)
class Preset:
    name: str
    space: str
    spec: ResUNetSpec
    description: str
    in_channels: int = 1


_PRESETS = {p.name: p for p in (
    Preset(
        name="resunet-standard",
        space="resunet",
        spec=ResUNetSpec(encoder_widths=(64, 128, 256, 512), decoder_widths=(64, 128, 256),
                         block="preact", downsample="strided", upsample="bilinear",
                         skip_fusion="concat"),
        description="Deep Residual U-Net (Zhang, Liu & Wang 2018): pre-activation residual units "
                    "with 1x1 projection shortcuts, widths 64-128-256 and a 512 bridge, stride-2 "
                    "downsampling, bilinear up-sampling + concat, 1x1 head; RGB input as in the paper",
        in_channels=3,
    ),
    Preset(
        name="unet-64",
        space="resunet",
        spec=ResUNetSpec(encoder_widths=(64, 128, 256, 512, 1024), decoder_widths=(64, 128, 256, 512),
                         block="plain", skip_fusion="concat"),
        description="U-Net (Ronneberger, Fischer & Brox 2015) with BN and padded convs: double 3x3 "
                    "conv stages 64..1024, max-pool, 2x2 up-conv halving the width, concat skips; "
                    "3 input channels, the setting of the usual 31.0 M / 48.2 GMAC figures",
        in_channels=3,
    ),
    Preset(
        name="unet-16",
        space="resunet",
        spec=ResUNetSpec(encoder_widths=(16, 32, 64, 128, 256), decoder_widths=(16, 32, 64, 128),
                         block="plain", skip_fusion="concat"),
        description="U-Net at a quarter of the width (16..256): the small plain baseline",
    ),
    Preset(
        name="mobile-resunet",
        space="resunet",
        spec=ResUNetSpec(encoder_widths=(16, 24, 32, 64, 96), decoder_widths=(16, 24, 32, 64),
                         blocks_per_stage=2, block="inverted", expansion=6, downsample="strided",
                         upsample="bilinear_conv"),
        description="ResUNet from MobileNetV2 inverted residuals (Sandler et al. 2018): expansion 6, "
                    "depthwise 3x3 with stride-2 downsampling, bilinear + 1x1 up-sampling, add skips",
    ),
)}


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}") from None
