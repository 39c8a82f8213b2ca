#!/usr/bin/env python3
"""Is a replay faithful to a live search? Small live searches next to their replays (issue 24).

The live runs search the table's own task: ``nas-search --space resunet --seed 0 --search-seed S
--trials 20`` (the engine's defaults, and plain random search with ``--sampler random --early-stop none
--warm-start none --baselines none --cost-strata 0``), so the data split and the training seed are the
table's and only the search differs by ``S``. Each is replayed with the same arm, search seed and
``--trials`` (``nas.bench.replay``, table rows where the table has the architecture, the surrogate
elsewhere). Compared per run: the hypervolume of (test Dice, log10 MACs) of the front chosen on
validation; the **noise floor** is how far that hypervolume moves between two trainings of the same
trials (each trial's validation and test Dice moved by the paired seed differences of the table's 3-seed
architectures, 2,000 draws: the 95 % interval of the difference). Per trial: live Dice of table architectures against their rows, the
surrogate's prediction against the live Dice of the rest, and for random search whether replay and live
proposed the same architectures.

  python benchmarks/nasbench_faithful.py --runs engine:/work/faith/engine-s0:0,random:/work/faith/random-s0:0 \
      --out benchmarks/nasbench/faithful
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nas.bench.replay import Event, front_hypervolume  # noqa: E402
from nas.bench.table import spec_key  # noqa: E402


def live_events(run_dir: Path) -> tuple[list[Event], list[Any]]:
    """The run's trials as replay events (finished ones with their validation and test Dice) and records."""
    import nas
    from nas.results.family_records import family_name

    records = list(nas.open_run(run_dir).records)
    events = []
    for record in sorted(records, key=lambda r: r.number):
        test = ((record.result.quality.splits or {}).get("test") or {}).get("dice")
        ok = record.finished and record.macs and record.dice is not None and test is not None
        events.append(Event(record.number, spec_key(record.spec) if record.spec else "", 0.0, 0.0, bool(ok),
                            int(record.macs or 0), float(record.dice) if ok else None,
                            float(test) if ok else None, family_name(record)))
    return events, records


def seed_noise(frame: Any) -> np.ndarray:
    """(validation, test) Dice of seeds 1 and 2 minus seed 0, per 3-seed architecture of the table."""
    out = []
    for _, rows in frame.groupby("arch_id"):
        base = rows[rows["seed"] == 0]
        if len(rows) < 2 or base.empty:
            continue
        for _, row in rows[rows["seed"] != 0].iterrows():
            out.append((row["final_val_dice"] - base["final_val_dice"].iloc[0],
                        row["final_test_dice"] - base["final_test_dice"].iloc[0]))
    return np.asarray(out, dtype=float)


def noise_interval(events: Sequence[Event], noise: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the hypervolume difference between two trainings of the run's architectures: each
    of two copies moves every finished trial's Dice by a table seed difference over sqrt(2) (one seed's
    share of a difference between two), so the interval is symmetric and as wide as the seed makes it."""
    rng = np.random.default_rng(seed)
    done = [e for e in events if e.finished]

    def moved() -> float:
        shifts = noise[rng.integers(len(noise), size=len(done))] / math.sqrt(2)
        return front_hypervolume([Event(e.trial, e.key, 0.0, 0.0, True, e.macs, e.val_dice + dv, e.test_dice + dt,
                                        e.family) for e, (dv, dt) in zip(done, shifts)], math.inf)

    changes = [moved() - moved() for _ in range(draws)]
    return float(np.percentile(changes, 2.5)), float(np.percentile(changes, 97.5))


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic) if len(a) > 2 else math.nan


def compare_run(state: dict[str, Any], arm: str, run_dir: Path, seed: int, noise: np.ndarray) -> dict[str, Any]:
    from nas.bench.replay import replay

    plan, source = state["plan"], state["source"]
    live, records = live_events(run_dir)
    trials = sum(e.finished for e in live)
    replayed = replay(plan, source, state["arms"][arm], seed, None, max_trials=trials, keep_records=True)
    low, high = noise_interval(live, noise, seed=seed)
    hv_live, hv_replay = front_hypervolume(live, math.inf), front_hypervolume(replayed.events, math.inf)
    per_trial = []
    for record, event in zip(sorted(records, key=lambda r: r.number), live):
        if not event.finished:
            continue
        curve = source(plan.space.spec_from_dict(record.spec))
        best = max(range(len(curve.val_dice)), key=lambda i: (curve.val_dice[i], -i))
        per_trial.append({"trial": event.trial, "family": event.family, "source": curve.source,
                          "macs_live": event.macs, "macs_replay": int(curve.costs["macs"]),
                          "val_live": event.val_dice, "val_replay": curve.val_dice[best],
                          "test_live": event.test_dice, "test_replay": curve.final_test_dice})
    # the sampled params in trial order (an early-stopped live record keeps no spec, its params it does)
    live_params = [r.params for r in sorted(records, key=lambda r: r.number)]
    replay_params = [r.params for r in replayed.records]
    same = sum(a == b for a, b in zip(live_params, replay_params))
    first = next((i for i, (a, b) in enumerate(zip(live_params, replay_params)) if a != b), None)
    return {"arm": arm, "seed": seed, "run": str(run_dir), "trials": trials,
            "live": {"hypervolume": hv_live, "started": len(live), "early_stopped": len(live) - trials},
            "replay": {"hypervolume": hv_replay, "started": len(replayed.events),
                       "early_stopped": sum(not e.finished for e in replayed.events),
                       "surrogate_share": sum(e.source == "surrogate" for e in replayed.events) / max(1, len(replayed.events))},
            "difference": hv_replay - hv_live, "noise_floor": [low, high],
            "within_noise": low <= hv_replay - hv_live <= high,
            "same_proposals": f"{same} of {min(len(live_params), len(replay_params))}", "first_different": first,
            "per_trial": per_trial}


def summary_rows(results: list[dict[str, Any]]) -> str:
    lines = ["| arm | search seed | trials | HV live | HV replay | replay - live | noise floor (95 %) | within | "
             "early stops live / replay | same proposals (first different) | replay from surrogate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['trials']} | {r['live']['hypervolume']:.3f} | "
                     f"{r['replay']['hypervolume']:.3f} | {r['difference']:+.3f} | "
                     f"[{r['noise_floor'][0]:+.3f}, {r['noise_floor'][1]:+.3f}] | {'yes' if r['within_noise'] else 'no'} | "
                     f"{r['live']['early_stopped']} / {r['replay']['early_stopped']} | {r['same_proposals']} "
                     f"({'-' if r['first_different'] is None else 'trial ' + str(r['first_different'])}) | "
                     f"{r['replay']['surrogate_share']:.0%} |")
    return "\n".join(lines)


def trial_rows(results: list[dict[str, Any]]) -> str:
    """How the replay's answers for the live runs' own architectures compare with what training measured."""
    rows = [t for r in results for t in r["per_trial"]]
    out = []
    for source in ("table", "surrogate"):
        chosen = [t for t in rows if t["source"] == source]
        if not chosen:
            continue
        live, replayed = [t["test_live"] for t in chosen], [t["test_replay"] for t in chosen]
        errors = [abs(a - b) for a, b in zip(live, replayed)]
        mac_errors = [abs(t["macs_replay"] / t["macs_live"] - 1) for t in chosen]
        out.append(f"- {source}: {len(chosen)} live trials; test Dice |replay - live| median {np.median(errors):.4f}, "
                   f"max {max(errors):.4f}; Kendall tau {kendall(live, replayed):.2f}; MACs error median "
                   f"{np.median(mac_errors):.1%}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="ARM:RUN_DIR:SEARCH_SEED[,...] (arms of nas.bench.experiment)")
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--surrogate", default="rf")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "nasbench" / "faithful")
    args = parser.parse_args(argv)
    try:
        runs = [(arm, Path(folder), int(seed)) for arm, folder, seed in
                (item.rsplit(":", 2) for item in args.runs.split(",") if item)]
    except ValueError:
        parser.exit(2, f"nasbench_faithful: --runs wants ARM:RUN_DIR:SEED items, got {args.runs!r}\n")
    import nasbench_replay

    nasbench_replay._ARGS.update(task=args.task, surrogate=args.surrogate)
    state = nasbench_replay.make_state()
    missing = [arm for arm, folder, _ in runs if arm not in state["arms"] or not (folder / "study.db").exists()]
    if missing:
        parser.exit(2, f"nasbench_faithful: unknown arm or no run: {', '.join(missing)}\n")
    from nas.bench.load import load_table

    noise = seed_noise(load_table(args.task))
    results = [compare_run(state, arm, folder, seed, noise) for arm, folder, seed in runs]
    text = summary_rows(results) + "\n\n" + trial_rows(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faithful.json").write_text(json.dumps({"task": args.task, "noise_pairs": len(noise),
                                                        "results": results}, indent=1, default=str) + "\n")
    (args.out / "faithful.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
