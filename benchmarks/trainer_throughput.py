"""Trainer throughput on this machine: ``train_model`` vs a bare PyTorch loop, side by side.

The bare loop trains the same model on the same pre-built batches with the same loss, optimizer and
memory format / autocast, with no data sampling, augmentation, scheduling or validation; the ratio
is the trainer's overhead (goal >= 0.95). The engine options (channels_last, bf16 autocast on CPU,
AMP on CUDA) are then measured on the first architecture, each as a gain over the default in the
same run. Images/s counts training patches (forward + backward + step); validation is not timed.

    .venv/bin/python benchmarks/trainer_throughput.py --image-size 64 --batch-size 8 --epochs 3
    .venv/bin/python benchmarks/trainer_throughput.py --device cuda --image-size 128 --batch-size 32
"""
from __future__ import annotations

import argparse
import platform
import time
from contextlib import nullcontext

import torch

from nas.data.loading import load_data
from nas.data.patches import iterate_train_batches
from nas.train.trainer import TrainConfig, dice_focal_loss, resolve_device, train_model
from search_spaces import RandomSuggest, get_space
from search_spaces.resunet import ResUNetSpec


def bare_loop(spec: ResUNetSpec, batches, epochs: int, normalization, in_channels: int, device: torch.device,
              channels_last: bool = False, autocast_dtype: torch.dtype | None = None) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = get_space("resunet").build_model(spec, in_channels, 1).to(device, memory_format=fmt).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    cast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    images = 0
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in batches:
            with cast:
                logits = model(normalization.apply(x).contiguous(memory_format=fmt))
            loss = dice_focal_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += x.shape[0]
    _sync(device)
    return images / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--archs", type=int, default=3, help="architectures to time (1-3)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate trainer and bare runs this often and keep each side's best "
                             "(robust to other processes sharing the CPU)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_data("synthetic", image_size=args.image_size, seed=args.seed)
    space = get_space("resunet")
    specs = [ResUNetSpec(encoder_widths=(16, 32, 64, 128), decoder_widths=(16, 32, 64))]
    specs += [space.sample_spec(RandomSuggest(seed)) for seed in (1, 2)]
    specs = specs[:max(1, args.archs)]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"machine: {card}, torch {torch.__version__}, {torch.get_num_threads()} threads; synthetic "
          f"{len(data.train_images)} train images at {args.image_size} px, batch {args.batch_size}, "
          f"{args.epochs} epochs, device {device}")
    batches = list(iterate_train_batches(data, patch_size=args.image_size, batch_size=args.batch_size,
                                         seed=args.seed, epoch=1))
    half = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    variants = [("default", {}, {})]
    if device.type == "cuda":
        variants = [("fp32", {"amp": False}, {}), ("amp", {}, {"autocast_dtype": half})]
    variants += [("channels_last", {"channels_last": True, "amp": device.type == "cuda"},
                  {"channels_last": True, "autocast_dtype": half if device.type == "cuda" else None})]
    if device.type == "cpu":
        variants += [("bf16 autocast", {"cpu_bf16": True}, {"autocast_dtype": torch.bfloat16})]

    print(f"{'architecture':<44} {'variant':<14} {'trainer img/s':>14} {'bare img/s':>11} {'ratio':>6} "
          f"{'gain':>6}")
    for number, spec in enumerate(specs):
        reference = None
        for name, options, bare_options in (variants if number == 0 else variants[:1]):
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patch_size=args.image_size,
                                 seed=args.seed, device=str(device), **options)
            bare = ours = 0.0
            for _ in range(max(1, args.repeats)):
                bare = max(bare, bare_loop(spec, batches, args.epochs, data.normalization, data.in_channels,
                                           device, **bare_options))
                torch.manual_seed(0)
                model = space.build_model(spec, data.in_channels, 1)
                ours = max(ours, train_model(model, data, config).images_per_second)
            reference = reference or ours
            print(f"{spec.summary():<44} {name:<14} {ours:>14.1f} {bare:>11.1f} {ours / bare:>6.2f} "
                  f"{ours / reference:>6.2f}")


if __name__ == "__main__":
    main()
