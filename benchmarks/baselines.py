"""Honest baselines: the search's Pareto models vs known presets trained with the same recipe.

For each dataset, one ``nas-search`` run with a fixed budget (``--trials`` x ``--epochs``) and
``--baselines unet-16,resunet-standard``, so the presets get exactly the search's data split,
patches, augmentation, optimiser and epochs. Then, side by side in this one process: Dice (val,
foreground, per image, mean), MACs at the search size, parameters, and batch-1 CPU latency
re-measured for every model in one loop (so a load change hits all of them alike).

Verdict per preset: the search "wins" against it if some Pareto model has at least its Dice at
no more MACs; otherwise the table says the search did not beat it.

    .venv/bin/python benchmarks/baselines.py                      # synthetic, ISBI 2012, CVC sample
    .venv/bin/python benchmarks/baselines.py --datasets synthetic --trials 12 --epochs 8
"""
from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nas import load_checkpoint, read_checkpoint_info
from nas.stages.baseline_training import baseline_records
from nas.costs.measure import measure_latency
from nas.engine.optuna_adapter.study import make_storage, run_storage, study_records
from reports import Objective, pareto_front

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {
    "synthetic": ("synthetic", []),
    "isbi2012_em": (str(SHARED / "isbi2012_em" / "train"), ["--foreground-fraction", "0.5"]),
    "cvc_clinicdb_sample": (str(SHARED / "cvc_clinicdb_sample"), ["--foreground-fraction", "0.5"]),
}
PRESETS = "unet-16,resunet-standard"


def run(dataset: str, args: argparse.Namespace, out: Path) -> tuple[list[str], float]:
    source, extra = DATASETS[dataset]
    command = [str(Path(sys.executable).parent / "nas-search"), "--data", source, "--trials", str(args.trials),
               "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--seed", str(args.seed),
               "--device", "cpu", "--baselines", PRESETS, "--out", str(out), *extra]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{result.stderr[-3000:]}")
    return command, time.monotonic() - started


def table(out: Path, image_size: int) -> list[dict]:
    import optuna

    storage = run_storage(out)
    study = optuna.load_study(study_name="resunet", storage=make_storage(storage))
    front = pareto_front(study_records(study), (Objective("dice", "maximize"), Objective("macs", "minimize"))).front
    rows = [{"model": f"search trial {r.number}", "record": r, "kind": "search"} for r in front]
    rows += [{"model": r.params["preset"], "record": r, "kind": "preset"} for r in baseline_records(out)]
    for row in rows:  # latency side by side, same threads, same moment
        model, _ = load_checkpoint(out / row["record"].checkpoint)
        channels = read_checkpoint_info(out / row["record"].checkpoint).in_channels
        row["latency_ms"] = measure_latency(model.eval(), (1, channels, image_size, image_size), "cpu",
                                            warmup=3, repeats=10)
    return rows


def verdict(rows: list[dict]) -> list[str]:
    search = [r["record"] for r in rows if r["kind"] == "search"]
    lines = []
    for row in (r for r in rows if r["kind"] == "preset"):
        preset = row["record"]
        better = [r for r in search if r.dice >= preset.dice and r.macs <= preset.macs]
        if better:
            best = min(better, key=lambda r: r.macs)
            lines.append(f"{row['model']}: beaten: trial {best.number} reaches Dice {best.dice:.3f} "
                         f"(>= {preset.dice:.3f}) with {preset.macs / best.macs:.1f}x fewer MACs")
        else:
            top = max(search, key=lambda r: r.dice) if search else None
            lines.append(f"{row['model']}: NOT beaten: no Pareto model reaches its Dice {preset.dice:.3f} at no more "
                         f"MACs (best search Dice {top.dice:.3f})" if top else f"{row['model']}: no search models")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep the run directories under this folder")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="baselines-"))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; budget {args.trials} trials x {args.epochs} epochs at "
          f"{args.image_size} px, seed {args.seed}; presets trained with the same recipe")
    for dataset in args.datasets.split(","):
        if dataset not in DATASETS:
            sys.exit(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
        source = DATASETS[dataset][0]
        if source != "synthetic" and not Path(source).is_dir():
            print(f"\n## {dataset}: skipped ({source} not found)")
            continue
        out = root / dataset
        command, seconds = run(dataset, args, out)
        print(f"\n## {dataset}\n`{shlex.join(command[1:])}` ({seconds:.0f} s)\n")
        print("| model | Dice | MACs | params | CPU latency ms (batch 1) |\n|---|---:|---:|---:|---:|")
        rows = table(out, args.image_size)
        for row in rows:
            r = row["record"]
            print(f"| {row['model']} | {r.dice:.3f} | {r.macs / 1e6:.1f} M | {r.measure('params') / 1e3:.0f} k | "
                  f"{row['latency_ms']:.2f} |")
        print()
        for line in verdict(rows):
            print(f"- {line}")
    print(f"\nrun directories: {root}")


if __name__ == "__main__":
    main()
