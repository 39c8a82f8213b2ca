"""Small layer factories keyed by short strings, so every block is generic over 2D and 3D."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "group", "instance")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu")
GROUPS = 8  # group norm: gcd(channels, 8) groups, so any (pruned) width works


def conv(dims: int, cin: int, cout: int, kernel: int = 3, *, stride: int = 1, dilation: int = 1,
         groups: int = 1, bias: bool = False) -> nn.Module:
    """Size-keeping conv (padding = dilation * (kernel // 2)); no bias by default, a norm follows."""
    cls = nn.Conv2d if dims == 2 else nn.Conv3d
    return cls(cin, cout, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation,
               groups=groups, bias=bias)


def conv_transpose(dims: int, cin: int, cout: int) -> nn.Module:
    """2x up-sampling transposed conv (kernel 2, stride 2)."""
    cls = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
    return cls(cin, cout, kernel_size=2, stride=2)


class GroupNorm(nn.GroupNorm):
    """Group norm with gcd(channels, 8) groups, recomputed from the weight at run time.

    A channel pruner changes the width but not ``num_groups``; deriving the groups from the live
    width keeps a pruned model valid and identical to one rebuilt from its pruned spec.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = math.gcd(self.weight.shape[0], GROUPS)
        return F.group_norm(x, groups, self.weight, self.bias, self.eps)  # (B, C, *S)


class _GroupPerChannel:
    """Affine instance norm computed as group norm with one group per channel (the same function).

    Unlike ``nn.InstanceNorm*`` it reads its width from the weight, so a channel pruner's result
    stays valid. Like any instance norm it needs maps of 2+ pixels: input sides >= 2^depth.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.weight.shape[0], self.weight, self.bias, self.eps)  # (B, C, *S)


class InstanceNorm2d(_GroupPerChannel, nn.InstanceNorm2d):
    pass


class InstanceNorm3d(_GroupPerChannel, nn.InstanceNorm3d):
    pass


def norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        return GroupNorm(math.gcd(channels, GROUPS), channels)
    if kind == "instance":  # affine so the norm has weights to prune and learn, like the others
        return (InstanceNorm2d if dims == 2 else InstanceNorm3d)(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}; known: {', '.join(NORMS)}")


def activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    if kind == "gelu":
        return nn.GELU()
    if kind == "silu":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATIONS)}")


def max_pool(dims: int) -> nn.Module:
    return nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)


def avg_pool(dims: int, factor: int) -> nn.Module:
    return nn.AvgPool2d(factor) if dims == 2 else nn.AvgPool3d(factor)


def global_pool(dims: int) -> nn.Module:
    return nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)


def dropout(dims: int, p: float) -> nn.Module:
    """Channel (spatial) dropout, the usual choice in conv nets; identity at p == 0."""
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if dims == 2 else nn.Dropout3d(p)


def interpolate(x: torch.Tensor, size) -> torch.Tensor:
    """(bi/tri)linear resize to ``size`` (the spatial dims), align_corners=False."""
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False)
