"""Building blocks of the ResUNet family: residual units, attention, up-sampling, ASPP.

Every block is generic over 2D/3D through ``Layers`` (dims, norm, activation); widths, strides and
dilations are passed in explicitly, so a block is fully described by the spec that built it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import ops


@dataclass(frozen=True)
class Layers:
    """The layer flavour a whole network shares: spatial dims, norm and activation kinds."""

    dims: int = 2
    norm_kind: str = "batch"
    act_kind: str = "relu"

    def conv(self, cin: int, cout: int, kernel: int = 3, **kwargs) -> nn.Module:
        return ops.conv(self.dims, cin, cout, kernel, **kwargs)

    def norm(self, channels: int) -> nn.Module:
        return ops.norm(self.norm_kind, self.dims, channels)

    def act(self) -> nn.Module:
        return ops.activation(self.act_kind)


SHORTCUTS = ("identity", "projection", "none")


def shortcut_kind(block: str, cin: int, cout: int, stride: int, pinned: str | None = None) -> str:
    """The shortcut a block gets: pinned by the spec, else identity when the shape is kept and
    otherwise a 1x1 projection (ResNet option B); inverted residuals then have none, plain never."""
    if pinned is not None:
        kind = pinned
    elif block == "plain":
        kind = "none"
    elif cin == cout and stride == 1:
        kind = "identity"
    else:
        kind = "none" if block == "inverted" else "projection"
    allowed = {"plain": ("none",), "inverted": ("identity", "none")}.get(block, ("identity", "projection"))
    if kind not in allowed:
        raise ValueError(f"a {block} block cannot have a {kind!r} shortcut (allowed: {', '.join(allowed)})")
    if kind == "identity" and (cin != cout or stride != 1):
        raise ValueError(f"an identity shortcut needs the shape kept, got {cin} -> {cout} channels, "
                         f"stride {stride}")
    return kind


def _projection(layers: Layers, cin: int, cout: int, stride: int, kind: str) -> nn.Module:
    """Identity, or 1x1 conv (+ stride) and norm."""
    if kind == "identity":
        return nn.Identity()
    return nn.Sequential(layers.conv(cin, cout, 1, stride=stride), layers.norm(cout))


class _TwoConvBlock(nn.Module):
    """The construction Basic, Plain and PreAct share: conv3x3 (stride, first dilation)-norm-act-
    conv3x3 (second dilation), then norm-act after it (``post``: Basic, Plain) or ``pre`` before
    the first conv (PreAct's norm-act), and the shortcut its kind asks for.

    The attribute names (``pre``, ``conv1``, ``bn1``, ``act1``, ``conv2``, ``bn2``, ``act``,
    ``shortcut``) and the order they are made in are the checkpoints' state_dict keys and the
    seeded initialisation: keep both.
    """

    kind: str
    spatial_convs = 2

    def __init__(self, layers: Layers, cin: int, cout: int, hidden: int, stride: int,
                 dilations: tuple[int, ...], shortcut: str | None, *, pre: nn.Module | None = None,
                 post: bool = True) -> None:
        super().__init__()
        kind = shortcut_kind(self.kind, cin, cout, stride, shortcut)
        if pre is not None:
            self.pre = pre
        self.conv1 = layers.conv(cin, hidden, stride=stride, dilation=dilations[0])
        self.bn1 = layers.norm(hidden)
        self.act1 = layers.act()
        self.conv2 = layers.conv(hidden, cout, dilation=dilations[1])
        if post:
            self.bn2 = layers.norm(cout)
            self.act = layers.act()
        if kind != "none":
            self.shortcut = _projection(layers, cin, cout, stride, kind)

    def convs(self, x: torch.Tensor) -> torch.Tensor:
        """conv1-bn1-act1-conv2: (B, in, *S) -> (B, out, *S)."""
        return self.conv2(self.act1(self.bn1(self.conv1(x))))


class BasicBlock(_TwoConvBlock):
    """conv3x3-norm-act-conv3x3-norm + shortcut, act (He et al. 2016; the original ResUNet unit)."""

    kind = "basic"

    def __init__(self, layers: Layers, cin: int, cout: int, hidden: tuple[int, ...], stride: int = 1,
                 dilations: tuple[int, ...] = (1, 1), first: bool = False, shortcut: str | None = None) -> None:
        (hidden,) = hidden
        super().__init__(layers, cin, cout, hidden, stride, dilations, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)  # (B, out, *S)
        return self.act(self.bn2(self.convs(x)) + residual)


class PlainBlock(_TwoConvBlock):
    """U-Net double conv: conv3x3-norm-act twice, no shortcut (Ronneberger et al. 2015)."""

    kind = "plain"

    def __init__(self, layers: Layers, cin: int, cout: int, hidden: tuple[int, ...], stride: int = 1,
                 dilations: tuple[int, ...] = (1, 1), first: bool = False, shortcut: str | None = None) -> None:
        hidden, _ = hidden  # the second is this block's output, cout (kept for the spec's shape)
        super().__init__(layers, cin, cout, hidden, stride, dilations, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.convs(x)))  # (B, out, *S)


class PreActBlock(_TwoConvBlock):
    """norm-act-conv3x3-norm-act-conv3x3 + shortcut (He et al. 2016b; Zhang et al. 2018 ResUNet).

    The network's very first block sees the raw image, so it skips the leading norm-act, exactly
    as the ResUNet paper's first unit does.
    """

    kind = "preact"

    def __init__(self, layers: Layers, cin: int, cout: int, hidden: tuple[int, ...], stride: int = 1,
                 dilations: tuple[int, ...] = (1, 1), first: bool = False, shortcut: str | None = None) -> None:
        (hidden,) = hidden
        pre = nn.Identity() if first else nn.Sequential(layers.norm(cin), layers.act())
        super().__init__(layers, cin, cout, hidden, stride, dilations, shortcut, pre=pre, post=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)  # (B, out, *S)
        return self.convs(self.pre(x)) + residual  # (B, out, *S)


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand, each normed, + shortcut, act (He et al. 2016)."""

    kind = "bottleneck"
    spatial_convs = 1

    def __init__(self, layers: Layers, cin: int, cout: int, hidden: tuple[int, ...], stride: int = 1,
                 dilations: tuple[int, ...] = (1,), first: bool = False, shortcut: str | None = None) -> None:
        super().__init__()
        reduced, middle = hidden
        self.conv1 = layers.conv(cin, reduced, 1)
        self.bn1 = layers.norm(reduced)
        self.act1 = layers.act()
        self.conv2 = layers.conv(reduced, middle, stride=stride, dilation=dilations[0])
        self.bn2 = layers.norm(middle)
        self.act2 = layers.act()
        self.conv3 = layers.conv(middle, cout, 1)
        self.bn3 = layers.norm(cout)
        self.act = layers.act()
        self.shortcut = _projection(layers, cin, cout, stride, shortcut_kind(self.kind, cin, cout, stride, shortcut))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)  # (B, out, *S)
        y = self.act1(self.bn1(self.conv1(x)))  # (B, reduced, *S)
        y = self.act2(self.bn2(self.conv2(y)))  # (B, middle, *S)
        return self.act(self.bn3(self.conv3(y)) + residual)  # (B, out, *S)


class InvertedBlock(nn.Module):
    """MobileNetV2 inverted residual (Sandler et al. 2018): 1x1 expand, depthwise 3x3, linear 1x1.

    The shortcut exists only where input and output shapes agree, as in MobileNetV2.
    """

    kind = "inverted"
    spatial_convs = 1

    def __init__(self, layers: Layers, cin: int, cout: int, hidden: tuple[int, ...], stride: int = 1,
                 dilations: tuple[int, ...] = (1,), first: bool = False, shortcut: str | None = None) -> None:
        super().__init__()
        (hidden,) = hidden
        self.expand = nn.Sequential(layers.conv(cin, hidden, 1), layers.norm(hidden), layers.act())
        self.depthwise = nn.Sequential(
            layers.conv(hidden, hidden, stride=stride, dilation=dilations[0], groups=hidden),
            layers.norm(hidden), layers.act())
        self.project = nn.Sequential(layers.conv(hidden, cout, 1), layers.norm(cout))
        self.residual = shortcut_kind("inverted", cin, cout, stride, shortcut) == "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))  # (B, out, *S)
        return y + x if self.residual else y


BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "basic": BasicBlock, "bottleneck": BottleneckBlock, "preact": PreActBlock,
    "inverted": InvertedBlock, "plain": PlainBlock,
}


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al. 2018): global pool, bottleneck 1x1 convs, sigmoid gate."""

    def __init__(self, layers: Layers, channels: int, hidden: int) -> None:
        super().__init__()
        self.pool = ops.global_pool(layers.dims)
        self.fc1 = layers.conv(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = layers.conv(hidden, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))  # (B, C, 1, 1)
        return x * weights  # (B, C, *S)


class SpatialChannelSE(nn.Module):
    """scSE (Roy et al. 2018): channel SE plus a 1x1-conv spatial gate, the two recalibrations summed."""

    def __init__(self, layers: Layers, channels: int, hidden: int) -> None:
        super().__init__()
        self.channel = SqueezeExcitation(layers, channels, hidden)
        self.spatial = layers.conv(channels, 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x) + x * torch.sigmoid(self.spatial(x))  # (B, C, *S)


class CBAM(nn.Module):
    """CBAM (Woo et al. 2018): channel gate from avg+max pooled MLP, then a 7x7 spatial gate."""

    def __init__(self, layers: Layers, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = layers.conv(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = layers.conv(hidden, channels, 1, bias=True)
        self.spatial = layers.conv(2, 1, 7, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduce = tuple(range(2, x.dim()))
        avg = x.mean(dim=reduce, keepdim=True)  # (B, C, 1, 1)
        peak = x.amax(dim=reduce, keepdim=True)  # (B, C, 1, 1)
        channel = self.fc2(self.relu(self.fc1(avg))) + self.fc2(self.relu(self.fc1(peak)))
        x = x * torch.sigmoid(channel)  # (B, C, *S)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, *S)
        return x * torch.sigmoid(self.spatial(pooled))  # (B, C, *S)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): the up-sampled decoder signal gates the skip."""

    def __init__(self, layers: Layers, skip_channels: int, gate_channels: int, inter: int) -> None:
        super().__init__()
        self.theta = layers.conv(skip_channels, inter, 1)
        self.phi = layers.conv(gate_channels, inter, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.psi = layers.conv(inter, 1, 1, bias=True)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        # skip: (B, Cs, *S), gate: (B, Cg, *S) at the skip's resolution
        alpha = torch.sigmoid(self.psi(self.relu(self.theta(skip) + self.phi(gate))))  # (B, 1, *S)
        return skip * alpha


ATTENTION_TYPES: dict[str, type[nn.Module]] = {
    "se": SqueezeExcitation, "scse": SpatialChannelSE, "cbam": CBAM,
}


class PixelShuffleUp(nn.Module):
    """1x1 conv to ``cout * 2^dims`` channels, then sub-pixel shuffle (Shi et al. 2016) to 2x size.

    Channel ``c`` of the output comes from conv channels ``c * 2^dims .. c * 2^dims + 2^dims - 1``;
    ``search_spaces.resunet.pruning`` uses this to prune it as ``cout`` channel groups.
    """

    def __init__(self, layers: Layers, cin: int, cout: int) -> None:
        super().__init__()
        self.dims = layers.dims
        self.conv = layers.conv(cin, cout * 2**layers.dims, 1, bias=True)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels // 2**self.dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (B, C*2^dims, *S)
        if self.dims == 2:
            return F.pixel_shuffle(y, 2)  # (B, C, 2H, 2W)
        b, c, d, h, w = y.shape
        y = y.reshape(b, c // 8, 2, 2, 2, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C, D, 2, H, 2, W, 2)
        return y.reshape(b, c // 8, d * 2, h * 2, w * 2)


class Upsample(nn.Module):
    """2x up-sampling to ``cout`` channels.

    ``transposed``: 2x2 stride-2 transposed conv. ``bilinear_conv``: (bi/tri)linear resize, then a
    1x1 conv. ``pixel_shuffle``: 1x1 conv to ``cout * 2^dims``, then sub-pixel shuffle (Shi et al.
    2016). All three cost the same MACs. ``bilinear``: parameter-free resize (``cout == cin``).
    """

    def __init__(self, layers: Layers, kind: str, cin: int, cout: int) -> None:
        super().__init__()
        self.kind = kind
        dims = layers.dims
        if kind == "transposed":
            self.conv = ops.conv_transpose(dims, cin, cout)
        elif kind == "bilinear_conv":
            self.conv = layers.conv(cin, cout, 1, bias=True)
        elif kind == "pixel_shuffle":
            self.shuffle = PixelShuffleUp(layers, cin, cout)
        elif kind == "bilinear":
            if cin != cout:
                raise ValueError(f"parameter-free up-sampling keeps the width ({cin} != {cout})")
        else:
            raise ValueError(f"unknown upsample {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "transposed":
            return self.conv(x)  # (B, out, 2*S)
        if self.kind == "pixel_shuffle":
            return self.shuffle(x)  # (B, out, 2*S)
        x = ops.upsample2x(x)  # (B, in, 2*S)
        return self.conv(x) if self.kind == "bilinear_conv" else x


ASPP_RATES = (2, 4, 6)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017, DeepLabv3) as the bridge's last layer.

    Branches: 1x1, three 3x3 at ``ASPP_RATES`` (scaled down from DeepLab's 6/12/18 because a
    U-Net bridge is 8-32 px, not 33-65), and global pooling; concatenated, projected by a 1x1 conv.
    The pooling branch has no norm (a 1x1 map cannot be batch-normalised at batch 1). The result
    is added to the bridge features (a residual ASPP, as the bridge of ResUNet++, Jha et al. 2019,
    keeps them): the output width is tied to the bridge's, so pruning keeps one bridge width.
    """

    def __init__(self, layers: Layers, channels: int, width: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(layers.conv(channels, width, 1), layers.norm(width), layers.act())]
            + [nn.Sequential(layers.conv(channels, width, 3, dilation=r), layers.norm(width), layers.act())
               for r in ASPP_RATES])
        self.pool = nn.Sequential(ops.global_pool(layers.dims), layers.conv(channels, width, 1, bias=True),
                                  layers.act())
        self.project = nn.Sequential(layers.conv(width * (len(ASPP_RATES) + 2), channels, 1),
                                     layers.norm(channels), layers.act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = ops.interpolate(self.pool(x), x.shape[2:])  # (B, width, *S), constant
        features = [branch(x) for branch in self.branches] + [pooled]  # each (B, width, *S)
        return x + self.project(torch.cat(features, dim=1))  # (B, C, *S)
