"""Running it: every arm of a dataset side by side per seed, then the finalist stage; --budget-s parsed."""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Sequence

from .arms import DATASETS, records_of, run_arm
from .fronts import dataset_summary, seed_result
from .verdicts import dominating_pairs, half_cost_match


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
            "half_cost_match": half_cost_match(summary) if code == 0 else None,
            "entrants": [{k: e.get(k) for k in ("label", "kind", "family", "search_dice", "dice", "std", "ci")}
                         | {"macs": (e.get("costs") or {}).get("macs")} for e in summary.get("entrants", [])]}


def dataset(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    source = DATASETS[name]
    if source != "synthetic" and not Path(source).is_dir():
        print(f"search_vs_family: {name}: {source} is absent; dataset skipped", file=sys.stderr, flush=True)
        return None
    arms = [a for a in args.arms if a != "moasha" or not args.no_moasha]
    runs, records = [], []
    for seed in args.seeds:
        root = Path(args.out) / name / f"seed_{seed}"
        if args.reread:  # the arms ran before (an invocation stopped before it printed): read their runs
            runs.append({arm: {"status": "reread", "seconds": math.nan} for arm in arms if (root / arm).is_dir()})
            records.append({arm: records_of(root / arm) for arm in runs[-1]})
            continue
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
        if args.finalize:  # with --reread: the finalist stage of runs on disk
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


