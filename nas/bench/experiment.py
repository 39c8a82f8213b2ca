"""Arms x seeds replayed on the benchmark, and what they show: hypervolume against simulated compute.

Compute is counted in default-trial equivalents: the mean single-thread CPU seconds of one uniformly
sampled architecture's full training at the table's fidelity (set-up, every epoch, scoring). An arm
whose decisions depend on ``--timeout`` (a warm start gets a share of it) is replayed once per budget
with that ``--timeout``, as a user would run it (or read off its replay at a larger budget where
``nas.bench.replay.prefix`` shows that is the same replay); an anytime arm (no warm start) once at the
largest budget, read at every smaller one. Per budget: the median
hypervolume over seeds with a 95 % bootstrap interval, and the paired Wilcoxon signed-rank test of the
default engine against every other arm; per arm, the compute to reach the family's hypervolume.
"""
from __future__ import annotations

import math
import multiprocessing
import statistics
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from nas.bench.replay import REFERENCE, Arm, Event, Replay, front_hypervolume, plan_family_once, prefix, \
    reach_time, replay
from nas.bench.table import FAMILY, SAMPLE

BUDGETS = (2, 5, 10, 20, 40, 80)  # default-trial equivalents
ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("engine"),  # the default: TPE, cost-aware halving, family warm start and cost strata, cheapest first
    Arm("engine-nostrata", cost_strata=0),  # the default before issue 25
    Arm("engine-nowarm", warm_start="none"),
    Arm("engine-nostop", early_stop="none"),
    Arm("engine-moasha-rule", early_stop="moasha"),
    Arm("nsga2", sampler="nsga2"),
    Arm("random", sampler="random", early_stop="none", warm_start="none", cost_strata=0),  # plain random search
    Arm("random-halving", sampler="random", warm_start="none", cost_strata=0),
    Arm("gp", sampler="gp"),
)}


def trial_equivalent(frame: pd.DataFrame) -> float:
    """Mean CPU seconds of one sampled architecture's full training (seed 0), set-up and scoring included."""
    rows = frame[(frame["kind"] == SAMPLE) & (frame["seed"] == 0)]
    totals = rows["setup_cpu_s"] + rows["epoch_cpu_s"].map(sum) + rows["finish_cpu_s"]
    return float(totals.mean())


def family_hypervolume(frame: pd.DataFrame, reference: Sequence[float] = REFERENCE) -> float:
    """The family's own front (the members a warm start trains, selected on validation, scored on test)."""
    rows = frame[(frame["kind"] == FAMILY) & (frame["seed"] == 0) & ~frame["arch_id"].str.endswith("-planned")]
    events = [Event(None, key, 0.0, 0.0, True, int(macs), float(val), float(test)) for key, macs, val, test in
              zip(rows["spec_key"], rows["macs"], rows["final_val_dice"], rows["final_test_dice"])]
    return front_hypervolume(events, 0.0, reference)


@dataclass(frozen=True)
class Setting:
    """What every worker needs to build its source once (the table, the models) and replay."""

    unit_s: float
    budgets: tuple[int, ...] = BUDGETS


_STATE: dict[str, Any] = {}


def run_arms(make_state: Callable[[], dict[str, Any]], arms: Sequence[str], seeds: Sequence[int], setting: Setting,
             workers: int = 2, log: Callable[[str], None] = print, derive: bool = True) -> list[dict[str, Any]]:
    """Replay every (arm, seed) in ``workers`` processes; ``make_state()`` (run once, in the parent where
    workers are forked) returns ``plan``, ``source`` and ``arms`` (name -> Arm, or a callable(plan, source,
    seed, budget) -> Replay). An arm replayed per budget runs its budgets largest first in one job;
    ``derive``: a smaller budget's replay is read off a larger one where ``nas.bench.replay.prefix`` shows
    it is the same. The longest jobs go first (by the mean of the arm's jobs done so far; an arm not yet
    seen first, to learn it), so the workers end together."""
    arms, seeds = list(dict.fromkeys(arms)), list(dict.fromkeys(seeds))
    pending = [(arm, seed, (setting.budgets[-1],) if _anytime(arm) else setting.budgets)
               for seed in seeds for arm in arms]
    pending.sort(key=lambda job: -sum(job[2]))
    spent: dict[str, list[float]] = {}
    runs: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    fork = "fork" in multiprocessing.get_all_start_methods()
    try:
        if fork:  # built once here, inherited by every worker
            _build_state(make_state)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork") if fork else None,
                                 initializer=_init, initargs=(None if fork else make_state,)) as pool:
            running: dict[Any, tuple[str, int, tuple[int, ...]]] = {}
            while pending or running:
                while pending and len(running) < workers:
                    job = max(pending, key=lambda job: statistics.fmean(spent.get(job[0]) or [math.inf]))
                    pending.remove(job)
                    running[pool.submit(_one, job, setting, derive)] = job
                for future in wait(running, return_when=FIRST_COMPLETED).done:
                    (arm, seed, _), rows = running.pop(future), future.result()
                    spent.setdefault(arm, []).append(sum(done["wall_s"] for done, _ in rows))
                    for done, source in rows:
                        runs.setdefault((arm, seed), {})[done["budget"]] = done
                        how = f"{done['wall_s']:.1f} s" if source is None else f"read off --timeout {source}"
                        log(f"  {done['arm']} seed {done['seed']} --timeout {done['budget']}: {done['trials']} "
                            f"trials, {done['finished']} finished, hypervolume {done['hypervolume'][-1]:.3f} ({how})")
    finally:
        _STATE.clear()
    return [merge_budgets(runs[arm, seed], setting.budgets) for seed in seeds for arm in arms]  # seed by seed


def _anytime(name: str) -> bool:
    arm = ARMS.get(name)
    return arm is None or arm.anytime  # outside arms (Syne Tune's) never read --timeout


def merge_budgets(per: dict[int, dict[str, Any]], budgets: Sequence[int]) -> dict[str, Any]:
    """One row per (arm, seed): an anytime arm's single replay as it is; per-budget replays read each at
    its own budget, the compute to reach the family the least any of them needed (within its budget)."""
    if len(per) == 1:
        return next(iter(per.values()))
    rows = [per[b] for b in budgets]
    merged = dict(rows[-1])
    merged["hypervolume"] = [row["hypervolume"][-1] for row in rows]
    merged["wall_s"] = sum(row["wall_s"] for row in rows)
    for key in ("reach_family", "reach_family_searched"):
        reached = [row[key] for row, b in zip(rows, budgets) if row[key] is not None and row[key] <= b]
        merged[key] = min(reached) if reached else None
    return merged


def _init(make_state: Callable[[], dict[str, Any]] | None) -> None:
    """A worker: one thread; the state inherited (forked) or, with ``make_state``, built here."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # for the whole worker: OpenMP's thread start-up per one-row prediction costs more than it
    if make_state is not None:
        _build_state(make_state)


def _build_state(make_state: Callable[[], dict[str, Any]]) -> None:
    """``make_state()`` and the warm start's family planned, on one thread (a forked worker inherits no
    OpenMP threads, the replay's numbers do not depend on them)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            _STATE.update(make_state())
            plan_family_once(_STATE["plan"], _STATE["source"])
    finally:
        torch.set_num_threads(threads)


def _one(job: tuple[str, int, tuple[int, ...]], setting: Setting,
         derive: bool = True) -> list[tuple[dict[str, Any], int | None]]:
    """One arm and seed at each of its budgets, largest first: (summary row, the budget it was read off or None)."""
    import time

    name, seed, budgets = job
    arm, plan = _STATE["arms"][name], _STATE["plan"]
    ran: list[tuple[int, Replay]] = []
    rows = []
    for budget in sorted(budgets, reverse=True):
        started = time.perf_counter()
        seconds = budget * setting.unit_s
        found = [(b, read) for b, r in ran if (read := prefix(r, plan, arm, seconds)) is not None] \
            if derive and isinstance(arm, Arm) else []
        if found:
            source, result = found[0]
        else:
            source = None
            result = arm(plan, _STATE["source"], seed, seconds) if callable(arm) and not isinstance(arm, Arm) \
                else replay(plan, _STATE["source"], arm, seed, seconds)
            ran.append((budget, result))
        read = replace(setting, budgets=tuple(b for b in setting.budgets if b <= budget))
        rows.append((summarise(result, read, _STATE["family_hv"]) |
                     {"wall_s": time.perf_counter() - started, "budget": budget}, source))
    return rows


def summarise(result: Replay, setting: Setting, family_hv: float) -> dict[str, Any]:
    events = result.events
    reach = reach_time(events, family_hv)
    searched = reach_time(events, family_hv, searched_only=True)  # the warm start's own members left out
    return {"arm": result.arm, "seed": result.seed, "trials": len(events),
            "finished": sum(e.finished for e in events), "surrogate": sum(e.source == "surrogate" for e in events),
            "hypervolume": [front_hypervolume(events, b * setting.unit_s) for b in setting.budgets],
            "reach_family": None if reach is None else reach / setting.unit_s,
            "reach_family_searched": None if searched is None else searched / setting.unit_s}


def bootstrap_median(values: Sequence[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """(median, 2.5 %, 97.5 %) of the median, by bootstrap over seeds."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(data, size=(resamples, len(data)), replace=True), axis=1)
    return float(np.median(data)), float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def compare(results: Sequence[dict[str, Any]], budgets: Sequence[int], baseline: str = "engine") -> dict[str, Any]:
    """Per arm and budget: median with its interval; the paired Wilcoxon test of ``baseline`` against each arm
    (seeds paired); the median compute to reach the family's hypervolume (None: most seeds never do)."""
    from scipy.stats import wilcoxon

    by_arm: dict[str, dict[int, list[float]]] = {}
    for row in results:
        by_arm.setdefault(row["arm"], {})[row["seed"]] = row
    out: dict[str, Any] = {}
    for arm, rows in by_arm.items():
        seeds = sorted(rows)
        entry: dict[str, Any] = {"seeds": len(seeds), "budgets": {}}
        for index, budget in enumerate(budgets):
            values = [rows[s]["hypervolume"][index] for s in seeds]
            median, low, high = bootstrap_median(values)
            cell = {"median": median, "low": low, "high": high}
            if arm != baseline and baseline in by_arm:
                paired = [(by_arm[baseline][s]["hypervolume"][index], rows[s]["hypervolume"][index])
                          for s in seeds if s in by_arm[baseline]]
                diffs = [a - b for a, b in paired]
                cell["engine_minus_arm_median"] = float(np.median(diffs)) if diffs else math.nan
                cell["p"] = float(wilcoxon(diffs).pvalue) if any(d != 0 for d in diffs) and len(diffs) >= 5 else math.nan
            entry["budgets"][budget] = cell
        for key in ("reach_family", "reach_family_searched"):
            reach = [rows[s][key] for s in seeds]
            entry[f"{key}_median"] = statistics.median(reach_key(r) for r in reach) if reach else None
            entry[f"{key}_count"] = f"{sum(r is not None for r in reach)}/{len(reach)}"
        entry["surrogate_share"] = float(np.mean([rows[s]["surrogate"] / max(rows[s]["trials"], 1) for s in seeds]))
        out[arm] = entry
    return out


def reach_key(value: float | None) -> float:
    return math.inf if value is None else float(value)


def markdown(summary: dict[str, Any], budgets: Sequence[int], baseline: str = "engine") -> str:
    """One row per arm: median hypervolume [95 % interval] at each budget, Wilcoxon p against the engine."""
    head = "| arm | " + " | ".join(f"{b} trials" for b in budgets) + \
        " | reach family (median) | searched models alone | surrogate share |"
    lines = [head, "|" + "---|" * (len(budgets) + 4)]
    for arm, entry in summary.items():
        cells = []
        for budget in budgets:
            cell = entry["budgets"][budget]
            text = f"{cell['median']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"
            if "p" in cell and not math.isnan(cell["p"]):
                text += f" p={cell['p']:.3f}"
            cells.append(text)
        reach = [_reach_text(entry, key) for key in ("reach_family", "reach_family_searched")]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {reach[0]} | {reach[1]} | {entry['surrogate_share']:.0%} |")
    return "\n".join(lines)


def _reach_text(entry: dict[str, Any], key: str) -> str:
    median = entry[f"{key}_median"]
    text = "never" if median is None or math.isinf(median) else f"{median:.1f}"
    return f"{text} ({entry[f'{key}_count']})"
