"""Search efficiency: the default engine (TPE + cost-aware early stopping) vs Optuna random search
without early stopping, the same wall-clock budget each, several seeds, on the synthetic data.

Metric: hypervolume of the (Dice, log10 MACs) front of finished trials against the fixed reference
point of ``reports.hypervolume`` (Dice 0, 10^11 MACs), as a function of compute = the cumulative
device seconds of every trial (finished, early-stopped, pruned and failed ones alike). Printed:
per run the final hypervolume and the compute it needed to reach 95 % of the best hypervolume any
run found; per engine the median; and their ratio. Also the engine's own overhead: per trial,
everything but training (+ per-epoch validation) as a share of trial time (cost measurement,
checkpoint, test-set quality); and the seconds spent outside trials (start-up, report).

    .venv/bin/python benchmarks/search_efficiency.py --budget 240 --seeds 0,1,2

Each run is a real ``nas-search`` process (``--timeout``); runs alternate between the engines so a
load change on the machine hits both alike.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from nas.engine.optuna_adapter.study import make_storage, study_records
from reports.hypervolume import REFERENCE, hypervolume_2d

NAS_SEARCH = Path(sys.executable).parent / "nas-search"
ENGINES = {
    "default (tpe + early stop)": ["--sampler", "tpe", "--early-stop", "on"],
    "random, no early stop": ["--sampler", "random", "--early-stop", "off"],
}


def run_search(engine_flags: list[str], seed: int, budget: float, epochs: int, image_size: int,
               out: Path) -> dict:
    started = time.monotonic()
    result = subprocess.run(
        [str(NAS_SEARCH), "--trials", "10000", "--timeout", str(budget), "--epochs", str(epochs),
         "--image-size", str(image_size), "--seed", str(seed), "--device", "cpu", "--max-failures", "1000",
         "--out", str(out), *engine_flags],
        capture_output=True, text=True)
    wall = time.monotonic() - started
    if not (out / "study.db").is_file():
        raise RuntimeError(f"search failed: {result.stderr[-2000:]}")
    study = optuna.load_study(study_name="resunet", storage=make_storage(f"sqlite:///{out / 'study.db'}"))
    return analyse(study, wall)


def analyse(study: optuna.Study, wall: float) -> dict:
    """Hypervolume after each trial (in completion order) against cumulative device seconds."""
    trials = sorted((t for t in study.trials if t.datetime_complete is not None), key=lambda t: t.datetime_complete)
    records = {r.number: r for r in study_records(study)}
    compute, points, curve, train = 0.0, [], [], 0.0
    for trial in trials:
        record = records[trial.number]
        compute += float(trial.user_attrs.get("device_seconds") or 0.0)
        train += float(trial.user_attrs.get("train_seconds") or 0.0)
        if record.finished and record.macs:
            points.append((record.dice, math.log10(record.macs)))
        curve.append((compute, hypervolume_2d(points, REFERENCE)))
    states = [t.state.name for t in trials]
    return {"curve": curve, "wall": wall, "train_seconds": train, "trial_seconds": compute, "trials": len(trials),
            "finished": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "early_stopped": sum(1 for t in trials if t.user_attrs.get("stopped_at_epoch") is not None)}


def compute_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((c for c, hv in curve if hv >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240, help="wall seconds per search")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--keep", default=None, help="keep the run directories here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.keep or tempfile.mkdtemp(prefix="search-eff-"))
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"budget {args.budget:g} s per run, {args.epochs} epochs, {args.image_size} px, seeds {seeds}")
    runs: dict[str, list[dict]] = {name: [] for name in ENGINES}
    for seed in seeds:
        for name, flags in ENGINES.items():
            out = root / f"{name.split()[0]}-seed{seed}"
            run = run_search(flags, seed, args.budget, args.epochs, args.image_size, out)
            runs[name].append(run)
            final = run["curve"][-1][1] if run["curve"] else 0.0
            print(f"  {name:<28} seed {seed}: {run['trials']} trials ({run['finished']} finished, "
                  f"{run['early_stopped']} early-stopped), final HV {final:.4f}", flush=True)

    best = max((hv for rs in runs.values() for r in rs for _, hv in r["curve"]), default=0.0)
    target = 0.95 * best
    print(f"\nbest hypervolume of any run: {best:.4f} (Dice x decades of MACs, reference {REFERENCE}); "
          f"target 95 % = {target:.4f}")
    medians = {}
    for name, rs in runs.items():
        needed = [compute_to_reach(r["curve"], target) for r in rs]
        reached = [n for n in needed if n is not None]
        per_trial = [1 - r["train_seconds"] / r["trial_seconds"] for r in rs if r["trial_seconds"]]
        outside = [r["wall"] - r["trial_seconds"] for r in rs]
        finals = [r["curve"][-1][1] if r["curve"] else 0.0 for r in rs]
        medians[name] = statistics.median(reached) if len(reached) == len(rs) else None
        shown = ", ".join("never" if n is None else f"{n:.0f} s" for n in needed)
        print(f"{name:<28} compute to 95 %: {shown} (median "
              f"{'n/a (not all runs reached it)' if medians[name] is None else f'{medians[name]:.0f} s'}); "
              f"final HV median {statistics.median(finals):.4f}; per-trial overhead (all but training and "
              f"per-epoch validation) {100 * statistics.median(per_trial):.1f} % of trial time; outside "
              f"trials (start-up, sampling, storage, report) {statistics.median(outside):.0f} s per run")
    default, baseline = medians[list(ENGINES)[0]], medians[list(ENGINES)[1]]
    if default and baseline:
        print(f"ratio (random / default compute to reach 95 %): {baseline / default:.2f}x")
    else:
        print("ratio: n/a (an engine did not reach the target in every run: compare the final HV medians)")
    (root / "summary.json").write_text(json.dumps({k: [{**r, "curve": r["curve"]} for r in v]
                                                   for k, v in runs.items()}))
    print(f"runs kept in {root}")


if __name__ == "__main__":
    main()
