"""Which early-stopping rule and rungs to default to, measured on full training curves.

(i) How well the Dice at a rung ranks the final Dice: over trials trained to the full ``--epochs``
WITHOUT early stopping, Kendall's tau and Spearman's rho between the best validation Dice up to epoch
e (what a rung compares) and the final Dice (the best epoch's, the trial's objective), with a
bootstrap 90 % interval over trials.

(ii) The rules at equal compute, by REPLAY: each seed is a random order of the same trained trials;
each rule walks them in that order, and at every rung asks ``nas.engine.early_stop.rung_verdict`` (the
code the search runs) with the peers a live search would have had (the earlier trials that reached
that rung, stopped ones included). A stopped trial costs the epochs it ran; a trial goes on while the
budget (in trained epochs, or in measured training seconds) lasts. Score: hypervolume of the front of
the finished trials, (Dice, log10 MACs) against the fixed reference (Dice 0, 10^11 MACs), computed by
``moocore`` (``pip install .[bench]``). Replay costs no training and is fair to every rule: each sees
the same curves; it cannot show what a sampler would have proposed differently after other stops.

    # the curves (one search without early stopping; random sampler, so trials are independent):
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/nas-search --sampler random --early-stop none --trials 40 \\
        --epochs 10 --image-size 64 --seed 0 --device cpu --out /tmp/es_bench/curves_s0
    .venv/bin/python benchmarks/early_stopping.py /tmp/es_bench/curves_s0 --seeds 20
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

import moocore
import numpy as np
import optuna
from optuna.trial import TrialState
from scipy.stats import kendalltau, spearmanr

from nas.engine.early_stop import RungPoint, RungPolicy, early_stop_policy, rung_dice, rung_verdict
from nas.engine.optuna_adapter.study import make_storage, run_storage
from reports.hypervolume import REFERENCE

# name -> (rule, rungs); rungs () = the default 1, 3, 9 below the epochs
ARMS = {
    "halving 1,3,9 (today)": ("halving", ()),
    "halving 3,9": ("halving", (3, 9)),
    "halving 3": ("halving", (3,)),
    "halving 5": ("halving", (5,)),
    "moasha 1,3,9": ("moasha", ()),
    "moasha 3,9": ("moasha", (3, 9)),
    "moasha 3": ("moasha", (3,)),
    "moasha 5": ("moasha", (5,)),
    "none": ("none", ()),
}


@dataclass(frozen=True)
class Curve:
    number: int
    dice: tuple[float, ...]  # validation Dice per epoch
    costs: tuple[float, ...]  # the study's cost objectives (MACs for dice,macs)
    macs: float
    seconds: float  # measured training (+ per-epoch validation) seconds of the whole curve

    @property
    def final(self) -> float:
        return max(self.dice)


def load_curves(run: Path) -> tuple[list[Curve], int]:
    """Finished trials with a full curve; the run's epochs (the longest curve)."""
    url = run_storage(run)
    if url is None:
        raise SystemExit(f"{run}: no study.db or study.journal")
    storage = make_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    study = optuna.load_study(study_name=names[0], storage=storage)
    curves = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        metrics = attrs.get("metrics") or {}
        if attrs.get("epoch_dice") and attrs.get("objective_costs") and metrics.get("macs"):
            curves.append(Curve(trial.number, tuple(attrs["epoch_dice"]), tuple(attrs["objective_costs"]),
                                float(metrics["macs"]), float(attrs.get("train_seconds") or math.nan)))
    epochs = max(len(c.dice) for c in curves)
    full = [c for c in curves if len(c.dice) == epochs]
    for curve in full:  # the objective is the best epoch's Dice: the curve must say the same
        stored = study.trials[curve.number].values[0]
        assert abs(curve.final - stored) < 1e-6, (curve.number, curve.final, stored)
    return full, epochs


def rank_correlations(curves: list[Curve], epochs: int, rng: np.random.Generator, boot: int = 1000) -> list[dict]:
    """Per epoch: tau and rho of the rung Dice (best so far) against the final Dice, with 90 % bootstrap CIs."""
    final = np.array([c.final for c in curves])
    rows = []
    for epoch in range(1, epochs + 1):
        at = np.array([rung_dice(c.dice, epoch) for c in curves])
        taus, rhos = [], []
        for _ in range(boot):
            pick = rng.integers(0, len(curves), len(curves))
            taus.append(kendalltau(at[pick], final[pick]).statistic)
            rhos.append(spearmanr(at[pick], final[pick]).statistic)
        rows.append({"epoch": epoch, "tau": kendalltau(at, final).statistic, "rho": spearmanr(at, final).statistic,
                     "tau_ci": tuple(np.nanpercentile(taus, [5, 95])), "rho_ci": tuple(np.nanpercentile(rhos, [5, 95]))})
    return rows


def hypervolume(points: list[tuple[float, float]]) -> float:
    """(Dice, MACs) points -> hypervolume of (Dice, log10 MACs) against ``reports.hypervolume.REFERENCE``."""
    if not points:
        return 0.0
    data = np.array([(dice, math.log10(macs)) for dice, macs in points])
    return float(moocore.hypervolume(data, ref=np.array(REFERENCE), maximise=[True, False]))


@dataclass(frozen=True)
class Replay:
    hypervolume: float
    used: float  # budget units spent (epochs or seconds)
    started: int  # trials started
    finished: int
    stopped: int
    lost_front: int  # stopped trials that lie on the front of all the curves (a wrong stop)


def replay(order: list[Curve], policy: RungPolicy | None, epochs: int, budget: float, unit: str,
           pool_front: set[int], finish: int | None = None) -> Replay:
    """Walk the trials in ``order`` under ``policy`` until ``budget`` (epochs or seconds) is spent, or
    until ``finish`` trials finished (how ``--trials`` ends a search)."""
    reached: dict[int, list[RungPoint]] = {}  # rung -> the earlier trials that reached it
    used, finished, stopped, lost, started = 0.0, [], 0, 0, 0
    for curve in order:
        if used >= budget or (finish is not None and len(finished) >= finish):
            break
        started += 1
        per_epoch = 1.0 if unit == "epochs" else curve.seconds / len(curve.dice)
        ran, done, stopped_here = 0, True, False
        for epoch in range(1, epochs + 1):
            if used + per_epoch > budget + 1e-9:  # the budget ends inside this trial: it does not finish
                done = False
                break
            used += per_epoch
            ran = epoch
            if policy is not None and epoch in policy.rungs:
                peers = reached.get(epoch, [])
                reason = rung_verdict(policy, epoch, curve.dice[:epoch], curve.costs, peers)
                reached.setdefault(epoch, []).append(RungPoint(curve.number, rung_dice(curve.dice, epoch), curve.costs))
                if reason is not None:
                    done, stopped_here = False, True
                    stopped += 1
                    lost += curve.number in pool_front
                    break
        if done and ran == epochs:
            finished.append(curve)
        elif not done and stopped_here is False:
            break  # the budget ended inside this trial: the search is over
    hv = hypervolume([(c.final, c.macs) for c in finished])
    return Replay(hv, used, started, len(finished), stopped, lost)


def front_numbers(curves: list[Curve]) -> set[int]:
    """Trials on the (final Dice, MACs) front of every curve."""
    front = set()
    for c in curves:
        if not any(o.final >= c.final and o.macs <= c.macs and (o.final > c.final or o.macs < c.macs) for o in curves):
            front.add(c.number)
    return front


def spread(values: list[float]) -> str:
    return (f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}] "
            f"mean {statistics.fmean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of searches with --early-stop none")
    parser.add_argument("--seeds", type=int, default=20, help="random trial orders replayed per rule")
    parser.add_argument("--budgets", default="0.5,0.75", help="budgets as shares of what training every trial fully costs")
    parser.add_argument("--unit", choices=("epochs", "seconds"), default="epochs")
    parser.add_argument("--finish", type=int, default=12, help="(iii): replay until this many trials finished")
    args = parser.parse_args()

    curves, epochs = [], None
    for run in args.runs:
        found, run_epochs = load_curves(run)
        if epochs not in (None, run_epochs):
            raise SystemExit(f"{run}: {run_epochs} epochs, the others {epochs}")
        epochs = run_epochs
        offset = 10_000 * len(curves)
        curves += [Curve(c.number + offset, c.dice, c.costs, c.macs, c.seconds) for c in found]
    print(f"# {len(curves)} trials with {epochs}-epoch curves from {', '.join(map(str, args.runs))}; "
          f"{platform.node()}, optuna {optuna.__version__}, moocore {moocore.__version__}")
    rng = np.random.default_rng(0)
    print("\n## (i) rank correlation of the rung Dice (best so far) with the final Dice\n")
    print("| epoch | Kendall tau [90 % CI] | Spearman rho [90 % CI] |\n|---:|---|---|")
    for row in rank_correlations(curves, epochs, rng):
        print(f"| {row['epoch']} | {row['tau']:.2f} [{row['tau_ci'][0]:.2f}, {row['tau_ci'][1]:.2f}] | "
              f"{row['rho']:.2f} [{row['rho_ci'][0]:.2f}, {row['rho_ci'][1]:.2f}] |")

    pool_front = front_numbers(curves)
    full_cost = sum(len(c.dice) if args.unit == "epochs" else c.seconds for c in curves)
    print(f"\nfront of all {len(curves)} curves: {len(pool_front)} trials, hypervolume "
          f"{hypervolume([(c.final, c.macs) for c in curves]):.4f}")
    orders = [list(rng.permutation(len(curves))) for _ in range(args.seeds)]
    for share in (float(s) for s in args.budgets.split(",")):
        budget = share * full_cost
        print(f"\n## (ii) replay at a budget of {budget:.0f} {args.unit} ({share:.0%} of training all "
              f"{len(curves)} trials fully), {args.seeds} trial orders\n")
        print("| rule | hypervolume: median [min, max] mean ± sd | vs none (median of paired differences) | "
              f"wins-losses vs none | vs today (median difference, wins-losses) | {args.unit} used (median) | trials started / finished / stopped (median) | "
              "wrong stops (front trials stopped, all orders) |")
        print("|---|---|---:|---:|---|---:|---|---:|")
        results = {}
        for name, (rule, rungs) in ARMS.items():
            policy = early_stop_policy(rule, epochs, rungs)
            results[name] = [replay([curves[i] for i in order], policy, epochs, budget, args.unit, pool_front)
                             for order in orders]
        base, today = ([r.hypervolume for r in results[k]] for k in ("none", "halving 1,3,9 (today)"))
        for name, runs in results.items():
            hv = [r.hypervolume for r in runs]
            diffs = [a - b for a, b in zip(hv, base)]
            wins = sum(d > 1e-12 for d in diffs)
            losses = sum(d < -1e-12 for d in diffs)
            versus = [a - b for a, b in zip(hv, today)]
            print(f"| {name} | {spread(hv)} | {statistics.median(diffs):+.3f} | {wins}-{losses} | "
                  f"{statistics.median(versus):+.3f}, {sum(d > 1e-12 for d in versus)}-{sum(d < -1e-12 for d in versus)} | "
                  f"{statistics.median(r.used for r in runs):.0f} | "
                  f"{statistics.median(r.started for r in runs):.0f} / {statistics.median(r.finished for r in runs):.0f}"
                  f" / {statistics.median(r.stopped for r in runs):.0f} | {sum(r.lost_front for r in runs)} |")

    target = args.finish
    print(f"\n## (iii) until {target} trials finished (how --trials ends a search), {args.seeds} trial orders\n")
    print(f"| rule | {args.unit} used: median [min, max] | vs today | hypervolume median [min, max] | "
          "orders that ran out of trials |\n|---|---|---:|---|---:|")
    today = None
    for name, (rule, rungs) in ARMS.items():
        runs = [replay([curves[i] for i in order], early_stop_policy(rule, epochs, rungs), epochs, math.inf,
                       args.unit, pool_front, finish=target) for order in orders]
        used = [r.used for r in runs]
        today = today or statistics.median(used)
        short = sum(r.finished < target for r in runs)
        print(f"| {name} | {statistics.median(used):.0f} [{min(used):.0f}, {max(used):.0f}] | "
              f"{statistics.median(used) / today:.2f}x | {statistics.median(r.hypervolume for r in runs):.3f} "
              f"[{min(r.hypervolume for r in runs):.3f}, {max(r.hypervolume for r in runs):.3f}] | {short} |")


if __name__ == "__main__":
    main()
