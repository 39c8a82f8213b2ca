"""The baseline family in a search run: planned once per study, then queued as the study's first
trials (``--warm-start family``) or, without a warm start, trained beside it as baselines
(``--baselines family``), never both.

The plan (``nas.stages.family_planning.plan_family``) is stored in the study when it is made, so a resume
reads it back instead of planning again. A warm start queues the members with the cost strata,
cheapest first (``nas.run.start``), as many as ``--trials`` still wants, and only into a study that has
run nothing but start trials (``nas.engine.optuna_adapter.warm_start``): nothing is queued twice, and a
resume with a larger ``--trials`` queues the rest. The warm-start trials count toward ``--trials``; they are never
stopped early, and with ``--timeout`` none starts after a quarter of it (``warm_start_until``). Both backends run them: with ``--backend ray`` the queued members are the first points
Ray's ``OptunaSearch`` proposes, each filled in place when it ends (``nas.engine.ray_adapter.searcher``).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from nas.engine.optuna_adapter import family_plan, store_family_plan
from nas.run.search_config import SearchConfig
from nas.stages.baseline_training import FAMILY, train_family
from nas.stages.family_planning import FamilyMember, describe, plan_family

Log = Callable[[str], None]
WARM_START_SHARE = 0.25  # of --timeout: no warm-start member starts later (the searched trials get the rest)


def family_wanted(config: SearchConfig) -> bool:
    return FAMILY in config.baselines or config.warm_start == "family"


def warm_start_active(config: SearchConfig) -> bool:
    """Either backend: with Ray the queued members are ``OptunaSearch``'s first points
    (``nas.engine.ray_adapter``), labelled and filled in place like the Optuna path's."""
    return config.warm_start == "family"


def warm_start_until(config: SearchConfig, now: float | None = None) -> float | None:
    """With ``--timeout``, the time (``time.time()``) after which no family warm-start member starts.

    The members are queued first and never stopped early; on a short budget they took 35-100 % of
    the trial time in the reduced benchmark (ISBI: the budget ended inside the family in every seed,
    benchmarks/RESULTS.md), leaving the search nothing. A member due after ``WARM_START_SHARE`` of
    the budget is skipped (pruned, stop reason ``budget``; the cheapest rungs run first), never run
    later. Without ``--timeout`` the budget is ``--trials`` and every queued member runs."""
    if config.timeout is None or not warm_start_active(config):
        return None
    return (time.time() if now is None else now) + WARM_START_SHARE * config.timeout


def study_family(plan: Any, study: Any, log: Log) -> list[FamilyMember]:
    """The study's family: read back from the study, or planned now and stored with it."""
    stored = family_plan(study)
    if stored is not None:
        return [FamilyMember.from_dict(entry, plan.space) for entry in stored]
    config = plan.config
    why = ""
    try:
        members = plan_family(plan.space, image_size=config.image_size, in_channels=plan.data.in_channels,
                              rungs=config.family_rungs, restriction=plan.restriction, constraints=plan.constraints,
                              points=warm_start_active(config), log=log)
    except ValueError as error:  # a space the planner cannot read: the search runs without a family
        members, why = [], f": {error}"
    store_family_plan(study, [member.to_dict() for member in members])
    if not members:
        log(f"family: no member fits this run (no baseline family, no warm start){why}")
        return members
    log(f"family: {len(members)} member(s), uniform width scalings of {', '.join(sorted({m.preset for m in members}))} "
        f"to MAC targets across the space's range (docs/family.md):")
    for member in members:
        log(f"  {describe(member)}")
    return members


def train_family_baselines(plan: Any, members: list[FamilyMember], settings: Any, log: Log,
                           on_epoch: Callable[[int, float, float], None] | None = None) -> None:
    """``--baselines family`` without a warm start: train the planned members as baselines (with a
    warm start the members are study trials, and those beyond ``--trials`` are not run)."""
    if FAMILY not in plan.config.baselines or not members or warm_start_active(plan.config):
        return
    train_family(members, plan.space, plan.data, settings, plan.out, log=log, on_epoch=on_epoch)
