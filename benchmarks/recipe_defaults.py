"""Which training defaults suit sparse real data? One fixed network, one recipe change at a time, 3 seeds.

Issue 13 asks for the foreground-centred share, augmentation and learning rate to be chosen by
measurement. The network is the ``resunet-standard`` preset with its widths divided by
``--width-divisor`` (8: trains in about a minute per seed on one CPU thread); every arm trains it with
the search's recipe (an epoch covers the training area, ``--epochs``, ``--patch`` px patches) and
changes one thing from today's search defaults. Each trained model is scored like a trial: the
threshold is chosen on validation, the number claimed is the mean test Dice at it (images with
foreground). The data split is fixed (``--split-seed``); the seeds vary initialisation and patches.

    .venv/bin/python benchmarks/recipe_defaults.py                         # ISBI 2012 and the CVC sample
    .venv/bin/python benchmarks/recipe_defaults.py --datasets synthetic --epochs 1 --seeds 0   # plumbing

Prints one JSON line per training and a Markdown table per dataset (mean +- std over seeds, and the
paired difference to the ``today`` arm with its min..max over seeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from nas.data.loading import load_data
from nas.data.patches import foreground_share
from nas.engine.trial import assess
from nas.train.trainer import TrainConfig, train_model
from search_spaces import get_space
from search_spaces.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {"isbi2012_em": str(SHARED / "isbi2012_em" / "train"),
            "cvc_clinicdb_sample": str(SHARED / "cvc_clinicdb_sample"), "synthetic": "synthetic"}
# arm -> the one change from today's search recipe (TrainConfig defaults).
ARMS = {
    "today": {},
    "foreground 0.5": {"foreground_fraction": 0.5},
    "augment": {"brightness": 0.1, "contrast": 0.1},
    "lr 1e-3": {"lr": 1e-3},
    "lr 1e-2": {"lr": 1e-2},
}


def train_arm(data, spec, space, args: argparse.Namespace, arm: str, seed: int) -> dict:
    """Train the fixed network with one arm's recipe; test Dice at the validation-chosen threshold."""
    config = TrainConfig(epochs=args.epochs, patch_size=args.patch, seed=seed, device="cpu", **ARMS[arm])
    torch.manual_seed(seed)
    model = space.build_model(spec, data.in_channels, 1)
    started = time.monotonic()
    result = train_model(model, data, config)
    model.load_state_dict(result.state_dict)
    model.eval()
    quality, choice, per_image = assess(model, data, torch.device("cpu"), config)
    return {"arm": arm, "seed": seed, "seconds": round(time.monotonic() - started, 1),
            "threshold": choice.threshold, "val_dice": choice.dice,
            "test_dice": statistics.fmean(per_image["test"]) if per_image.get("test") else None,
            "best_epoch": result.best_epoch}


def table(name: str, data, rows: list[dict]) -> list[str]:
    ran = [arm for arm in ARMS if any(r["arm"] == arm for r in rows)]
    by_arm = {arm: {r["seed"]: r["test_dice"] for r in rows if r["arm"] == arm} for arm in ran}
    lines = [f"**{name}** (train/val/test {len(data.train_images)}/{len(data.val_images)}/{len(data.test_images)}; "
             f"training foreground share {foreground_share(data):.3f})", "",
             "| arm | test Dice mean ± std | per seed | Δ vs today (mean, min..max over seeds) |", "|---|---|---|---|"]
    for arm, scores in by_arm.items():
        values = [scores[s] for s in sorted(scores)]
        deltas = [scores[s] - by_arm["today"][s] for s in sorted(scores) if s in by_arm.get("today", {})]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        delta = (f"{statistics.fmean(deltas):+.3f} ({min(deltas):+.3f}..{max(deltas):+.3f})"
                 if arm != "today" and deltas else "")
        lines.append(f"| {arm} | {statistics.fmean(values):.3f} ± {spread:.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in values)} | {delta} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="isbi2012_em,cvc_clinicdb_sample")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--width-divisor", type=int, default=8)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = get_preset("resunet-standard")
    divide = lambda widths: tuple(max(4, w // args.width_divisor) for w in widths)  # noqa: E731
    spec = dataclasses.replace(preset.spec, encoder_widths=divide(preset.spec.encoder_widths),
                               decoder_widths=divide(preset.spec.decoder_widths))
    space = get_space(preset.space)
    arms = [a for a in args.arms.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",")]
    report = [f"### Recipe defaults ({datetime.date.today()}, {args.threads} torch thread(s))", "",
              f"`.venv/bin/python benchmarks/recipe_defaults.py {shlex.join(sys.argv[1:] if argv is None else argv)}`; "
              f"network: {spec.summary()}", ""]
    for name in args.datasets.split(","):
        data = load_data(DATASETS[name], image_size=args.patch, seed=args.split_seed)
        rows = []
        for seed in seeds:
            for arm in arms:
                rows.append({"dataset": name, **train_arm(data, spec, space, args, arm, seed)})
                print(json.dumps(rows[-1]), flush=True)
        report += table(name, data, rows) + [""]
    print("\n" + "\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
