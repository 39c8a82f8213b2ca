"""Quality of a fixed recipe on a real dataset: trains one ResUNet and prints every validation metric.

The architecture is the ``resunet-standard`` preset (Zhang et al. 2018) with its widths divided by
``--width-divisor`` (default 4: 16-32-64 + 128 bridge; the full 64..512 network does not train in
minutes on 2 CPU cores). The recipe: Adam 3e-3 with warm-up + cosine, Dice + focal loss,
``--patch`` px patches (``--foreground-fraction``, 0.5, centred on foreground), flips, 90-degree
rotations, +-10 % brightness/contrast, best-epoch weights; metrics on full validation images
(``nas.train.metrics``).

    .venv/bin/python benchmarks/quality.py --data ../shared/data/isbi2012_em/train
    .venv/bin/python benchmarks/quality.py --data ../shared/data/cvc_clinicdb_sample
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import sys
import time

import torch

from nas.data.loading import load_data
from nas.io import json_safe
from nas.train.trainer import TrainConfig, evaluate_quality, resolve_device, train_model
from search_spaces import get_space
from search_spaces.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="resunet-standard")
    parser.add_argument("--width-divisor", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patches-per-epoch", type=int, default=96)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--foreground-fraction", type=float, default=0.5,
                        help="share of patches centred on a foreground pixel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    args = parser.parse_args()

    started = time.perf_counter()
    device = resolve_device(args.device)
    data = load_data(args.data, image_size=args.patch, seed=args.seed)
    preset = get_preset(args.preset)
    divide = lambda widths: tuple(max(4, w // args.width_divisor) for w in widths)  # noqa: E731
    spec = dataclasses.replace(preset.spec, encoder_widths=divide(preset.spec.encoder_widths),
                               decoder_widths=divide(preset.spec.decoder_widths))
    torch.manual_seed(args.seed)
    model = get_space(preset.space).build_model(spec, data.in_channels, 1)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patch_size=args.patch,
                         patches_per_epoch=args.patches_per_epoch, seed=args.seed, device=str(device),
                         foreground_fraction=args.foreground_fraction, brightness=0.1, contrast=0.1)
    result = train_model(model, data, config,
                         on_epoch=lambda e, loss, dice: print(f"  epoch {e:>2}: loss {loss:.4f}  val Dice {dice:.4f}",
                                                              flush=True))
    model.load_state_dict(result.state_dict)
    quality = {"val": evaluate_quality(model, data, device, "val", config)}
    if data.test_images:
        quality["test"] = evaluate_quality(model, data, device, "test", config)

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable.split('/')[-1], *sys.argv])}")
    print(f"machine: {card}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"data: {data.name} ({len(data.train_images)} train / {len(data.val_images)} val / "
          f"{len(data.test_images)} test), spec: {spec.summary()}, "
          f"{sum(p.numel() for p in model.parameters()):,} params")
    print(f"best epoch {result.best_epoch}/{args.epochs}, {result.images_per_second:.1f} train patches/s, "
          f"total {time.perf_counter() - started:.0f} s")
    for split, metrics in quality.items():
        line = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("dice", "iou", "precision", "sensitivity",
                                                            "specificity", "hd95"))
        print(f"{split}: {line}")
        for name, stratum in metrics["size_strata"].items():
            detected = "-" if stratum["detected"] is None else f"{stratum['detected']:.3f}"
            dice = "-" if stratum["dice"] is None else f"{stratum['dice']:.4f}"
            print(f"  {name:<6} objects {stratum['count']:>5}  detected {detected:>6}  Dice {dice}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(json_safe({"spec": spec.to_dict(), "quality": quality, "epoch_dice": result.epoch_dice}),
                      handle, indent=2)


if __name__ == "__main__":
    main()
