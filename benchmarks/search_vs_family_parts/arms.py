"""The arms of benchmarks/search_vs_family.py: the datasets, each arm's search config, one arm in its own
process, the family members its budget left queued, and the records a run leaves."""
from __future__ import annotations

import argparse
import faulthandler
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from .moasha import moasha_search

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {"synthetic": "synthetic", "isbi2012_em": str(SHARED / "isbi2012_em" / "train"),
            "cvc_clinicdb_sample": str(SHARED / "cvc_clinicdb_sample")}
# --smoke: a tiny plain U-Net space whose widths stay free, so the family (unet-16) can still be scaled
SMOKE_FIX = {"depth": 3, "blocks_per_stage": 1, "block": "plain", "aspp": False, "attention": "none",
             "multiscale_input": False, "deep_supervision": False}
SEARCHED = ("engine", "random", "moasha")  # the arms that run a search by default
RANDOM = {"sampler": "random", "early_stop": "none", "warm_start": "none", "baselines": (), "cost_strata": 0}
# (a) with one default changed, side by side with it (--arms): the sampler and the space width of issue 14
VARIANTS = {"gp": {"sampler": "gp"}, "compact": {"space_config": "compact"}, "full": {},
            "nowarm": {"warm_start": "none", "baselines": ()}}  # nowarm: (a) without the family (its strata kept)
ARM_FLAGS = {"engine": {}, "random": RANDOM, "moasha": RANDOM, **VARIANTS}  # nas.SearchConfig fields over defaults
ENGINES = ("engine", *VARIANTS)  # arms with the family warm start: their fronts are read with and without it


def search_config(arm: str, source: str, out: Path, args: argparse.Namespace, seed: int, budget: float):
    import nas

    return nas.SearchConfig(data=source, trials=100_000, epochs=args.epochs, image_size=args.image_size, seed=seed,
                            device="cpu", out=out, timeout=budget, fix=SMOKE_FIX if args.smoke else {},
                            patches_per_epoch=args.patches_per_epoch, family_rungs=args.family_rungs,
                            **ARM_FLAGS[arm])


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

    from nas.stages.baseline_training import train_family
    from nas.stages.family_planning import FamilyMember
    from nas.engine.optuna_adapter.study import make_storage
    from nas.engine.optuna_adapter.warm_start import family_plan
    from nas.engine.trial import TrialSettings
    from nas.results.family_records import family_name
    from nas.run.search_plan import prepare

    plan = prepare(config)
    study = optuna.load_study(study_name=plan.study_name, storage=make_storage(plan.storage))
    trained = {family_name(r) for r in records_of(plan.out) if r.finished}
    missing = [FamilyMember.from_dict(m, plan.space) for m in family_plan(study) or [] if m["name"] not in trained]
    train_family(missing, plan.space, plan.data, TrialSettings(config.image_size, config.recipe()), plan.out)
    return [member.name for member in missing]




def records_of(run: Path) -> list[Any]:
    from nas.stages.baseline_training import baseline_records
    from nas.run.open import open_run

    return list(open_run(run).records) + baseline_records(run)


