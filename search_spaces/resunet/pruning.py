"""Channel pruning support: what torch-pruning must know about a ResUNet, and the spec it leaves.

``pruning_setup(model)`` gives the keyword arguments a torch-pruning pruner needs (heads kept,
pixel-shuffle convs pruned in whole sub-pixel groups, ASPP branch widths kept, the auxiliary heads
traced, the one-channel gate convs of scSE / CBAM / attention gates handled so the widths they
gate are pruned). ``spec_from_model(model)`` reads the widths a (pruned) model really has back into a
``ResUNetSpec``, so ``build_model(spec_from_model(m))`` loads ``m.state_dict()`` strictly.
torch-pruning is imported lazily: the builder itself never needs it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import nn

from .blocks import (CBAM, AttentionGate, BasicBlock, BottleneckBlock, InvertedBlock, PixelShuffleUp,
                     PlainBlock, PreActBlock, SpatialChannelSE, SqueezeExcitation)
from .model import ResUNet
from .spec import ResUNetSpec


def _pixel_shuffle_pruner():
    import torch_pruning as tp

    class PixelShuffleUpPruner(tp.pruner.function.BasePruningFunc):
        """Output channel c of a PixelShuffleUp is conv channels c*r..c*r+r-1 (r = 2^dims)."""

        TARGET_MODULES = PixelShuffleUp

        def prune_out_channels(self, layer: PixelShuffleUp, idxs: Sequence[int]) -> nn.Module:
            r = 2**layer.dims
            drop = {c * r + k for c in idxs for k in range(r)}
            keep = [i for i in range(layer.conv.out_channels) if i not in drop]
            conv = layer.conv
            conv.weight = nn.Parameter(conv.weight.data[keep].clone())
            conv.bias = nn.Parameter(conv.bias.data[keep].clone())
            conv.out_channels = len(keep)
            return layer

        def prune_in_channels(self, layer: PixelShuffleUp, idxs: Sequence[int]) -> nn.Module:
            conv, drop = layer.conv, set(idxs)
            keep = [i for i in range(conv.in_channels) if i not in drop]
            conv.weight = nn.Parameter(conv.weight.data[:, keep].clone())
            conv.in_channels = len(keep)
            return layer

        def get_out_channels(self, layer: PixelShuffleUp) -> int:
            return layer.out_channels

        def get_in_channels(self, layer: PixelShuffleUp) -> int:
            return layer.conv.in_channels

    return PixelShuffleUpPruner()


def _gate_conv_pruner():
    import torch_pruning as tp

    class GateConvPruner(tp.pruner.function.BasePruningFunc):
        """A conv that makes the one-channel spatial gate of scSE, CBAM or an attention gate.

        Its map multiplies every channel of the features it gates (a broadcast), which the
        dependency graph reads as an element-wise op over those channels: the group of the stage
        width then holds a one-channel layer, and torch-pruning never prunes such a group (and
        infers a concat's input widths wrongly from it). Here the conv reports the width it gates
        (``gated_channels``) as its output width and pruning those channels only counts them down:
        the single gate map itself is never cut. Its inputs follow the graph, except CBAM's (the
        channel mean and max: always two).
        """

        TARGET_MODULES = tuple(_GATE_CONVS.values())

        def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            layer.gated_channels -= len(set(idxs))  # one gate map, broadcast over fewer channels
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            if getattr(layer, "fixed_inputs", False):
                return layer
            drop = set(idxs)
            keep = [i for i in range(layer.in_channels) if i not in drop]
            layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
            layer.in_channels = len(keep)
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.gated_channels

        def get_in_channels(self, layer: nn.Module) -> int | None:
            return None if getattr(layer, "fixed_inputs", False) else layer.in_channels

    return GateConvPruner()


# Behaviour-identical subclasses that tell torch-pruning which convs make a broadcast gate map.
_GATE_CONVS = {cls: type(f"Gate{cls.__name__}", (cls,), {"__module__": __name__}) for cls in (nn.Conv2d, nn.Conv3d)}


def _mark_gate_convs(model: ResUNet) -> None:
    """Re-class the one-channel gate convs in place (same weights, same forward) and note what they gate."""
    for module in model.modules():
        if isinstance(module, SpatialChannelSE):
            conv, gated, fixed = module.spatial, module.spatial.in_channels, False
        elif isinstance(module, CBAM):
            conv, gated, fixed = module.spatial, module.fc1.in_channels, True
        elif isinstance(module, AttentionGate):
            conv, gated, fixed = module.psi, module.theta.in_channels, False
        else:
            continue
        if type(conv) in _GATE_CONVS:
            conv.__class__ = _GATE_CONVS[type(conv)]
        conv.gated_channels, conv.fixed_inputs = gated, fixed


def _traced_forward(model: ResUNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The forward torch-pruning traces: with the auxiliary heads, and CBAM's spatial gate reading a
    detached input. Its input is the channel mean and max (always two channels); traced, the
    reductions would look element-wise and map the stage channels onto those two."""
    def detach(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(t.detach() for t in inputs)

    hooks = [m.register_forward_pre_hook(detach) for m in model.modules() if getattr(m, "fixed_inputs", False)]
    try:
        return model.forward_with_aux(x)
    finally:
        for hook in hooks:
            hook.remove()


def pruning_setup(model: ResUNet) -> dict[str, Any]:
    """Keyword arguments for any torch-pruning pruner over ``model`` (add importance, ratio...).

    Kept: the output heads (their width is the class count) and the ASPP branches (one
    ``aspp_width`` for all five). The auxiliary heads are traced through ``forward_with_aux`` so
    their inputs are pruned along with the decoder stages they read. The one-channel gate convs of
    scSE, CBAM and attention gates are marked in place (see ``GateConvPruner``) so the widths of
    the stages they gate are pruned too.
    """
    ignored: list[nn.Module] = [model.head, *model.aux_heads]
    if not isinstance(model.aspp, nn.Identity):
        ignored += [branch[0] for branch in model.aspp.branches] + [model.aspp.pool[1]]
    _mark_gate_convs(model)
    gate = _gate_conv_pruner()
    return {
        "ignored_layers": ignored,
        "customized_pruners": {PixelShuffleUp: _pixel_shuffle_pruner(), **dict.fromkeys(_GATE_CONVS.values(), gate)},
        "forward_fn": _traced_forward,
        "output_transform": lambda out: out[0].sum() + sum(a.sum() for a in out[1]),
    }


def _block_widths(block: nn.Module) -> tuple[int, tuple[int, ...]]:
    """(output width, inner widths) of one block."""
    if isinstance(block, PlainBlock):
        return block.conv2.out_channels, (block.conv1.out_channels, block.conv2.out_channels)
    if isinstance(block, (BasicBlock, PreActBlock)):
        return block.conv2.out_channels, (block.conv1.out_channels,)
    if isinstance(block, BottleneckBlock):
        return block.conv3.out_channels, (block.conv1.out_channels, block.conv2.out_channels)
    if isinstance(block, InvertedBlock):
        return block.project[0].out_channels, (block.expand[0].out_channels,)
    raise TypeError(f"unknown block {type(block).__name__}")


def _shortcut(block: nn.Module) -> str:
    if isinstance(block, PlainBlock):
        return "none"
    if isinstance(block, InvertedBlock):
        return "identity" if block.residual else "none"
    return "identity" if isinstance(block.shortcut, nn.Identity) else "projection"


def _attention_width(module: nn.Module) -> int | None:
    if isinstance(module, SqueezeExcitation | CBAM):
        return module.fc1.out_channels
    if isinstance(module, SpatialChannelSE):
        return module.channel.fc1.out_channels
    if isinstance(module, AttentionGate):
        return module.theta.out_channels
    return None


def _upsample_width(up: nn.Module) -> int:
    if up.kind == "pixel_shuffle":
        return up.shuffle.out_channels
    return up.conv.out_channels


def spec_from_model(model: ResUNet) -> ResUNetSpec:
    """The spec of the widths ``model`` has now; explicit width fields only where they differ."""
    spec = model.spec
    encoder = [[_block_widths(b) for b in stage] for stage in model.encoder]
    decoder = [[_block_widths(b) for b in stage] for stage in model.decoder][::-1]  # level order
    attention = [w for m in (*model.skip_gates, *model.decoder_attention)
                 if (w := _attention_width(m)) is not None]
    upsample = [] if spec.upsample == "bilinear" else [_upsample_width(u) for u in model.upsamples][::-1]
    fields: dict[str, Any] = dict(
        encoder_widths=tuple(stage[-1][0] for stage in encoder),
        decoder_widths=tuple(stage[-1][0] for stage in decoder),
        encoder_hidden_widths=tuple(tuple(inner for _, inner in stage) for stage in encoder),
        decoder_hidden_widths=tuple(tuple(inner for _, inner in stage) for stage in decoder),
        upsample_widths=tuple(upsample),
        attention_widths=tuple(attention),
        aspp_width=model.aspp.branches[0][0].out_channels if spec.aspp else None,
        shortcuts=tuple(_shortcut(stage[0]) for stage in (*model.encoder, *reversed(model.decoder))),
    )
    explicit = dataclasses.replace(spec, **fields)
    # Drop each explicit field whose derived value builds the same model (keeps specs readable).
    for name, empty in (("encoder_hidden_widths", ()), ("decoder_hidden_widths", ()),
                        ("upsample_widths", ()), ("attention_widths", ()), ("aspp_width", None),
                        ("shortcuts", ())):
        try:
            simpler = dataclasses.replace(explicit, **{name: empty})
        except ValueError:
            continue
        if _structure(simpler, model) == _structure(explicit, model):
            explicit = simpler
    return explicit


def _structure(spec: ResUNetSpec, model: ResUNet) -> tuple:
    """Parameter shapes plus the residual flags (an identity shortcut has no parameters)."""
    try:
        with torch.device("meta"):
            built = ResUNet(spec, model.in_channels, model.out_channels)
    except ValueError:
        return ()
    flags = [m.residual for m in built.modules() if isinstance(m, InvertedBlock)]
    return {k: v.shape for k, v in built.state_dict().items()}, flags
