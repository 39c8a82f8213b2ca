"""Issue 13 measured: Dice before (one patch per image, threshold 0.5) and after (an epoch covers the
training area, threshold chosen on validation) at the same wall budget, on the same held-out test
images; then the finalist stage of the "after" run: seed spread and Kendall tau (search vs final Dice).

For each dataset, two searches with the same ``--timeout`` (the wall budget; ``--trials`` is large so
the budget ends them), the same seed, data, split and recipe; only the epoch differs
(``--patches-per-epoch`` = the number of training images for "before"). The two arms run side by
side, one process and one torch thread each, so both see the same machine load for the same wall time. From each, the trial a user
would deploy (the best validation Dice) is scored on the test split: "before" at 0.5 (there was no
threshold), "after" at its stored threshold. Then ``nas-finalize`` on the "after" run.

    .venv/bin/python benchmarks/finalists.py                                  # ISBI 2012 and the CVC sample
    .venv/bin/python benchmarks/finalists.py --budget-s 120 --finalists 2 --final-seeds 2 --final-epochs 6
    .venv/bin/python benchmarks/finalists.py --budget-s 600 --epochs 4 --final-epochs 8 --finalists 2 \
        --baselines '' --max-macs 30000000                                       # what RESULTS.md records
    .venv/bin/python benchmarks/finalists.py --datasets synthetic --budget-s 30 --smoke   # plumbing only

Prints one JSON object per dataset and the Markdown lines for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import multiprocessing
import datetime
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {"isbi2012_em": str(SHARED / "isbi2012_em" / "train"),
            "cvc_clinicdb_sample": str(SHARED / "cvc_clinicdb_sample"), "synthetic": "synthetic"}
SMOKE_FIX = {"depth": 3, "base_width": 8, "blocks_per_stage": 1, "block": "plain", "width_mode": "growth",
             "width_growth": 1.5, "aspp": False, "attention": "none", "multiscale_input": False,
             "deep_supervision": False}


def search(source: str, out: Path, args: argparse.Namespace, patches: int | None) -> dict:
    import nas

    torch.set_num_threads(args.threads)
    config = nas.SearchConfig(data=source, trials=100_000, epochs=args.epochs, image_size=args.image_size,
                              seed=args.seed, device="cpu", out=out, timeout=args.budget_s,
                              foreground_fraction=args.foreground_fraction, patches_per_epoch=patches,
                              baselines=tuple(args.baselines.split(",")) if args.baselines else (),
                              max_macs=args.max_macs, fix=SMOKE_FIX if args.smoke else {})
    started = time.monotonic()
    result = nas.run_search(config)
    return {"argv": ["nas-search", *config.to_argv()], "seconds": time.monotonic() - started,
            "finished": result.finished, "status": result.status}


def deployed(out: Path) -> tuple[int, Path, dict]:
    """The trial a user deploys: the best validation Dice of the run."""
    from nas.run.open import open_run

    best = max((r for r in open_run(out).records if r.finished and r.checkpoint), key=lambda r: r.dice)
    metrics = json.loads((out / best.checkpoint / "metrics.json").read_text())
    return best.number, out / best.checkpoint, metrics


def test_dice(folder: Path, data, threshold: float) -> float:
    """Mean test Dice (images with foreground) of a checkpoint at ``threshold``."""
    from nas import load_checkpoint
    from nas.train.threshold import dice_scores, with_foreground
    from nas.train.trainer import split_logits

    model, _ = load_checkpoint(folder, "cpu")
    _, masks, fovs = data.split("test")
    scores = with_foreground(dice_scores(split_logits(model, data, torch.device("cpu"), "test"), masks, fovs,
                                         threshold), masks, fovs)
    return sum(scores) / len(scores)


def dataset(name: str, args: argparse.Namespace) -> dict:
    from nas.cli.finalize import main as finalize_main
    from nas.data.loading import load_data
    from nas.run.finalist_run import load_run_data
    from nas.run.open import open_run

    source = DATASETS[name]
    root = Path(args.out) / name
    probe = load_data(source, image_size=args.image_size, seed=args.seed)
    row: dict = {"dataset": name, "train/val/test": [len(probe.train_images), len(probe.val_images),
                                                     len(probe.test_images)], "test_note": probe.test_note}
    arms = (("before", len(probe.train_images)), ("after", None))
    with ProcessPoolExecutor(len(arms), mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = {label: pool.submit(search, source, root / label, args, patches) for label, patches in arms}
        for label, _ in arms:
            row[label] = runs[label].result()
    for label, _ in arms:
        number, folder, metrics = deployed(root / label)
        data = load_run_data(open_run(root / label).settings)
        threshold = 0.5 if label == "before" else float(metrics.get("threshold", 0.5))
        row[label].update(trial=number, val_dice=metrics["dice"], threshold=threshold,
                          test_dice=test_dice(folder, data, threshold))
    started = time.monotonic()
    argv = ["--run", str(root / "after"), "--finalists", str(args.finalists), "--final-seeds", str(args.final_seeds),
            "--device", "cpu", "--no-overlays"]
    argv += ["--final-epochs", str(args.final_epochs)] if args.final_epochs else []
    code = finalize_main(argv)
    summary = json.loads((root / "after" / "finalists" / "finalists.json").read_text())
    row["finalize"] = {"argv": ["nas-finalize", *argv], "exit": code, "seconds": time.monotonic() - started,
                       "tau": summary["tau"], "verdicts": [v["text"] for v in summary["verdicts"]],
                       "entrants": [{k: e.get(k) for k in ("label", "kind", "search_dice", "dice", "std", "ci")}
                                    | {"seeds": [s["dice"] for s in e.get("seeds") or []]}
                                    for e in summary["entrants"]]}
    return row


def markdown(row: dict) -> list[str]:
    b, a, f = row["before"], row["after"], row["finalize"]
    lines = [f"**{row['dataset']}** (train/val/test {'/'.join(map(str, row['train/val/test']))}; {row['test_note']}): "
             f"deployed trial's test Dice {b['test_dice']:.3f} before (one patch per image, 0.5; {b['finished']} "
             f"trials in {b['seconds']:.0f} s) vs {a['test_dice']:.3f} after (covering epoch, threshold "
             f"{a['threshold']:g}; {a['finished']} trials in {a['seconds']:.0f} s)", "",
             "| entrant | search Dice (val) | final test Dice mean ± std | 95 % CI | per seed |",
             "|---|---|---|---|---|"]
    for e in f["entrants"]:
        ci = e["ci"] or [float("nan")] * 2
        lines.append(f"| {e['label']} ({e['kind']}) | {e['search_dice'] or float('nan'):.3f} | "
                     f"{e['dice'] or float('nan'):.3f} ± {e['std'] or 0:.3f} | [{ci[0]:.3f}, {ci[1]:.3f}] | "
                     f"{', '.join(f'{d:.3f}' for d in e['seeds'] if d is not None)} |")
    tau = f["tau"]["value"]
    lines += ["", f"Kendall tau (search vs final Dice, {f['tau']['n']} entrants): "
                  f"{'n/a' if tau is None else f'{tau:+.2f}'}; finalist stage {f['seconds']:.0f} s. "
                  + " ".join(f"Verdict: {v}." for v in f["verdicts"])]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="isbi2012_em,cvc_clinicdb_sample")
    parser.add_argument("--budget-s", type=float, default=600.0, help="wall budget of each search (--timeout)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--foreground-fraction", type=float, default=0.5)
    parser.add_argument("--baselines", default="unet-16", help="presets, comma-separated ('' for none)")
    parser.add_argument("--max-macs", type=int, default=None,
                        help="the searches' --max-macs: keeps trials short on a shared CPU")
    parser.add_argument("--finalists", type=int, default=3)
    parser.add_argument("--final-seeds", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each search arm and of the finalist stage")
    parser.add_argument("--smoke", action="store_true", help="one tiny fixed architecture: checks the plumbing only")
    parser.add_argument("--out", default="runs/bench_finalists")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # the finalist stage runs in this process
    rows = [dataset(name, args) for name in args.datasets.split(",")]
    print(json.dumps(rows, indent=1))
    print(f"\n### Finalists ({datetime.date.today()}, {args.threads} torch thread(s) per process)\n")
    print(f"`.venv/bin/python benchmarks/finalists.py {shlex.join(sys.argv[1:] if argv is None else argv)}`\n")
    for row in rows:
        print("\n".join(markdown(row)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
