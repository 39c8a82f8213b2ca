"""Trainer throughput on this machine: ``train_model`` vs a bare PyTorch loop, side by side.

The bare loop trains the same model on the same pre-built batches with the same loss and
optimizer, with no data sampling, augmentation, scheduling or validation; the ratio is the
trainer's overhead. Images/s counts training patches (forward + backward + step).

    .venv/bin/python benchmarks/trainer_throughput.py --image-size 64 --batch-size 8 --epochs 3
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from nas.data import iterate_train_batches, load_data
from nas.training import TrainConfig, dice_focal_loss, train_model
from search_spaces import RandomSuggest, get_space
from search_spaces.resunet import ResUNetSpec


def bare_loop(spec: ResUNetSpec, batches, epochs: int, normalization, in_channels: int) -> float:
    torch.manual_seed(0)
    model = get_space("resunet").build_model(spec, in_channels, 1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in batches:
            loss = dice_focal_loss(model(normalization.apply(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += x.shape[0]
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_data("synthetic", image_size=args.image_size, seed=args.seed)
    space = get_space("resunet")
    specs = [ResUNetSpec(encoder_widths=(16, 32, 64, 128), decoder_widths=(16, 32, 64))]
    specs += [space.sample_spec(RandomSuggest(seed)) for seed in (1, 2)]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; synthetic {len(data.train_images)} train images "
          f"at {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs")
    print(f"{'architecture':<44} {'trainer img/s':>14} {'bare img/s':>11} {'ratio':>6}")
    for spec in specs:
        batches = list(iterate_train_batches(data, patch_size=args.image_size,
                                             batch_size=args.batch_size, seed=0, epoch=1))
        bare = bare_loop(spec, batches, args.epochs, data.normalization, data.in_channels)
        torch.manual_seed(0)
        model = space.build_model(spec, data.in_channels, 1)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                             patch_size=args.image_size, seed=args.seed, device="cpu")
        ours = train_model(model, data, config).images_per_second
        print(f"{spec.summary():<44} {ours:>14.1f} {bare:>11.1f} {ours / bare:>6.2f}")


if __name__ == "__main__":
    main()
