"""Compression benchmark on synthetic data (CPU, a few minutes on 2 cores).

A parent ResUNet is trained for ``--epochs``; for each importance and MACs ratio it is pruned and
fine-tuned for ``--finetune-epochs`` (distilled with ``--distill``), and a width-scaled copy of the
parent architecture with about the same MACs is trained from scratch for ``epochs + finetune-epochs``
(the same total epochs): the honest baseline. Then the parent is exported fp32 / fp16 / int8 ONNX
and measured (size, ONNX Runtime CPU latency, Dice) against the fp32 PyTorch model.

    .venv/bin/python benchmarks/compression.py --image-size 64 --epochs 6 --finetune-epochs 2 --ratios 0.25,0.5

Dice and size ratios hold on a loaded machine; latencies do not (compare them only on an idle one).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.finetune import finetune  # noqa: E402
from compress.prune import macs_of, prune_channels  # noqa: E402
from compress.quantize import FILES, export_precisions  # noqa: E402
from nas.data.loading import load_data  # noqa: E402
from nas.train.trainer import TrainConfig, evaluate_dice, train_model  # noqa: E402
from search_spaces.resunet import ResUNetSpec, build_model  # noqa: E402


def onnx_weight_bytes(path: Path) -> dict[str, int]:
    """Bytes of the graph's initializers per dtype."""
    import onnx
    from onnx import numpy_helper

    out: dict[str, int] = {}
    for init in onnx.load(str(path)).graph.initializer:
        array = numpy_helper.to_array(init)
        out[array.dtype.name] = out.get(array.dtype.name, 0) + array.nbytes
    return out


def mean_dice(model, data, config) -> float:
    scores = evaluate_dice(model.eval(), data, torch.device("cpu"), config=config)
    return sum(scores) / len(scores)


def scaled(spec: ResUNetSpec, factor: float) -> ResUNetSpec:
    widths = lambda ws: tuple(max(4, int(round(w * factor))) for w in ws)  # noqa: E731
    return dataclasses.replace(spec, encoder_widths=widths(spec.encoder_widths),
                               decoder_widths=widths(spec.decoder_widths))


def width_matched(spec: ResUNetSpec, target_macs: int, example: torch.Tensor) -> ResUNetSpec:
    """The uniform width scaling whose MACs are closest to ``target_macs`` (bisection on the factor)."""
    low, high = 0.1, 1.0
    for _ in range(12):
        mid = (low + high) / 2
        if macs_of(build_model(scaled(spec, mid), 1, 1), example) > target_macs:
            high = mid
        else:
            low = mid
    return scaled(spec, (low + high) / 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--ratios", default="0.5,0.75")
    parser.add_argument("--importances", default="magnitude,bn-scale,taylor,random")
    parser.add_argument("--finetune-lr", type=float, default=3e-3, help="peak lr of fine-tuning (warm-up + cosine)")
    parser.add_argument("--distill", action="store_true")
    parser.add_argument("--distill-loss", choices=("mse", "kl"), default="mse")
    parser.add_argument("--global-pruning", action="store_true")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_data("synthetic", image_size=args.image_size, seed=0)
    config = TrainConfig(epochs=args.epochs, patch_size=args.image_size, device="cpu", seed=0)
    tune = dataclasses.replace(config, epochs=args.finetune_epochs, lr=args.finetune_lr)
    example = torch.zeros(1, 1, args.image_size, args.image_size)
    spec = ResUNetSpec(encoder_widths=(16, 32, 64, 64), decoder_widths=(16, 32, 64))
    torch.manual_seed(0)
    parent = build_model(spec, 1, 1)
    parent.load_state_dict(train_model(parent, data, config).state_dict)
    parent_dice, parent_macs = mean_dice(parent, data, config), macs_of(parent, example)
    print(f"parent {spec.summary()}: dice {parent_dice:.4f}, {parent_macs / 1e6:.1f} MMAC", flush=True)
    rows, baselines = [], {}
    for ratio in (float(r) for r in args.ratios.split(",")):
        for importance in args.importances.split(","):
            started = time.perf_counter()
            loss_fn = None
            if importance == "taylor":
                from compress.pipeline import taylor_loss
                loss_fn = taylor_loss(data, config)
            model, _ = prune_channels(parent, spec, importance=importance, ratio=ratio, round_to=args.round_to,
                                      global_pruning=args.global_pruning, example_input=example, loss_fn=loss_fn)
            result = finetune(model, data, tune, teacher=parent if args.distill else None,
                              distill_loss=args.distill_loss)
            model.load_state_dict(result.state_dict)
            dice, macs = mean_dice(model, data, config), macs_of(model, example)
            if ratio not in baselines:  # width-scaled architecture, same MACs, trained from scratch
                base_spec = width_matched(spec, macs, example)
                torch.manual_seed(0)
                base = build_model(base_spec, 1, 1)
                total = dataclasses.replace(config, epochs=args.epochs + args.finetune_epochs)
                base.load_state_dict(train_model(base, data, total).state_dict)
                baselines[ratio] = {"spec": base_spec.summary(), "macs": macs_of(base, example),
                                    "dice": mean_dice(base, data, config)}
            row = {"importance": importance, "ratio": ratio, "macs_reduction": 1 - macs / parent_macs,
                   "dice": dice, "dice_drop_points": 100 * (parent_dice - dice),
                   "baseline_dice": baselines[ratio]["dice"], "seconds": time.perf_counter() - started}
            rows.append(row)
            print(json.dumps(row), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        quant = export_precisions(parent, folder, data, input_size=args.image_size, config=config)
        weight_bytes = {name: onnx_weight_bytes(Path(folder) / file) for name, file in FILES.items()}
    p = quant["precisions"]
    summary = {
        "parent_dice": parent_dice, "parent_macs": parent_macs, "rows": rows, "baselines": baselines,
        "quantization": quant,
        "int8_vs_fp32_onnx_latency": p["fp32"]["latency_ms"] / p["int8"]["latency_ms"],
        "int8_vs_fp32_pytorch_latency": quant["pytorch_fp32_latency_ms"] / p["int8"]["latency_ms"],
        "int8_size_ratio": p["fp32"]["size_bytes"] / p["int8"]["size_bytes"],
        "onnx_weight_bytes": weight_bytes,  # initializers only, by dtype: shows no fp32 weight is kept
        "int8_weight_bytes_ratio": sum(weight_bytes["fp32"].values()) / sum(weight_bytes["int8"].values()),
        "int8_dice_drop_points": 100 * (p["fp32"]["dice"] - p["int8"]["dice"]),
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rows",)}, indent=1, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
