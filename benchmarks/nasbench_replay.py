#!/usr/bin/env python3
"""Replay search arms on the tabulated benchmark (docs/benchmark.md): 30 seeds x 8 arms in minutes.

Every arm is the engine's own code (``nas.bench.replay``) on the table, with the surrogate answering the
architectures the table lacks (their MACs and parameters from ``nas.bench.costs``); ``syne-moasha`` is Syne
Tune's MOASHA deciding after every epoch over random proposals, as arm (d) of search_vs_family.py. Writes
``<out>/replay.json``, ``replay.md`` and ``replay.{png,svg}`` (median hypervolume against compute, 95 %
bootstrap bands).

  python benchmarks/nasbench_replay.py --seeds 30 --out benchmarks/nasbench/replay   # make bench-replay
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nas.bench.experiment import ARMS, BUDGETS, Setting, compare, family_hypervolume, markdown, run_arms, \
    trial_equivalent  # noqa: E402

DEFAULT_ARMS = "engine,engine-nostrata,engine-nowarm,engine-moasha-rule,nsga2,random,random-halving,syne-moasha"
_ARGS: dict[str, Any] = {}


def make_state() -> dict[str, Any]:
    """Once (in the parent; forked workers inherit it): the table, the surrogate, the cost model, the task's plan."""
    import pandas as pd

    from nas.bench.costs import fit_cost_model
    from nas.bench.load import load_table
    from nas.bench.source import TableSource
    from nas.bench.surrogate import fit_surrogate
    from nas.bench.table import TASKS, task_plan

    task = _ARGS["task"]
    frame = load_table(task)
    plan, _ = task_plan(TASKS[task])
    counted = [frame[["spec_key", "spec", "macs", "param_count"]]]
    costs_file = ROOT / "benchmarks" / "nasbench" / "costs.parquet"  # counted at one input channel
    if costs_file.exists() and plan.data.in_channels == 1:
        counted.append(pd.read_parquet(costs_file))
    surrogate = fit_surrogate(frame, _ARGS["surrogate"])
    cost_model = fit_cost_model(pd.concat(counted, ignore_index=True))

    source = TableSource(frame, plan.space, plan.data.in_channels, plan.config.image_size, predict=surrogate.predict_one,
                         costs=cost_model)
    return {"plan": plan, "source": source, "family_hv": family_hypervolume(frame),
            "arms": {**ARMS, "syne-moasha": syne_moasha}}


def syne_moasha(plan: Any, source: Any, seed: int, budget: float) -> Any:
    """Random proposals, Syne Tune's MOASHA stopping after each epoch (search_vs_family.py's arm (d))."""
    from nas.bench.replay import Arm, replay
    from search_vs_family_parts.moasha import MoashaPort, moasha_scheduler

    epochs = plan.config.epochs
    scheduler = moasha_scheduler(len(plan.objectives.names) - 1, epochs, grace=1, eta=3, seed=seed)
    arm = Arm("syne-moasha", sampler="random", early_stop="none", warm_start="none", cost_strata=0)
    return replay(plan, source, arm, seed, budget, port=lambda study, trial: MoashaPort(study, trial, scheduler, epochs))


def figure(summary: dict[str, Any], budgets: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, entry in summary.items():
        cells = [entry["budgets"][b] for b in budgets]
        ax.plot(budgets, [c["median"] for c in cells], marker="o", label=arm, lw=2.5 if arm == "engine" else 1.2)
        ax.fill_between(budgets, [c["low"] for c in cells], [c["high"] for c in cells], alpha=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("compute (default-trial equivalents, single-thread CPU seconds)")
    ax.set_ylabel("hypervolume (test Dice x log10 MACs, ref (0, 10))")
    ax.set_title("Replayed search arms: median over seeds, 95 % bootstrap band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    for suffix in ("png", "svg"):
        fig.savefig(out / f"replay.{suffix}", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated, of {', '.join([*ARMS, 'syne-moasha'])}")
    parser.add_argument("--seeds", type=int, default=30, help="seeds 0..N-1 per arm (paired across arms)")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="default-trial equivalents")
    parser.add_argument("--surrogate", default="rf", help="surrogate model (nas.bench.surrogate.MODELS, or auto)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "nasbench" / "replay")
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS and a != "syne-moasha"]
    if unknown or args.seeds < 1:
        parser.exit(2, f"nasbench_replay: unknown arm(s) {', '.join(unknown)}\n" if unknown else
                    "nasbench_replay: --seeds must be >= 1\n")
    try:
        budgets = [int(b) for b in args.budgets.split(",")]
    except ValueError:
        budgets = []
    if not budgets or budgets != sorted(set(budgets)) or budgets[0] < 1:
        parser.exit(2, f"nasbench_replay: --budgets must be increasing whole numbers >= 1, got {args.budgets!r}\n")
    _ARGS.update(task=args.task, surrogate=args.surrogate)
    from nas.bench.load import load_table

    frame = load_table(args.task)
    setting = Setting(unit_s=trial_equivalent(frame), budgets=tuple(budgets))
    print(f"table {args.task}: {len(frame)} rows; one default-trial equivalent = {setting.unit_s:.1f} CPU s; "
          f"family hypervolume {family_hypervolume(frame):.3f}; {len(arms)} arms x {args.seeds} seeds", flush=True)
    started = time.perf_counter()
    results = run_arms(make_state, arms, range(args.seeds), setting, workers=args.workers,
                       log=lambda line: print(line, flush=True))
    wall = time.perf_counter() - started
    summary = compare(results, budgets)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"task": args.task, "rows": len(frame), "unit_s": setting.unit_s, "budgets": budgets,
              "family_hypervolume": family_hypervolume(frame), "wall_s": wall, "results": results, "summary": summary}
    (args.out / "replay.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    table = markdown(summary, budgets)
    (args.out / "replay.md").write_text(table + "\n", encoding="utf-8")
    figure(summary, budgets, args.out)
    print(table)
    print(f"\n{len(results)} replays in {wall:.0f} s wall; {args.out}/replay.{{json,md,png,svg}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
