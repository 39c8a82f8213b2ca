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
"""
from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from nas.engine.early_stop import EarlyStopped, rung_dice
from nas.engine.optuna_adapter.search import OptunaPort

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {"synthetic": "synthetic", "isbi2012_em": str(SHARED / "isbi2012_em" / "train"),
            "cvc_clinicdb_sample": str(SHARED / "cvc_clinicdb_sample")}
# --smoke: a tiny plain U-Net space whose widths stay free, so the family (unet-16) can still be scaled
SMOKE_FIX = {"depth": 3, "blocks_per_stage": 1, "block": "plain", "aspp": False, "attention": "none",
             "multiscale_input": False, "deep_supervision": False}
SEARCHED = ("engine", "random", "moasha")  # the arms that run a search
RANDOM = {"sampler": "random", "early_stop": "none", "warm_start": "none", "baselines": ()}
ARM_FLAGS = {"engine": {}, "random": RANDOM, "moasha": RANDOM}  # nas.SearchConfig fields over today's defaults


def search_config(arm: str, source: str, out: Path, args: argparse.Namespace, seed: int, budget: float):
    import nas

    return nas.SearchConfig(data=source, trials=100_000, epochs=args.epochs, image_size=args.image_size, seed=seed,
                            device="cpu", out=out, timeout=budget, fix=SMOKE_FIX if args.smoke else {},
                            patches_per_epoch=args.patches_per_epoch, **ARM_FLAGS[arm])


def run_arm(arm: str, source: str, out: Path, args: argparse.Namespace, seed: int, budget: float) -> dict[str, Any]:
    """One arm in its own process (one torch thread); its console output goes to ``<out>.log``."""
    import torch

    torch.set_num_threads(args.threads)
    config = search_config(arm, source, out, args, seed, budget)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(out.with_suffix(".log"), "w") as log, redirect_stdout(log), redirect_stderr(log):
        faulthandler.enable(log)  # a crash in native code leaves its traceback in the arm's log
        if arm == "moasha":
            status = moasha_search(config, args)
            argv = ["(in-process) MOASHA over", *config.to_argv()]
        else:
            import nas

            status = nas.run_search(config).status
            argv = ["nas-search", *config.to_argv()]
        seconds = time.monotonic() - started
        trained = complete_family(config) if arm == "engine" else []
    return {"argv": argv, "seconds": seconds, "status": status, "family_trained_after_budget": trained}


def complete_family(config: Any) -> list[str]:
    """Train, as family baselines (their planned specs), the members the budget left queued in (a)'s
    study, so the family front (c) is whole whatever the budget; their compute is not (a)'s."""
    import optuna

    from nas.engine.baselines import train_family
    from nas.engine.family import FamilyMember
    from nas.engine.optuna_adapter.study import make_storage
    from nas.engine.optuna_adapter.warm_start import family_plan
    from nas.engine.trial import TrialSettings
    from nas.results.family import family_name
    from nas.run.search_plan import prepare

    plan = prepare(config)
    study = optuna.load_study(study_name=plan.study_name, storage=make_storage(plan.storage))
    trained = {family_name(r) for r in records_of(plan.out) if r.finished}
    missing = [FamilyMember.from_dict(m, plan.space) for m in family_plan(study) or [] if m["name"] not in trained]
    train_family(missing, plan.space, plan.data, TrialSettings(config.image_size, config.recipe()), plan.out)
    return [member.name for member in missing]


def moasha_scheduler(costs: int, epochs: int, grace: int, eta: float, seed: int, priority: str = "ranked") -> Any:
    """Syne Tune's MOASHA over (1 - Dice, the cost objectives), all minimised, rungs grace x eta^k below ``epochs``.

    ``ranked``: Syne Tune 0.16's ``Bracket`` reads the priority vector as each trial's priority, but
    ``NonDominatedPriority`` returns the non-dominated *order* (trial indices, best first), so the
    decision follows the index of the last-ordered trial: a trial that dominates every peer at its rung
    can be stopped (tests/test_search_vs_family.py shows it). ``ranked`` hands ``Bracket`` each
    trial's position in that same order; ``shipped`` keeps 0.16's behaviour."""
    import numpy as np
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

    class Ranked(NonDominatedPriority):
        def priority_unsafe(self, objectives: Any) -> Any:
            order = np.asarray(super().priority_unsafe(objectives))
            ranks = np.empty(len(order), dtype=int)
            ranks[order] = np.arange(len(order))
            return ranks

    np.random.seed(seed)  # the epsilon net inside a front starts from a random trial (numpy's global RNG)
    return MOASHA({}, metrics=["error", *[f"cost{i}" for i in range(costs)]], do_minimize=True, time_attr="epoch",
                  max_t=epochs, grace_period=grace, reduction_factor=eta, random_seed=seed,
                  multiobjective_priority=Ranked() if priority == "ranked" else None)


class MoashaPort(OptunaPort):
    """The engine's Optuna port, plus MOASHA: after each epoch the trial reports (epoch, 1 - best Dice so
    far, its costs) and stops where MOASHA says STOP (the policy records it as early-stopped)."""

    def __init__(self, study: Any, trial: Any, scheduler: Any, epochs: int) -> None:
        from syne_tune.backend.trial_status import Trial

        super().__init__(study, trial)
        self.scheduler, self.epochs, self.costs = scheduler, epochs, []
        self.tuned = Trial(trial_id=trial.number, config={}, creation_time=datetime.datetime.now())
        scheduler.on_trial_add(self.tuned)

    def costs_known(self, costs: list[float]) -> None:
        super().costs_known(costs)
        self.costs = list(costs)

    def epoch_done(self, curve: list[float], train_seconds: float) -> None:
        from syne_tune.optimizer.scheduler import SchedulerDecision

        super().epoch_done(curve, train_seconds)
        epoch = len(curve)
        result = {"epoch": epoch, "error": 1.0 - rung_dice(curve, epoch),
                  **{f"cost{i}": cost for i, cost in enumerate(self.costs)}}
        if epoch >= self.epochs:
            self.scheduler.on_trial_complete(self.tuned, result)
        elif self.scheduler.on_trial_result(self.tuned, result) == SchedulerDecision.STOP:
            raise EarlyStopped(f"early-stopped at epoch {epoch} by Syne Tune's MOASHA "
                               f"(1 - Dice {result['error']:.3f})", epoch)


def moasha_search(config: Any, args: argparse.Namespace) -> str:
    """Arm (d): the engine's trial policy on an Optuna study (RandomSampler), MOASHA deciding after every epoch."""
    from nas.data.checks import data_fingerprint
    from nas.engine.job import SearchJob
    from nas.engine.optuna_adapter.study import open_study, run_study
    from nas.engine.policy import run_policy
    from nas.engine.trial import TrialSettings
    from nas.run.search_plan import prepare, study_settings

    plan = prepare(config)
    plan.out.mkdir(parents=True, exist_ok=True)
    study = open_study(plan.storage, plan.study_name, config.seed, study_settings(plan), plan.objectives,
                       config.sampler, data_fingerprint=data_fingerprint(plan.data))
    settings = TrialSettings(image_size=config.image_size, train=config.recipe(), latency_engine=config.latency_engine,
                             measure_train_memory=plan.objectives.needs_memory)  # as nas.run.search builds them
    job = SearchJob(space=plan.space, data=plan.data, settings=settings, out=plan.out, trials=config.trials,
                    restriction=plan.restriction, constraints=plan.constraints, objectives=plan.objectives,
                    max_failures=config.max_failures, max_pruned_in_a_row=config.max_pruned_in_a_row,
                    timeout=config.timeout)
    scheduler = moasha_scheduler(len(plan.objectives.names) - 1, config.epochs, args.moasha_grace, args.moasha_eta,
                                 config.seed, args.moasha_priority)
    print(f"MOASHA (Syne Tune) over random configs: rungs {sorted(r for r, _ in scheduler.brackets[0].rungs)}, "
          f"reduction factor {args.moasha_eta:g}, priority {args.moasha_priority}", flush=True)

    def trial_function(trial: Any) -> dict[str, Any]:
        return run_policy(job, MoashaPort(study, trial, scheduler, config.epochs)).attrs()

    return run_study(study, job.trials, trial_function, max_failures=job.max_failures,
                     max_pruned_in_a_row=job.max_pruned_in_a_row, objectives=plan.objectives,
                     timeout=job.timeout) or "completed"


# --- analysis: plain records in, numbers out (tests/test_search_vs_family.py) ---------------------------
@dataclass(frozen=True)
class Step:
    """One study trial in run order: what it cost and the point it added (None: no finished model)."""

    number: int
    seconds: float
    epochs: int
    point: tuple[float, float] | None  # (1 - Dice, log10 MACs), minimised
    family: bool


def steps(records: Iterable[Any]) -> list[Step]:
    """The study's trials (warm-start family ones included; baselines and presets left out), in trial order."""
    from nas.results.family import family_name
    from nas.results.trial_result import RecordKind

    out = []
    for record in sorted((r for r in records if r.kind == RecordKind.SEARCH), key=lambda r: r.number):
        ok = record.finished and record.macs and record.dice is not None and math.isfinite(record.dice)
        out.append(Step(record.number, float(record.seconds or 0.0), len(record.epoch_dice),
                        (1.0 - record.dice, math.log10(record.macs)) if ok else None, family_name(record) is not None))
    return out


def family_points(records: Iterable[Any]) -> list[tuple[float, float]]:
    """The family front's points: every finished family member (warm-start trials and family baselines)."""
    from nas.results.family import family_records

    return [(1.0 - r.dice, math.log10(r.macs)) for r in family_records(records) if r.finished and r.macs]


def hypervolume(points: Sequence[tuple[float, float]], reference: Sequence[float]) -> float:
    """moocore's hypervolume of minimisation points; points not strictly better than ``reference`` add nothing."""
    import moocore
    import numpy as np

    inside = [p for p in points if all(v < r for v, r in zip(p, reference))]
    return float(moocore.hypervolume(np.array(inside), ref=np.array(reference))) if inside else 0.0


def reach(trials: Sequence[Step], target: float, reference: Sequence[float], *, searched_only: bool = False,
          volume: Callable[[Sequence[tuple[float, float]], Sequence[float]], float] = hypervolume) -> dict[str, Any]:
    """Compute until the running front's hypervolume first reaches ``target``: seconds, epochs and trials
    summed in trial order (every trial counts); ``searched_only`` leaves the family trials' points out.
    ``reached`` False: the totals are what the whole run spent (a lower bound)."""
    seconds = epochs = 0.0
    points: list[tuple[float, float]] = []
    for count, step in enumerate(trials, start=1):
        seconds, epochs = seconds + step.seconds, epochs + step.epochs
        if step.point is not None and not (searched_only and step.family):
            points.append(step.point)
            if target > 0 and volume(points, reference) >= target * (1 - 1e-9):
                return {"reached": True, "seconds": seconds, "epochs": int(epochs), "trials": count}
    return {"reached": False, "seconds": seconds, "epochs": int(epochs), "trials": len(trials)}


def seed_result(records: dict[str, list[Any]], reference: Sequence[float]) -> dict[str, Any]:
    """One seed: every arm's hypervolume, and the compute (a), (b), (d) need to reach the family's."""
    engine = steps(records["engine"])
    family = family_points(records["engine"])
    target = hypervolume(family, reference)
    fronts = {"engine (all trials)": [s.point for s in engine if s.point],
              "engine searched": [s.point for s in engine if s.point and not s.family],
              "random": [s.point for s in steps(records["random"]) if s.point], "family": family}
    if "moasha" in records:
        fronts["moasha"] = [s.point for s in steps(records["moasha"]) if s.point]
    row = {"hypervolume": {arm: hypervolume(points, reference) for arm, points in fronts.items()},
           "trials": {arm: len(points) for arm, points in fronts.items()}, "family_members": len(family)}
    row["reach"] = {"engine searched": reach(engine, target, reference, searched_only=True),
                    "engine (all trials)": reach(engine, target, reference)}
    for arm in ("random", "moasha"):
        if arm in records:
            row["reach"][arm] = reach(steps(records[arm]), target, reference)
    return row


def median_reach(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median over seeds, a seed that never reached counting as infinite: None when the median is 'not reached'."""
    medians = {key: statistics.median(r[key] if r["reached"] else math.inf for r in rows) for key in ("seconds", "epochs")}
    return {**{k: v if math.isfinite(v) else None for k, v in medians.items()},
            "reached": sum(r["reached"] for r in rows), "seeds": len(rows),
            "spent_when_not_reached": [r["seconds"] for r in rows if not r["reached"]]}


def dominating_pairs(summary: dict[str, Any]) -> list[str]:
    """Finalist-stage pairs where a searched finalist has a higher final Dice than a family member at no
    more MACs, their 95 % intervals not overlapping."""
    done = [e for e in summary.get("entrants") or [] if e.get("ci") and (e.get("costs") or {}).get("macs")]
    return [f"{f['label']} ({f['dice']:.3f}, {f['costs']['macs'] / 1e6:.1f} MMAC) over {b['label']} "
            f"({b['dice']:.3f}, {b['costs']['macs'] / 1e6:.1f} MMAC)"
            for f in done if f["kind"] == "finalist" for b in done
            if b["kind"] == "baseline" and b.get("family") and f["costs"]["macs"] <= b["costs"]["macs"]
            and f["ci"][0] > b["ci"][1]]


def dataset_summary(seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    arms = [arm for arm in seeds[0]["hypervolume"] if all(arm in s["hypervolume"] for s in seeds)]
    spread = [(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
              for v in ([s["hypervolume"][arm] for s in seeds] for arm in arms)]
    out = {"hypervolume": dict(zip(arms, spread)),
           "reach": {arm: median_reach([s["reach"][arm] for s in seeds]) for arm in seeds[0]["reach"]
                     if all(arm in s["reach"] for s in seeds)}}
    searched = [s["hypervolume"]["engine searched"] for s in seeds]
    family = [s["hypervolume"]["family"] for s in seeds]
    out["searched_beats_family_every_seed"] = all(a > b for a, b in zip(searched, family))
    finals = [s["finalize"] for s in seeds if "finalize" in s]
    measured = finals and all(f["dominating"] is not None for f in finals)
    out["finalist_pairs"] = [p for f in finals for p in f["dominating"]] if measured else None
    return out


GOALS = {"front": "the searched front dominates the family on >= 2 of 3 datasets",
         "random": "the engine needs <= 1/4 of random search's compute to reach the family",
         "moasha": "the engine needs no more compute than MOASHA to reach the family"}


def goals(datasets: dict[str, dict[str, Any]], wanted: int = len(DATASETS)) -> dict[str, str]:
    """Each goal of issue 14 as met / not met / not measured, with the numbers behind it. A dataset not
    run, or run without the finalist stage, counts as unknown, never as a miss or a hit."""
    hv = [n for n, d in datasets.items() if d["searched_beats_family_every_seed"]]
    met = [n for n in hv if datasets[n]["finalist_pairs"]]
    unknown = wanted - len(datasets) + sum(datasets[n]["finalist_pairs"] is None for n in hv)
    verdict = "met" if len(met) >= 2 else ("not met" if len(met) + unknown < 2 else "not measured")
    out = {GOALS["front"]: f"{verdict}: the searched front's hypervolume above the family's in every seed on "
                           f"{', '.join(hv) or 'none'}, and also a searched finalist above a family member at no more "
                           f"MACs, 95 % intervals apart, on {', '.join(met) or 'none'}; {len(datasets)} of {wanted} "
                           f"datasets run, the finalist stage "
                           f"{'run on each' if all(d['finalist_pairs'] is not None for d in datasets.values()) else 'missing on some (--finalize)'}"}
    for rival, factor in (("random", 0.25), ("moasha", 1.0)):
        lines, verdicts = [], []
        for name, data in datasets.items():
            mine, theirs = data["reach"]["engine searched"], data["reach"].get(rival)
            if theirs is None or mine["seconds"] is None:
                verdicts.append("not measured" if theirs is None else "not met")
                lines.append(f"{name}: {rival} not run" if theirs is None else f"{name}: the engine did not reach it")
                continue
            bound = theirs["seconds"] if theirs["seconds"] is not None else max(theirs["spent_when_not_reached"])
            ok = mine["seconds"] <= factor * bound  # a rival that never reached needed more than it spent
            verdicts.append("met" if ok else ("not met" if theirs["seconds"] is not None else "not measured"))
            said = f"{bound:.0f} s" if theirs["seconds"] is not None else f"not reached in {bound:.0f} s"
            lines.append(f"{name}: {mine['seconds']:.0f} s vs {rival} {said} (medians)")
        verdict = "not met" if "not met" in verdicts else ("met" if set(verdicts) == {"met"} else "not measured")
        out[GOALS[rival]] = f"{verdict} ({'; '.join(lines) or 'no dataset run'})"
    out["make search still ~5 min with the defaults"] = "not measured here"
    return out


# --- running it ----------------------------------------------------------------------------------------------
def finalize(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``nas-finalize`` on an (a) run: its verdicts and the finalist-over-family pairs."""
    from nas.cli.finalize import main as finalize_main

    argv = ["--run", str(run), "--finalists", str(args.finalists), "--final-seeds", str(args.final_seeds),
            "--device", "cpu", "--no-overlays", *(["--final-epochs", str(args.final_epochs)] if args.final_epochs else [])]
    started = time.monotonic()
    with open(run.with_suffix(".finalize.log"), "w") as log, redirect_stdout(log), redirect_stderr(log):
        code = finalize_main(argv)
    summary = json.loads((run / "finalists" / "finalists.json").read_text()) if code == 0 else {}
    return {"argv": ["nas-finalize", *argv], "exit": code, "seconds": time.monotonic() - started,
            "verdicts": [v["text"] for v in summary.get("verdicts", [])],
            "dominating": dominating_pairs(summary) if code == 0 else None,  # a failed stage measured nothing
            "entrants": [{k: e.get(k) for k in ("label", "kind", "family", "search_dice", "dice", "std", "ci")}
                         | {"macs": (e.get("costs") or {}).get("macs")} for e in summary.get("entrants", [])]}


def records_of(run: Path) -> list[Any]:
    from nas.engine.baselines import baseline_records
    from nas.run.open import open_run

    return list(open_run(run).records) + baseline_records(run)


def dataset(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    source = DATASETS[name]
    if source != "synthetic" and not Path(source).is_dir():
        print(f"search_vs_family: {name}: {source} is absent; dataset skipped", file=sys.stderr, flush=True)
        return None
    arms = [a for a in SEARCHED if a != "moasha" or not args.no_moasha]
    runs, records = [], []
    for seed in args.seeds:
        root = Path(args.out) / name / f"seed_{seed}"
        with ProcessPoolExecutor(len(arms), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {arm: pool.submit(run_arm, arm, source, root / arm, args, seed, args.budgets[name])
                       for arm in arms}
            runs.append({arm: future.result() for arm, future in futures.items() if arm != "moasha"})
            if "moasha" in futures:
                try:
                    runs[-1]["moasha"] = futures["moasha"].result()
                except Exception as error:  # noqa: BLE001 - the reference arm is optional; say why it is missing
                    print(f"search_vs_family: arm (d) MOASHA left out: {type(error).__name__}: {error} "
                          f"(log: {root / 'moasha.log'})", file=sys.stderr, flush=True)
        records.append({arm: records_of(root / arm) for arm in runs[-1]})
        print(f"search_vs_family: {name} seed {seed}: " + ", ".join(
            f"{arm} {r['status']} in {r['seconds']:.0f} s" for arm, r in runs[-1].items()), file=sys.stderr, flush=True)
    macs = [r.macs for seed in records for arm in seed.values() for r in arm if r.finished and r.macs]
    if not macs:
        print(f"search_vs_family: {name}: no arm finished a trial; dataset skipped", file=sys.stderr, flush=True)
        return None
    reference = (1.0, args.ref_log10_macs or round(math.log10(max(macs)) + 0.1, 4))
    seeds = []
    for seed, run, record in zip(args.seeds, runs, records):
        row = {"seed": seed, "runs": run, **seed_result(record, reference)}
        if args.finalize:
            row["finalize"] = finalize(Path(args.out) / name / f"seed_{seed}" / "engine", args)
        seeds.append(row)
    return {"dataset": name, "budget_s": args.budgets[name], "reference": list(reference),
            "reference_note": "(1 - Dice, log10 MACs), minimised; " + (
                "--ref-log10-macs" if args.ref_log10_macs else "log10 of the largest MACs any arm trained here + 0.1"),
            "seeds": seeds, "summary": dataset_summary(seeds)}


def budgets(text: str, names: Sequence[str]) -> dict[str, float]:
    """``"900,isbi2012_em=3600"`` -> seconds per dataset (a bare number: every dataset not named)."""
    default, named = None, {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.rpartition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"{part!r} is not a positive number of seconds")
        if key and key not in DATASETS:
            raise ValueError(f"unknown dataset {key!r}; known: {', '.join(DATASETS)}")
        default, named = (seconds, named) if not key else (default, {**named, key: seconds})
    missing = [n for n in names if n not in named and default is None]
    if missing:
        raise ValueError(f"no budget for {', '.join(missing)} (give a bare number for the rest)")
    return {n: named.get(n, default) for n in names}


def _reach(entry: dict[str, Any]) -> str:
    said = "not reached" if entry["seconds"] is None else f"{entry['seconds']:.0f} s, {entry['epochs']:.0f} epochs"
    return f"{said} ({entry['reached']}/{entry['seeds']} seeds reached)"


def markdown(row: dict[str, Any]) -> list[str]:
    summary = row["summary"]
    lines = [f"**{row['dataset']}** ({len(row['seeds'])} seed(s), {row['budget_s']:g} s per arm; reference "
             f"{row['reference_note']}: ({row['reference'][0]:g}, {row['reference'][1]:g}))", "",
             "| arm | hypervolume mean ± std | models on it (mean) | compute to reach the family (median) |",
             "|---|---|---:|---|"]
    for arm, (mean, std) in summary["hypervolume"].items():
        models = statistics.fmean(s["trials"][arm] for s in row["seeds"])
        reach = summary["reach"].get(arm)
        lines.append(f"| {arm} | {mean:.4f} ± {std:.4f} | {models:.1f} | {_reach(reach) if reach else '(the target)'} |")
    lines += ["", "engine searched: (a) without its family warm-start trials' points (their compute counted); family: "
                  "(a)'s warm-start trials plus the members its budget left queued, trained after it from their planned "
                  "specs; compute: the trials' wall seconds and trained epochs summed in trial order."]
    lines += [f"\nseed {s['seed']} finalist stage ({s['finalize']['seconds']:.0f} s): "
              + " ".join(f"Verdict: {v}." for v in s["finalize"]["verdicts"]) for s in row["seeds"] if "finalize" in s]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
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
    parser.add_argument("--out", default="runs/bench_search_vs_family")
    args = parser.parse_args(argv)
    if args.smoke:
        args.datasets, args.seeds, args.budget_s, args.epochs, args.image_size = "synthetic", "0", "20", 2, 32
        args.final_seeds, args.final_epochs, args.finalists = 1, 1, 1
    unknown = sorted(set(args.datasets.split(",")) - set(DATASETS))
    if unknown:
        parser.error(f"--datasets: unknown {unknown[0]!r}; known: {', '.join(DATASETS)}")
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
