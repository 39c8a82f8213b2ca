"""Building blocks of the ResUNet design: residual block, squeeze-and-excitation, up-sampling."""
from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv2d:
    """3x3 conv that keeps the spatial size (padding = dilation); no bias, a BN follows."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN with ReLU between, identity or 1x1-projection shortcut, add, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, dilation)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, dilation)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)  # (B, out, H, W)
        y = self.relu(self.bn1(self.conv1(x)))  # (B, out, H, W)
        y = self.bn2(self.conv2(y))  # (B, out, H, W)
        return self.relu(y + residual)


class Stage(nn.Sequential):
    """``blocks`` residual blocks; the first one changes the width."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, dilation: int = 1) -> None:
        super().__init__(*[
            ResidualBlock(in_channels if i == 0 else out_channels, out_channels, dilation)
            for i in range(blocks)
        ])


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al. 2018): global pool, bottleneck 1x1 convs, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))  # (B, C, 1, 1)
        return x * weights  # (B, C, H, W)


def make_upsample(in_channels: int, out_channels: int) -> nn.Module:
    """Transposed 2x2 conv, stride 2: doubles H and W and maps to the skip's width."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
