"""Issue 17 measured: a K-class search on ``synthetic:classes`` (per-class Dice/IoU and the confusion matrix of
the front's best-quality model), and ``dice_small,macs`` vs ``dice,macs`` searches on the default synthetic
task at the same budget, over seeds: does searching for small objects find networks that detect more of them?

Every search goes through ``nas.run_search``; the searches run side by side in ``--procs`` processes with one
torch thread each, so the arms see the same machine load. Both arms of a seed share ``--trials``,
``--epochs``, ``--timeout``, the seed and so the data. From each run the model it would deploy for its own
objective (the best front member by its quality measure) is scored from the stored TEST quality block:
small-object Dice and detection rate (``quality.test.size_strata.small``), overall Dice, MACs. Plus, per
front, the best small-object detection at or under MAC levels.

    .venv/bin/python benchmarks/multiclass.py --timeout 480                     # 6 trials (RESULTS.md)
    .venv/bin/python benchmarks/multiclass.py --parts small --trials 24        # resumes the same studies to 24
    .venv/bin/python benchmarks/multiclass.py --trials 2 --epochs 1 --seeds 0 --out /tmp/mc   # plumbing
    .venv/bin/python benchmarks/multiclass.py --reuse                           # re-read finished runs

Prints one JSON object and the Markdown for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ARMS = ("dice", "dice_small")  # the quality objective of each arm of part 2 (cost: macs)


def small_stratum(splits, split: str = "test") -> dict:
    """``{"dice", "detected", "count"}`` of the small stratum in a record's quality blocks (None-filled)."""
    small = (((splits or {}).get(split) or {}).get("size_strata") or {}).get("small") or {}
    return {"dice": small.get("dice"), "detected": small.get("detected"), "count": small.get("count")}


def best_under(points, levels) -> list:
    """For each MAC level, the largest value among ``(macs, value)`` points at or under it (None: no point
    there, or no value)."""
    out = []
    for level in levels:
        values = [v for m, v in points if m is not None and m <= level and v is not None]
        out.append(max(values) if values else None)
    return out


def spread(values) -> str:
    """``mean ± std (min..max)`` of the non-missing values, ``n/a`` when none."""
    kept = [v for v in values if v is not None]
    if not kept:
        return "n/a"
    std = statistics.stdev(kept) if len(kept) > 1 else 0.0
    return f"{statistics.fmean(kept):.3f} ± {std:.3f} ({min(kept):.3f}..{max(kept):.3f})"


def search(source: str, objectives: str, seed: int, out: Path, args: argparse.Namespace) -> dict:
    import torch

    import nas

    torch.set_num_threads(1)
    config = nas.SearchConfig(data=source, objectives=objectives, trials=args.trials, epochs=args.epochs,
                              image_size=args.image_size, seed=seed, device="cpu", out=out, timeout=args.timeout,
                              baselines=(), warm_start="none", max_macs=args.max_macs)
    started = time.monotonic()
    result = nas.run_search(config)
    return {"argv": ["nas-search", *config.to_argv()], "seconds": time.monotonic() - started,
            "finished": result.finished, "status": result.status}


def front(out: Path, quality: str):
    """The run's (quality, macs) front, best quality first."""
    from nas.results.pareto import Objective, pareto_front
    from nas.run.open import open_run

    records = open_run(out).records
    found = pareto_front(records, (Objective(quality, "maximize"), Objective("macs", "minimize"))).front
    return sorted(found, key=lambda r: -r.measure(quality)), records


def classes_row(out: Path, quality: str) -> dict:
    members, records = front(out, quality)
    best = members[0]
    q = best.result.quality
    splits = q.splits or {}
    per_class = {name: {s: {k: ((splits.get(s) or {}).get("per_class") or {}).get(name, {}).get(k)
                            for k in ("dice", "iou")} for s in ("val", "test")}
                 for name in (q.class_names or ())[1:]}
    return {"trial": best.number, "macs": best.macs, "quality": quality, "value": best.measure(quality),
            "val_dice": q.dice, "val_miou": q.miou, "test_dice": (splits.get("test") or {}).get("dice"),
            "test_miou": (splits.get("test") or {}).get("miou"), "class_names": list(q.class_names or ()),
            "per_class": per_class, "confusion_val": [list(r) for r in q.confusion or ()],
            "confusion_test": (splits.get("test") or {}).get("confusion"), "front_size": len(members),
            "finished": sum(1 for r in records if r.measure(quality) is not None)}


def arm_row(out: Path, quality: str, levels) -> dict:
    members, records = front(out, quality)
    best = members[0]
    splits = best.result.quality.splits or {}
    points = [(r.macs, small_stratum(r.result.quality.splits)["detected"]) for r in members]
    return {"trial": best.number, "macs": best.macs, "val_value": best.measure(quality),
            "test": small_stratum(splits) | {"overall_dice": (splits.get("test") or {}).get("dice")},
            "front": [{"trial": r.number, "macs": r.macs, "detected": d} for r, (_, d) in zip(members, points)],
            "best_detected_under": best_under(points, levels),
            "finished": sum(1 for r in records if r.measure(quality) is not None),
            "specs": sorted(json.dumps(r.spec, sort_keys=True) for r in records if r.measure(quality) is not None)}


def shared(a: dict, b: dict) -> int:
    """How many finished architectures two arms have in common: with few trials the sampler's random
    start gives both arms the same candidates, and only the pick by objective differs."""
    return len(set(a["specs"]) & set(b["specs"]))


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict, levels) -> list[str]:
    lines = []
    c = result.get("classes")
    if c:
        lines += [f"**K-class search** (`synthetic:classes`, objectives `{c['quality']},macs`; {c['finished']} "
                  f"finished trials, front of {c['front_size']}): best front member trial {c['trial']}, "
                  f"{c['macs'] / 1e6:.2f} MMAC; validation Dice {_fmt(c['val_dice'])}, mIoU {_fmt(c['val_miou'])}; "
                  f"test Dice {_fmt(c['test_dice'])}, mIoU {_fmt(c['test_miou'])}", "",
                  "| class | val Dice | val IoU | test Dice | test IoU |", "|---|---|---|---|---|"]
        for name, row in c["per_class"].items():
            lines.append(f"| {name} | {_fmt(row['val']['dice'])} | {_fmt(row['val']['iou'])} | "
                         f"{_fmt(row['test']['dice'])} | {_fmt(row['test']['iou'])} |")
        for split in ("val", "test"):
            matrix = c[f"confusion_{split}"]
            if matrix:
                names = c["class_names"]
                lines += ["", f"Confusion matrix ({split} pixels; rows truth, columns prediction):", "",
                          "| truth \\ pred | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
                lines += [f"| {names[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(matrix)]
        lines.append("")
    runs = result.get("arms") or {}
    if runs:
        lines += ["**`dice_small,macs` vs `dice,macs`** (default synthetic; the deployed model = the front's best "
                  "by the run's own quality objective; TEST split)", "",
                  "| seed | objective | trials done | trial | MMAC | test small Dice | test small detected | "
                  "small objects | test Dice | architectures shared by the arms |", "|---|---|---|---|---|---|---|---|---|---|"]
        for key, row in sorted(runs.items()):
            seed, arm = key.split("/")
            t, pair = row["test"], [runs.get(f"{seed}/{a}") for a in ARMS]
            common = shared(*pair) if all(pair) else "n/a"
            lines.append(f"| {seed} | {arm},macs | {row['finished']} | {row['trial']} | {row['macs'] / 1e6:.2f} | "
                         f"{_fmt(t['dice'])} | {_fmt(t['detected'])} | {t['count']} | {_fmt(t['overall_dice'])} | "
                         f"{common} |")
        lines += ["", "Over seeds (mean ± std (min..max)):", "",
                  "| objective | test small Dice | test small detected | test Dice | MMAC |", "|---|---|---|---|---|"]
        for arm in ARMS:
            rows = [r for k, r in runs.items() if k.endswith("/" + arm)]
            lines.append(f"| {arm},macs | {spread([r['test']['dice'] for r in rows])} | "
                         f"{spread([r['test']['detected'] for r in rows])} | "
                         f"{spread([r['test']['overall_dice'] for r in rows])} | "
                         f"{spread([r['macs'] / 1e6 for r in rows])} |")
        lines += ["", "Best test small-object detection on each front at or under a MAC level:", "",
                  "| seed | objective | " + " | ".join(f"≤ {lv / 1e6:g} MMAC" for lv in levels) + " |",
                  "|---|---" + "|---" * len(levels) + "|"]
        for key, row in sorted(runs.items()):
            seed, arm = key.split("/")
            lines.append(f"| {seed} | {arm},macs | " + " | ".join(_fmt(v) for v in row["best_detected_under"]) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=None, help="each search's --timeout (s)")
    parser.add_argument("--max-macs", type=int, default=10_000_000, help="the searches' --max-macs")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of part 2 (part 1 uses the first)")
    parser.add_argument("--classes-objectives", default="miou,macs")
    parser.add_argument("--parts", default="classes,small", help="which parts to run")
    parser.add_argument("--procs", type=int, default=2, help="searches at once (one torch thread each)")
    parser.add_argument("--reuse", action="store_true", help="read runs already in --out instead of searching")
    parser.add_argument("--out", default="runs/bench_multiclass")
    args = parser.parse_args(argv)
    root, seeds, parts = Path(args.out), [int(s) for s in args.seeds.split(",")], args.parts.split(",")
    jobs = {}  # key -> (source, objectives, seed, folder)
    if "classes" in parts:
        jobs["classes"] = ("synthetic:classes", args.classes_objectives, seeds[0], root / "classes")
    if "small" in parts:
        jobs |= {f"{s}/{arm}": ("synthetic", f"{arm},macs", s, root / f"seed{s}_{arm}") for s in seeds for arm in ARMS}
    searched = {}
    if not args.reuse:
        with ProcessPoolExecutor(args.procs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {k: pool.submit(search, src, obj, s, out, args) for k, (src, obj, s, out) in jobs.items()}
            for key, future in futures.items():
                try:
                    searched[key] = future.result()
                except Exception as error:  # a miss is reported as a miss
                    searched[key] = {"error": f"{type(error).__name__}: {error}"}
    levels = [args.max_macs * f for f in (0.125, 0.25, 0.5, 1.0)]
    result: dict = {"searches": searched, "arms": {}}
    for key, (_, objectives, _, out) in jobs.items():
        try:
            if key == "classes":
                result["classes"] = classes_row(out, objectives.split(",")[0])
            else:
                result["arms"][key] = arm_row(out, objectives.split(",")[0], levels)
        except Exception as error:
            result.setdefault("missing", {})[key] = f"{type(error).__name__}: {error}"
    print(json.dumps(result, indent=1, default=str))
    print(f"\n### Multi-class and small-object objectives ({datetime.date.today()}, 1 torch thread per process)\n")
    print(f"`.venv/bin/python benchmarks/multiclass.py {shlex.join(sys.argv[1:] if argv is None else argv)}`\n")
    print("\n".join(markdown(result, levels)))
    for key, why in (result.get("missing") or {}).items():
        print(f"\nMISSING {key}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
