"""Channel pruning of a ResUNet with torch-pruning's dependency graph; the result is a new spec.

``prune_channels`` prunes a copy of the model (the caller's model is untouched), rebuilds it from
``spec_from_model`` and loads the pruned weights strictly, so what it returns is an ordinary
``ResUNet`` that ``nas.save_checkpoint`` / ``nas.load_checkpoint`` round-trip. The output heads
(``pruning_setup``) and the input stem (the first conv, which reads the image) are never pruned.

A ``macs`` ratio is reached by bisection over the channel ratio (each attempt prunes a fresh copy),
because MACs fall roughly with the square of the kept channels and rounding makes the curve a
staircase; a ``channels`` ratio is handed to torch-pruning as is.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Callable

import torch
from torch import nn

from nas.costs.measure import count_macs_by_hooks
from search_spaces.resunet import ResUNetSpec, build_model
from search_spaces.resunet.blocks import (BasicBlock, BottleneckBlock, InvertedBlock, PixelShuffleUp, PlainBlock,
                                         PreActBlock)
from search_spaces.resunet.model import ResUNet
from search_spaces.resunet.pruning import pruning_setup, spec_from_model

IMPORTANCES = ("magnitude", "bn-scale", "taylor", "random")
RATIO_OF = ("macs", "channels")
MACS_TOLERANCE = 0.03  # |reached - asked| MACs reduction (absolute fraction) accepted by the bisection
MAX_CHANNEL_RATIO = 0.9  # no group loses more than this share of its channels
_BISECTION_STEPS = 8

LossFn = Callable[[nn.Module], torch.Tensor]  # model -> scalar task loss (for taylor's gradients)


class PruningError(ValueError):
    """Bad pruning arguments, or a model the pruner cannot handle; the message is one line."""


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise PruningError(f"pruning ratio must be in (0, 1), got {ratio:g}")
    return ratio


def stem_conv(model: ResUNet) -> nn.Module:
    """The first conv of the first encoder block: it reads the image, so its width stays."""
    block = model.encoder[0][0]
    if isinstance(block, (PlainBlock, BasicBlock, PreActBlock, BottleneckBlock)):
        return block.conv1
    if isinstance(block, InvertedBlock):
        return block.expand[0]
    raise PruningError(f"unknown first block {type(block).__name__}")


class NormScaleImportance:
    """A channel's norm scale as the next layers read it: mean |gamma_c| x mean ||W_next[:, c]||.

    Network slimming ranks by |gamma| alone, which is meaningful only after training with its L1
    penalty on gamma. Without it every |gamma| stays near 1 and is not rescaling-invariant (a norm
    before a ReLU can trade gamma against the next layer's weights, Ye et al. 2018): its small
    drift follows the sign of the head's weight, so ranking by it removed every channel that
    votes for foreground and the pruned model predicted background only (Dice 0, not recovered by
    fine-tuning). Weighting by the consumers' input weights (the protected head included) keeps
    the channels the output reads. Batch, group and instance norm all count; a group without a
    norm (an attention MLP) gets no score and is left as it is.
    """

    def __call__(self, group) -> torch.Tensor | None:
        norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
        size = len(group[0].idxs)  # one score per channel of the root layer
        scale, scales = torch.zeros(size), 0
        reads, readers = torch.zeros(size), 0
        for i, (dep, idxs) in enumerate(group):
            layer, roots = dep.target.module, group[i].root_idxs
            if None in roots:
                continue
            index = torch.tensor(roots)
            if isinstance(layer, norms) and getattr(layer, "weight", None) is not None:
                scale.scatter_add_(0, index, layer.weight.detach().abs()[idxs].float())
                scales += 1
            elif (norm := _input_weight_norms(layer, dep.handler)) is not None:
                reads.scatter_add_(0, index, (norm / norm.mean().clamp_min(1e-12))[idxs])
                readers += 1
        if scales == 0:
            return None
        score = scale / scales * (reads / readers if readers else 1.0)
        return score / score.mean().clamp_min(1e-12)


def _input_weight_norms(layer: nn.Module, handler) -> torch.Tensor | None:
    """||W[:, c]|| per input channel c of a dense (not grouped) conv / linear that reads the group, else None."""
    if getattr(handler, "__name__", "") != "prune_in_channels":
        return None
    if isinstance(layer, PixelShuffleUp):
        layer = layer.conv
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups == 1:
        weight = layer.weight.detach().float()  # (out, in, *k), transposed: (in, out, *k)
        weight = weight.transpose(0, 1) if not layer.transposed else weight
    elif isinstance(layer, nn.Linear):
        weight = layer.weight.detach().float().t()  # (in, out)
    else:
        return None
    return weight.flatten(1).norm(dim=1)  # (in,)


def make_importance(name: str):
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "bn-scale":
        return NormScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise PruningError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCES)}")


def _too_small(pruner, ratio: float, round_to: int) -> list[nn.Module]:
    """Out-channel layers of groups that ``ratio`` (after rounding) would empty: they are kept whole."""
    keep_at_least = max(1, round_to)
    small = []
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        width = pruner.DG.get_out_channels(group[0].dep.target.module)
        if width is None or math.floor(width * (1 - ratio)) >= keep_at_least:
            continue
        small += [dep.target.module for dep, _ in group if pruner.DG.is_out_channel_pruning_fn(dep.handler)]
    return small


def _degenerate(model: nn.Module) -> bool:
    return any(p.numel() == 0 for p in model.parameters())


def _prune_copy(model: ResUNet, example: torch.Tensor, importance: str, ratio: float, *, global_pruning: bool,
                iterative_steps: int, round_to: int, loss_fn: LossFn | None, seed: int) -> ResUNet | None:
    """Prune a deep copy at channel ratio ``ratio``; None when a layer would lose every channel."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).cpu().float()
    torch.manual_seed(seed)
    setup = pruning_setup(pruned)
    setup["ignored_layers"] = [*setup["ignored_layers"], stem_conv(pruned)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(
            pruned, example, importance=make_importance(importance), pruning_ratio=ratio,
            global_pruning=global_pruning, iterative_steps=iterative_steps,
            round_to=round_to if round_to > 1 else None, max_pruning_ratio=MAX_CHANNEL_RATIO, **setup)
        for step in range(iterative_steps):
            target = pruner.per_step_pruning_ratio[min(step + 1, iterative_steps)]
            for layer in _too_small(pruner, target, round_to):
                pruner.ignored_layers.extend(layer.modules())
            if importance == "taylor":
                pruned.zero_grad(set_to_none=True)
                pruned.train()
                loss_fn(pruned).backward()
            pruner.step()
    pruned.zero_grad(set_to_none=True)
    return None if _degenerate(pruned) else pruned


def prune_channels(model: ResUNet, spec: ResUNetSpec | None = None, *, importance: str = "magnitude",
                   ratio: float, ratio_of: str = "macs", global_pruning: bool = False, iterative_steps: int = 1,
                   round_to: int = 8, example_input: torch.Tensor, loss_fn: LossFn | None = None,
                   seed: int = 0) -> tuple[ResUNet, ResUNetSpec]:
    """``(pruned model, its spec)``; the model is rebuilt from the spec and loads the weights strictly.

    ``ratio``: share of MACs (at ``example_input``'s size) or of channels to remove, in (0, 1).
    ``loss_fn(model) -> loss`` supplies the gradients ``taylor`` needs (called before each step).
    """
    ratio = check_ratio(ratio)
    if importance not in IMPORTANCES:
        raise PruningError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCES)}")
    if ratio_of not in RATIO_OF:
        raise PruningError(f"ratio_of must be one of {', '.join(RATIO_OF)}, got {ratio_of!r}")
    if iterative_steps < 1 or round_to < 1:
        raise PruningError(f"iterative_steps and round_to must be >= 1, got {iterative_steps}, {round_to}")
    if importance == "taylor" and loss_fn is None:
        raise PruningError("taylor importance needs loss_fn (a task loss on a few training batches)")
    if spec is not None and spec != model.spec:
        raise PruningError("spec does not describe model (pass the model's own spec)")
    example = example_input.detach().cpu().float()
    was_training = model.training
    kwargs = dict(global_pruning=global_pruning, iterative_steps=iterative_steps, round_to=round_to,
                  loss_fn=loss_fn, seed=seed)
    try:
        if ratio_of == "channels":
            pruned = _prune_copy(model, example, importance, min(ratio, MAX_CHANNEL_RATIO), **kwargs)
            if pruned is None:
                raise PruningError(f"channel ratio {ratio:g} empties a layer; use a smaller ratio")
        else:
            pruned = _bisect_macs(model, example, importance, ratio, kwargs)
    finally:
        model.train(was_training)
    new_spec = spec_from_model(pruned)
    rebuilt = build_model(new_spec, model.in_channels, model.out_channels)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    return rebuilt.train(was_training), new_spec


def macs_of(model: nn.Module, example: torch.Tensor) -> int:
    return count_macs_by_hooks(model, (1, *example.shape[1:]))


def _bisect_macs(model: ResUNet, example: torch.Tensor, importance: str, ratio: float, kwargs: dict) -> ResUNet:
    """Channel ratio whose MACs reduction is closest to ``ratio`` (bisection; fresh copy per attempt)."""
    base = macs_of(model, example)
    low, high = 0.0, MAX_CHANNEL_RATIO
    guess = 1 - math.sqrt(1 - ratio)  # MACs ~ (kept channels)^2
    best, best_gap = None, math.inf
    for _ in range(_BISECTION_STEPS):
        pruned = _prune_copy(model, example, importance, guess, **kwargs)
        reduction = 1.0 if pruned is None else 1 - macs_of(pruned, example) / base
        gap = abs(reduction - ratio)
        if pruned is not None and gap < best_gap:
            best, best_gap = pruned, gap
        if gap <= MACS_TOLERANCE / 2:
            break
        if reduction > ratio:
            high = guess
        else:
            low = guess
        guess = (low + high) / 2
    if best is None:
        raise PruningError(f"no channel ratio reaches a {ratio:g} MACs reduction without emptying a layer")
    if best_gap > MACS_TOLERANCE:
        warnings.warn(f"MACs reduction {ratio:g} asked, {1 - macs_of(best, example) / base:.3f} reached "
                      f"(channel rounding or protected layers limit the steps)", stacklevel=3)
    return best
