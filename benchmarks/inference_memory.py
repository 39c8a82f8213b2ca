"""Memory and time of sliding-window inference on a 4K image at batch 1, against the stated bound.

The bound (``nas.train.inference``): the float32 output ``out * H * W * 4`` B plus one batch of windows and
its activations. Peak memory is the growth of the process's anonymous RSS, sampled every 2 ms in a
thread (libraries' file-backed pages faulted in later are not the algorithm's), plus ``ru_maxrss``
growth for reference; the raw image itself is allocated before measuring.

    .venv/bin/python benchmarks/inference_memory.py --height 2160 --width 3840 --patch 256
    .venv/bin/python benchmarks/inference_memory.py --direct   # also a whole-image forward, for contrast
"""
from __future__ import annotations

import argparse
import platform
import resource
import threading
import time

import torch

from nas.data.normalization import Normalization
from nas.train.inference import sliding_window_logits, window_starts
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

MIB = 2**20


def anon_bytes() -> int:
    with open("/proc/self/status") as handle:
        return 1024 * next(int(line.split()[1]) for line in handle if line.startswith("RssAnon"))


def peak_growth(run) -> tuple[object, int, int, float]:
    """``(result, anonymous RSS peak growth, ru_maxrss growth, seconds)`` of ``run()``."""
    before, max_before = anon_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anon_bytes())
            done.wait(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        result = run()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    peak[0] = max(peak[0], anon_bytes())
    max_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result, peak[0] - before, max_after - max_before, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--width", type=int, default=3840)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64], help="encoder widths")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--direct", action="store_true", help="also run one whole-image forward")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    widths = tuple(args.widths)
    spec = ResUNetSpec(encoder_widths=widths, decoder_widths=widths[:-1])
    model = get_space("resunet").build_model(spec, args.channels, 1).eval()
    norm = Normalization(mean=(0.5,) * args.channels, std=(0.25,) * args.channels)
    image = torch.rand(1, args.channels, args.height, args.width)  # (1, C, H, W): the caller's image
    sliding_window_logits(model, image[..., :args.patch, :args.patch], normalization=norm,
                          patch_size=args.patch)  # warm-up at the window shape

    windows = (len(window_starts(args.height, args.patch, args.overlap))
               * len(window_starts(args.width, args.patch, args.overlap)))
    out, anon, maxrss, seconds = peak_growth(lambda: sliding_window_logits(
        model, image, normalization=norm, patch_size=args.patch, overlap=args.overlap,
        batch_size=args.batch_size))
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    print(f"model: {spec.summary()}, {sum(p.numel() for p in model.parameters()):,} params")
    print(f"image: 1x{args.channels}x{args.height}x{args.width} float32 ({image.numel() * 4 / MIB:.1f} MiB, "
          f"not counted); patch {args.patch}, overlap {args.overlap}, {windows} windows, "
          f"{args.batch_size} per forward")
    print(f"sliding window: {seconds:.1f} s; peak anonymous RSS growth {anon / MIB:.1f} MiB "
          f"(ru_maxrss growth {maxrss / MIB:.1f} MiB), of which the float32 output is "
          f"{out.numel() * 4 / MIB:.1f} MiB")
    del out
    if args.direct:
        def direct():
            with torch.no_grad():
                return model(norm.apply(image))  # (1, 1, H, W)

        _, anon, maxrss, seconds = peak_growth(direct)
        print(f"whole-image forward: {seconds:.1f} s; peak anonymous RSS growth {anon / MIB:.1f} MiB "
              f"(ru_maxrss growth {maxrss / MIB:.1f} MiB)")


if __name__ == "__main__":
    main()
