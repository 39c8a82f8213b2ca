"""``nas-profile``: what one architecture costs (params, MACs, FLOPs, latency, inference and training-step memory).

Profiles a named preset or any spec (a bare spec JSON or a checkpoint's ``spec.json``) with the
same counting as the search (``nas.costs.measure.measure_costs``), so its figures compare with a run's.
Memory is counted on the meta device first; the real latency forward is skipped, with one line where
the latency would be, when its counted memory would not fit what the machine has available.
It writes nothing; bad input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from search_spaces import get_space

from nas.cli.common import Parser, add_batch_size, add_device, add_image_size, check_device, check_pixels, number
from nas.run.limits import integers, side_range

PROG = "nas-profile"


def _presets():
    """The presets module, or None while it does not exist."""
    try:
        from search_spaces import presets
    except ImportError:
        return None
    return presets


def _preset_names(presets) -> list[str]:
    return [p if isinstance(p, str) else p.name for p in presets.list_presets()]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Profile one architecture: params, MACs, FLOPs (= 2 x MACs), measured latency and "
                    "the memory of one training step.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", default=None, help="a named preset (--list-presets prints them)")
    source.add_argument("--spec", default=None, metavar="FILE",
                        help="a spec JSON: a bare spec dict, a checkpoint's spec.json, or a checkpoint folder")
    source.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    parser.add_argument("--space", default=None,
                        help="space of a bare --spec (default: the checkpoint's, else resunet)")
    add_image_size(parser, side_range(1), default=256, old=("--input-size",),
                   help="input side in px (default 256; 3D specs get a cube)")
    add_batch_size(parser, default=1, old=("--batch",),
                   help="batch of the profiled forward and training step (default 1)")
    parser.add_argument("--in-channels", type=number(integers(1, 1024)), default=None, metavar="C",
                        help="input channels (default: the preset's or checkpoint's, else 1)")
    add_device(parser)
    parser.add_argument("--repeats", type=number(integers(1, 100_000)), default=10, metavar="N",
                        help="timed forwards; latency is their median")
    parser.add_argument("--warmup", type=number(integers(0, 100_000)), default=3, metavar="N",
                        help="untimed forwards before timing")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def _load_spec_file(path: str) -> dict[str, Any]:
    """The JSON object at ``path`` (a folder means its ``spec.json``), size- and depth-bounded."""
    from nas.io import JsonError, read_json

    file = Path(path)
    if file.is_dir():
        file = file / "spec.json"
    try:
        data = read_json(file)
    except JsonError as error:
        raise ValueError(f"--spec {error}") from None
    except OSError as error:
        raise ValueError(f"--spec {path}: cannot read it ({error.strerror or error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--spec {path}: expected a JSON object, got {type(data).__name__}")
    return data


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """What to profile: ``name``, ``space``, ``spec`` object and ``in_channels``; ValueError if bad."""
    if args.preset is not None:
        presets = _presets()
        if presets is None:
            raise ValueError("no presets are defined yet (search_spaces.presets is missing)")
        try:
            preset = presets.get_preset(args.preset)
        except (KeyError, ValueError):
            raise ValueError(f"unknown preset {args.preset!r}; known presets: "
                             f"{', '.join(_preset_names(presets))}") from None
        space = get_space(preset.space)
        return {"name": f"preset {preset.name}", "space": space, "spec": preset.spec,
                "in_channels": args.in_channels or preset.in_channels, "description": preset.description}
    data = _load_spec_file(args.spec)
    in_channels = 1
    space_name = args.space or "resunet"
    if "spec" in data and "space" in data:  # a checkpoint's spec.json
        from nas.deploy.checkpoint_checks import channels

        space_name = args.space or data["space"]
        try:
            in_channels = channels({"in_channels": data.get("in_channels", 1)}, "in_channels")
        except ValueError as error:
            raise ValueError(f"--spec {args.spec}: {error}") from None
        data = data["spec"]
    try:
        space = get_space(space_name)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--space: {error}") from None
    try:
        spec = space.spec_from_dict(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--spec {args.spec}: {error}") from None
    in_channels = args.in_channels or in_channels
    _check_size(args.spec, space, spec, in_channels)
    return {"name": f"spec {args.spec}", "space": space, "spec": spec,
            "in_channels": in_channels, "description": ""}


def _check_size(path: str, space: Any, spec: Any, in_channels: int) -> None:
    """Its weights counted on the meta device: refused before anything is allocated when the model,
    its gradients and Adam's two moments (the training step profiled) would not fit."""
    from nas.costs.footprint import footprint_problem, spec_footprint
    from nas.deploy.checkpoint_checks import first_line

    try:
        footprint = spec_footprint(space, spec, in_channels, getattr(spec, "out_channels", 1))
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"--spec {path}: the architecture cannot be built ({first_line(error)})") from None
    problem = footprint_problem(footprint, copies=4)
    if problem:
        raise ValueError(f"--spec {path}: {problem}")


def profile(space: Any, spec: Any, *, in_channels: int, input_size: int, batch: int, device: str,
            warmup: int = 3, repeats: int = 10) -> dict[str, Any]:
    """Costs (``nas.costs.measure``) and training-step memory (``nas.costs.constraints``) at ``(batch, C, S, S[, S])``."""
    from nas.costs.constraints import training_step_memory
    from nas.costs.inference_memory import inference_memory
    from nas.costs.measure import count_macs, count_params, describe_device, measure_costs
    from nas.train.trainer import resolve_device

    dims = getattr(spec, "spatial_dims", 2)
    shape = (batch, in_channels, *([input_size] * dims))
    model = space.build_model(spec, in_channels, 1)
    target = resolve_device(device)
    counted = inference_memory(model, shape)  # on the meta device, before any real forward
    skipped = _latency_skipped(counted["inference_memory_mb"] * 2**20, target)
    if skipped:
        macs = count_macs(model, shape)
        costs = {"params": count_params(model), "macs": macs, "flops": 2 * macs, "latency_ms": None,
                 "latency_device": describe_device(target), "input_shape": list(shape)}
    else:
        costs = measure_costs(model.to(target), shape, target, warmup=warmup, repeats=repeats).to_dict()
    memory = training_step_memory(model, shape)
    return {**costs, **memory, **counted, "latency_skipped": skipped, "latency_warmup": warmup,
            "latency_repeats": repeats, "space": space.name, "spec": spec.to_dict(), "in_channels": in_channels}


def _latency_skipped(needed: float, device: Any) -> str | None:
    """Why the real latency forward is not run (None: it is): its counted memory, with ``MARGIN``,
    is more than ``device`` has available now."""
    from nas.costs.inference_memory import MARGIN, available_memory
    from nas.costs.measure import describe_device

    free = available_memory(device)
    if free is None or needed * MARGIN <= free:
        return None
    gib = 2**30
    return (f"not measured: the inference forward needs about {needed / gib:.2f} GiB (counted on the meta device; "
            f"x{MARGIN} for workspaces), more than the {free / gib:.2f} GiB available on {describe_device(device)}")


def format_profile(name: str, summary: str, result: dict[str, Any]) -> str:
    macs, flops, params = result["macs"], result["flops"], result["params"]
    mb = 2**20
    return "\n".join([
        f"nas-profile: {name} ({result['space']})",
        f"spec:     {summary}",
        f"input:    {tuple(result['input_shape'])} float32",
        f"params:   {params:,}  ({params / 1e6:.3g} M)",
        f"MACs:     {macs:,}  ({macs / 1e9:.3g} GMAC: multiply-accumulates of conv/linear layers, "
        f"one forward of the whole batch)",
        f"FLOPs:    {flops:,}  ({flops / 1e9:.3g} GFLOP = 2 x MACs)",
        f"inference memory: {result['inference_memory_mb']:.1f} MB = "
        f"{result['inference_activation_bytes'] / mb:.1f} MB peak of live tensors (input and output included) + "
        "weights (counted on the meta device; workspaces not counted)",
        f"latency:  {result['latency_skipped']}" if result.get("latency_skipped") else
        f"latency:  {result['latency_ms']:.2f} ms  (median of {result['latency_repeats']} forwards after "
        f"{result['latency_warmup']} warm-up, inference mode, {result['latency_device']})",
        f"training-step memory: {result['train_memory_mb']:.1f} MB = "
        f"{result['activation_bytes'] / mb:.1f} MB activations saved for backward + "
        f"{result['state_bytes'] / mb:.1f} MB params, grads and Adam state "
        "(float32; allocator overhead and workspaces not counted; MB = 2^20 bytes)",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        presets = _presets()
        if presets is None:
            print("no presets defined")
            return 0
        for name in _preset_names(presets):
            preset = presets.get_preset(name)
            print(f"{name}: {preset.description}")
        return 0
    if args.preset is None and args.spec is None:
        parser.error("give --preset NAME or --spec FILE (or --list-presets)")
    check_device(parser, args.device)
    try:
        target = resolve(args)
    except ValueError as error:
        parser.error(str(error))
    dims = getattr(target["spec"], "spatial_dims", 2)
    check_pixels(parser, [args.image_size] * dims, args.batch_size)
    result = profile(target["space"], target["spec"], in_channels=target["in_channels"],
                     input_size=args.image_size, batch=args.batch_size, device=args.device,
                     warmup=args.warmup, repeats=args.repeats)
    if args.json:
        print(json.dumps({"name": target["name"], **result}, sort_keys=True))
    else:
        summary = target["spec"].summary() if hasattr(target["spec"], "summary") else str(target["spec"])
        print(format_profile(target["name"], summary, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
