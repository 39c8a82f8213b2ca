"""Issue 14, the benchmark that decides: does the search beat a hand-scaled baseline family?

Per dataset and seed, at the same wall budget (``--budget-s``, as ``nas-search --timeout``: a search ends
after the trial running when it is spent), same data, split, recipe and seed:

(a) ``engine``: today's defaults (TPE, --warm-start family, the default early stopping, --baselines family);
(b) ``random``: ``--sampler random --early-stop none --warm-start none --baselines none``;
(c) ``family``: the family's own front, from (a)'s run: its warm-start trials (the space's nearest points
    to the planned members, never early-stopped) plus, as family baselines of their planned specs, the
    members the budget left queued (trained after it; their compute is not (a)'s);
(d) ``moasha``: Syne Tune's ``MOASHA`` (``pip install .[bench]``) decides stop/continue only: after each
    epoch a trial reports (epoch, 1 - best Dice so far, its costs) and stops on STOP. Configs come from
    Optuna's RandomSampler with the seed, the sampler of (b) (MOASHA's own ``suggest`` draws at random
    too), so (b) vs (d) isolates the stopping. Trials run through the engine's trial policy
    (``run_policy`` with an ``OptunaPort`` that asks MOASHA), so costs, training and records are (a)'s.
    Syne Tune 0.16's bracket misreads the priority order (``moasha_scheduler``): fixed by default.

(a), (b), (d) run side by side, one process and one torch thread each (they see the same load).
Hypervolume: ``moocore.hypervolume`` of (1 - Dice, log10 MACs), minimised, against (1, log10 of the
largest MACs any arm trained on the dataset + 0.1), printed. Compute to reach the family: the trials'
wall seconds (every trial, pruned and failed too) and trained epochs summed in trial order until the
running front's hypervolume first reaches the family's (same seed); for (a) with its family trials'
points left out (their compute kept), since its full front contains the family. ``--finalize`` runs
``nas-finalize`` on each (a) run (finalists from the searched front, family members as baselines).

    # plumbing only (5-7 minutes on a busy 2-core machine):
    nice -n 10 .venv/bin/python benchmarks/search_vs_family.py --smoke --finalize --out /tmp/svf_smoke
    # the real run, on a quiet machine with >= 4 cores (3 arms side by side + the system):
    .venv/bin/python benchmarks/search_vs_family.py --seeds 0,1,2 \
        --budget-s 900,cvc_clinicdb_sample=1800,isbi2012_em=3600 --finalize --final-seeds 3 --final-epochs 15

Duration (estimated, not measured): an epoch covers the training area, 96 patches on synthetic, 297
(RGB) on the CVC sample and 1,024 on ISBI at 64 px, so trials there are ~3x and ~10x longer; the
6-member family must train well inside (a)'s budget, hence the budgets above. Searches: 3 seeds x
(900 + 1,800 + 3,600 s + ~2 min each) ~= 5.5 h. Finalist stage per (a) run: (3 finalists + 6 family
members) x 3 seeds x 15 epochs, ~15 min on synthetic to ~2 h on ISBI on one thread: ~7 h in all
(``--finalize-threads 4`` roughly halves it). Prints one JSON blob (also ``<out>/search_vs_family.json``)
and the Markdown lines for benchmarks/RESULTS.md, with each goal of issue 14 met / not met / not measured.
Run so far only at a reduced scale (480-600 s per arm, 3-4 short epochs; commands and results in
benchmarks/RESULTS.md); ``--reread`` summarises runs already on disk without training.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # the parts' package sits next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_vs_family_parts.arms import ARM_FLAGS, DATASETS, SEARCHED
from search_vs_family_parts.fronts import (Step, dataset_summary, family_points, hypervolume, median_reach, reach,
                                           seed_result, steps, test_points)
from search_vs_family_parts.moasha import MoashaPort, moasha_scheduler, moasha_search
from search_vs_family_parts.runs import budgets, dataset, finalize
from search_vs_family_parts.verdicts import (GOALS, LIVE_GOAL, dominating_pairs, goals, half_cost_match, live_goal,
                                             markdown)

__all__ = ["DATASETS", "GOALS", "MoashaPort", "Step", "budgets", "dataset", "dataset_summary", "dominating_pairs",
           "family_points", "finalize", "goals", "half_cost_match", "hypervolume", "live_goal", "main", "markdown",
           "median_reach", "moasha_scheduler", "moasha_search", "reach", "seed_result", "steps", "test_points"]  # tests/test_search_vs_family.py reads them


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--arms", default=",".join(SEARCHED), help=f"searching arms, side by side: {', '.join(ARM_FLAGS)} "
                        "(gp: (a) with --sampler gp; compact: (a) with --config compact; nowarm: (a) without the family; full: (a) again, the "
                        "control of a variant run in another invocation)")
    parser.add_argument("--family-rungs", type=int, default=3, help="nas-search's, for every arm with the family")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated search seeds")
    parser.add_argument("--budget-s", default="600", help="wall seconds of each arm (--timeout): one number, "
                        "and/or DATASET=SECONDS, e.g. 900,isbi2012_em=3600")
    parser.add_argument("--patches-per-epoch", type=int, default=None, help="nas-search's (default: the covering epoch)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each arm's process")
    parser.add_argument("--moasha-grace", type=int, default=1, help="MOASHA grace period (first rung), epochs")
    parser.add_argument("--moasha-eta", type=float, default=3.0, help="MOASHA reduction factor")
    parser.add_argument("--moasha-priority", choices=("ranked", "shipped"), default="ranked",
                        help="ranked: each trial's place in MOASHA's non-dominated order (shipped: Syne Tune 0.16's "
                        "order-as-priority bug, see moasha_scheduler)")
    parser.add_argument("--no-moasha", action="store_true", help="leave arm (d) out (syne-tune not installed)")
    parser.add_argument("--ref-log10-macs", type=float, default=None, help="fixed reference log10 MACs (default: "
                        "log10 of the largest MACs any arm trained on the dataset + 0.1)")
    parser.add_argument("--finalize", action="store_true", help="run nas-finalize on every (a) run (costly)")
    parser.add_argument("--finalists", type=int, default=3)
    parser.add_argument("--final-seeds", type=int, default=2)
    parser.add_argument("--final-epochs", type=int, default=None, help="default: 3x --epochs (nas-finalize's)")
    parser.add_argument("--finalize-threads", type=int, default=1, help="torch threads of the finalist stage")
    parser.add_argument("--smoke", action="store_true", help="synthetic, 1 seed, 20 s, 2 epochs, 32 px, a tiny "
                        "plain U-Net space, small finalist stage: checks the plumbing only")
    parser.add_argument("--reread", action="store_true", help="search nothing: summarise the runs already under "
                        "--out (same --datasets/--seeds/--arms), e.g. of an invocation stopped before it printed; "
                        "with --finalize, run the finalist stage on them")
    parser.add_argument("--out", default="runs/bench_search_vs_family")
    args = parser.parse_args(argv)
    if args.smoke:
        args.datasets, args.seeds, args.budget_s, args.epochs, args.image_size = "synthetic", "0", "20", 2, 32
        args.final_seeds, args.final_epochs, args.finalists = 1, 1, 1
    unknown = sorted(set(args.datasets.split(",")) - set(DATASETS))
    if unknown:
        parser.error(f"--datasets: unknown {unknown[0]!r}; known: {', '.join(DATASETS)}")
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if "engine" not in args.arms or set(args.arms) - set(ARM_FLAGS):
        parser.error(f"--arms: needs engine (the family comes from its run) and only {', '.join(ARM_FLAGS)}, "
                     f"got {','.join(args.arms)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be integers such as 0,1,2, got {args.seeds!r}")
    try:
        args.budgets = budgets(args.budget_s, args.datasets.split(","))
    except ValueError as error:
        parser.error(f"--budget-s: {error}")
    if not args.no_moasha:
        try:
            import syne_tune.optimizer.schedulers.multiobjective.moasha  # noqa: F401
        except ImportError as error:
            parser.error(f"arm (d) needs syne-tune ({error}): pip install .[bench], or pass --no-moasha")
    import torch

    from nas.io import atomic_write_json

    torch.set_num_threads(args.finalize_threads)  # the finalist stage runs in this process
    names = args.datasets.split(",")
    rows = [row for row in (dataset(name, args) for name in names) if row is not None]
    summaries = {row["dataset"]: row["summary"] for row in rows}
    blob = {"date": str(datetime.date.today()), "argv": sys.argv[1:] if argv is None else argv,
            "budget_s": args.budgets, "epochs": args.epochs, "image_size": args.image_size,
            "threads_per_arm": args.threads, "datasets": rows,
            "goals": goals(summaries) if rows else {}}
    if rows:
        blob["goals"][LIVE_GOAL] = "; ".join(live_goal(row) for row in rows)
    if args.smoke:  # tiny space, 20 s, 2 epochs: the verdicts say nothing about the engine
        blob["goals"] = {goal: f"not measured (--smoke, plumbing only; computed: {text})"
                         for goal, text in blob["goals"].items()}
    atomic_write_json(Path(args.out) / "search_vs_family.json", blob)
    print(json.dumps(blob, indent=1, default=str))
    print(f"\n### Search vs the baseline family ({blob['date']}; {args.budget_s} s per arm, {args.epochs} epochs, "
          f"{args.image_size} px, {args.threads} torch thread(s) per arm, arms side by side)\n")
    print(f"`.venv/bin/python benchmarks/search_vs_family.py {' '.join(blob['argv'])}`\n")
    for row in rows:
        print("\n".join(markdown(row)) + "\n")
    for goal, verdict in blob["goals"].items():
        print(f"- {goal}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
