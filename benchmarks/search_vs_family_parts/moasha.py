"""Arm (d): Syne Tune's MOASHA deciding stop/continue after every epoch of the engine's trial policy."""
from __future__ import annotations

import argparse
import datetime
import math
from typing import Any

from nas.engine.early_stop import EarlyStopped, rung_dice
from nas.engine.optuna_adapter.search import OptunaPort
from nas.results.pareto import dominance_matrix


def moasha_scheduler(costs: int, epochs: int, grace: int, eta: float, seed: int, priority: str = "ranked") -> Any:
    """Syne Tune's MOASHA over (1 - Dice, the cost objectives), all minimised, rungs grace x eta^k below ``epochs``.

    ``ranked``: Syne Tune 0.16's ``Bracket`` reads the priority vector as each trial's priority, but
    ``NonDominatedPriority`` returns the non-dominated *order* (trial indices, best first), so the
    decision follows the index of the last-ordered trial: a trial that dominates every peer at its rung
    can be stopped (tests/test_search_vs_family.py shows it). ``ranked`` hands ``Bracket`` each
    trial's position in that same order; ``shipped`` keeps 0.16's behaviour."""
    import numpy as np
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import (
        NonDominatedPriority,
    )

    class Ranked(NonDominatedPriority):
        def priority_unsafe(self, objectives: Any) -> Any:
            order = np.asarray(nondominated_order(objectives, self.dim))  # 0.16's nondominated_sort, faster
            ranks = np.empty(len(order), dtype=int)
            ranks[order] = np.arange(len(order))
            return ranks

    np.random.seed(seed)  # the epsilon net inside a front starts from a random trial (numpy's global RNG)
    return MOASHA({}, metrics=["error", *[f"cost{i}" for i in range(costs)]], do_minimize=True, time_attr="epoch",
                  max_t=epochs, grace_period=grace, reduction_factor=eta, random_seed=seed,
                  multiobjective_priority=Ranked() if priority == "ranked" else None)


def nondominated_order(objectives: Any, dim: int | None) -> list[int]:
    """Syne Tune 0.16's ``nondominated_sort(objectives, dim)`` (every item, flattened) with the fronts peeled
    off one dominance matrix: the same fronts (the items no item left strictly dominates, in index order),
    each ordered as Syne Tune's ``compute_epsilon_net`` orders it (``epsilon_net_ranks``). Its Python loop
    over items per front was most of a replayed MOASHA search (the same list and random draws:
    tests/test_nasbench_replay.py)."""
    import numpy as np

    x = np.asarray(objectives)
    dominates = dominance_matrix(x)
    dominators = dominates.sum(axis=0)
    left = np.ones(len(x), dtype=bool)
    order: list[int] = []
    while left.any():
        front = np.flatnonzero(left & (dominators == 0))
        order += front[epsilon_net_ranks(x[front], dim=dim)].tolist()
        left[front] = False
        dominators -= dominates[front].sum(axis=0)
    return order


def epsilon_net_ranks(x: Any, dim: int | None) -> Any:
    """Syne Tune 0.16's ``compute_epsilon_net(x, dim)``: the same ranks and random draw, from the front's
    distances computed once (the same numbers as its per-step ones) and each item's distance to the chosen
    set lowered by the newest choice in plain Python, NaN as numpy's ``min`` and ``argmax`` treat it; its
    numpy calls per step were most of a replayed MOASHA search (tests/test_nasbench_replay.py)."""
    import numpy as np

    indices = set(range(x.shape[0]))
    first = np.random.choice(x.shape[0]) if dim is None else np.argmin(x, axis=0)[dim]
    order = [int(first)]
    indices.remove(order[0])
    distance = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1).tolist() if indices else []
    nearest = [math.inf] * x.shape[0]
    while indices:
        newest, best, best_value = distance[order[-1]], -1, math.nan
        for item in indices:  # Syne Tune's iteration order: ties go to the first in it
            value, step = nearest[item], newest[item]
            value = math.nan if value != value or step != step else min(value, step)
            nearest[item] = value
            if best < 0 or (best_value == best_value and (value != value or value > best_value)):
                best, best_value = item, value
        order.append(best)
        indices.remove(best)
    ranks = np.empty(len(order), dtype=int)
    ranks[order] = np.arange(len(order))
    return ranks


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


