"""A search's first trials: the family warm start and the cost strata, queued cheapest first.

Both are points chosen before the sampler has seen anything: the family (``nas.run.family_run``) is known
designs scaled across the space's MAC range, the cost strata (``nas.engine.strata``, ``--cost-strata``)
one uniform draw per band of the space's log-MACs. Queued in one order, by MACs, so a short budget
spends itself on cheap models first: on the tabulated benchmark that put a front at every cost within
the first default-trial equivalent (benchmarks/RESULTS.md, issue 25). Only into a study that has run
nothing else; a resume never queues a trial twice (``enqueue_start``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from nas.costs.measure import count_macs_on_meta
from nas.engine.optuna_adapter import count_finished, enqueue_start, start_name
from nas.engine.policy import training_side
from nas.engine.strata import Stratum, draw_strata
from nas.run.family_run import WARM_START_SHARE, family_wanted, study_family, warm_start_active
from nas.stages.family_planning import FamilyMember

Log = Callable[[str], None]
MacsOf = Callable[[Any], int]


def counted_macs(plan: Any) -> MacsOf:
    """MACs of a spec at the run's input shape, counted on the meta device (a construction's cost)."""
    in_channels, side, dims = plan.data.in_channels, plan.config.image_size, plan.space.spatial_dims

    def macs_of(spec: Any) -> int:
        with torch.device("meta"):
            model = plan.space.build_model(spec, in_channels, 1)
        return count_macs_on_meta(model, (1, in_channels, *(side,) * dims))

    return macs_of


def cost_strata(plan: Any, macs_of: MacsOf | None = None) -> list[Stratum]:
    """The run's cost strata: what it could train (depth within the image size, ``--max-macs``)."""
    config, limit = plan.config, plan.constraints.max_macs
    side = training_side(plan.data, config.image_size)  # the policy prunes what does not fit it
    return draw_strata(plan.space, count=config.cost_strata, seed=config.sampler_seed, macs_of=macs_of or counted_macs(plan),
                       fits=lambda spec: side // spec.downsampling_factor >= 2, max_macs=limit,
                       restriction=plan.restriction)


def start_search(plan: Any, study: Any, log: Log, macs_of: MacsOf | None = None) -> list[FamilyMember]:
    """Plan (or read) the family and queue the start trials; returns the family's members ([] when the
    run wants no family). Called once by the main process, before any trial runs; ``macs_of`` ranks the
    strata (default: counted on the meta device; a replay passes its table's)."""
    config = plan.config
    members = study_family(plan, study, log) if family_wanted(config) else []
    queue: list[tuple[float, dict[str, Any]]] = []
    if warm_start_active(config):
        cheapest_first = sorted(members, key=lambda member: (member.rung, member.design))
        queue += [(member.point_macs or member.macs, member.to_dict()) for member in cheapest_first]
    strata = cost_strata(plan, macs_of) if config.cost_strata and _fresh(study) else []
    queue += [(stratum.macs, stratum.to_dict()) for stratum in strata]
    if not queue:
        return members
    queue.sort(key=lambda item: item[0])  # stable: members of equal MACs keep their rung order
    queued = enqueue_start(study, [item for _, item in queue], budget=config.trials - count_finished(study))
    if queued:
        left = len(queue) - len(queued)
        log(f"start: {len(queued)} trial(s) queued cheapest first before the sampler: {', '.join(queued)} "
            f"(they count toward --trials {config.trials})"
            + (f"; {left} beyond --trials are not run" if left > 0 else "")
            + (f"; with --timeout no family member starts after {WARM_START_SHARE:.0%} of it (then skipped)"
               if config.timeout is not None and members and warm_start_active(config) else ""))
        for stratum in strata:
            if stratum.name in queued:
                log(f"  {stratum.name}: {stratum.macs / 1e6:.1f} MMAC  {stratum.summary}")
    return members


def _fresh(study: Any) -> bool:
    """Nothing but start trials so far (a resume after them draws the same strata again: same seed)."""
    return all(start_name(trial) for trial in study.get_trials(deepcopy=False))
