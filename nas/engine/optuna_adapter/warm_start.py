"""The baseline family in the study: its plan, stored once, and the warm start that queues it.

A warm start queues each family member's point of the space as the study's first trials, labelled
with the member's name (user attr ``family``), so the sampler starts from known designs and the
report and finalist stage know which trials are the family (``nas.results.family``).
"""
from __future__ import annotations

from typing import Any

import optuna

from nas.engine.optuna_adapter.study import FAMILY_ATTR

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


def enqueue_family(study: optuna.Study, plan: list[dict[str, Any]], budget: int) -> list[str]:
    """Warm start: queue the members' space points (``params``), in ``plan`` order, as the study's
    next trials, labelled with their names; at most ``budget`` of them (the trials still wanted), so
    nothing waits in the study beyond ``--trials``. Only into a study that has run nothing but family
    trials, and only members not queued before: a resume never queues one twice, and a resume with a
    larger ``--trials`` queues the rest. Returns the names queued."""
    trials = study.get_trials(deepcopy=False)
    if any(not t.user_attrs.get(FAMILY_ATTR) for t in trials):
        return []  # the study searched already: a warm start now would not be one
    present, queued = set(family_trials(study)), []
    for member in plan:
        if len(queued) >= budget:
            break
        if member["name"] in present or member.get("params") is None:
            continue
        study.enqueue_trial(dict(member["params"]), user_attrs={
            FAMILY_ATTR: member["name"], "family_target_macs": member["target_macs"],
            "family_exact": bool(member.get("exact"))})
        queued.append(member["name"])
    return queued
