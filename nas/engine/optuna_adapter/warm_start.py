"""The study's start: the family's plan, stored once, and the queue of first trials before the sampler.

A warm start queues each family member's point of the space, labelled with the member's name (user
attr ``family``), so the sampler starts from known designs and the report and finalist stage know
which trials are the family (``nas.results.family_records``); the cost strata (``nas.engine.strata``) are
queued beside them, labelled ``cost_stratum``, one architecture per band of the space's MACs.
"""
from __future__ import annotations

from typing import Any

import optuna

from nas.engine.optuna_adapter.study import FAMILY_ATTR, STRATUM_ATTR

FAMILY_PLAN_ATTR = "family_plan"  # the study's family (FamilyMember.to_dict() each), planned once


def family_plan(study: optuna.Study) -> list[dict[str, Any]] | None:
    """The family planned for this study when it was made (so a resume never plans it again)."""
    return study.user_attrs.get(FAMILY_PLAN_ATTR)


def store_family_plan(study: optuna.Study, plan: list[dict[str, Any]]) -> None:
    study.set_user_attr(FAMILY_PLAN_ATTR, plan)


def family_trials(study: optuna.Study) -> dict[str, int]:
    """Member name -> the number of the (last) trial that is that member, in any state."""
    return {t.user_attrs[FAMILY_ATTR]: t.number for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(FAMILY_ATTR)}


def start_name(trial: Any) -> str | None:
    """The name of a start trial (a family member, a cost stratum); None for a sampled one."""
    return trial.user_attrs.get(FAMILY_ATTR) or trial.user_attrs.get(STRATUM_ATTR)


def enqueue_start(study: optuna.Study, plan: list[dict[str, Any]], budget: int) -> list[str]:
    """Queue the start trials' space points (``params``), in ``plan`` order, as the study's next
    trials, labelled with their names: family members (``FamilyMember.to_dict()``) and cost strata
    (``{"name": "stratum-<i>", "stratum": i, "params": ...}``); at most ``budget`` of them (the trials
    still wanted), so nothing waits in the study beyond ``--trials``. Only into a study that has run
    nothing but start trials, and only those not queued before: a resume never queues one twice, and
    a resume with a larger ``--trials`` queues the rest. Returns the names queued."""
    trials = study.get_trials(deepcopy=False)
    if any(not start_name(t) for t in trials):
        return []  # the study searched already: a start now would not be one
    present, queued = {start_name(t) for t in trials}, []
    for item in plan:
        if len(queued) >= budget:
            break
        if item["name"] in present or item.get("params") is None:
            continue
        attrs = {STRATUM_ATTR: item["name"]} if "stratum" in item else {
            FAMILY_ATTR: item["name"], "family_target_macs": item["target_macs"], "family_exact": bool(item.get("exact"))}
        study.enqueue_trial(dict(item["params"]), user_attrs=attrs)
        queued.append(item["name"])
    return queued
