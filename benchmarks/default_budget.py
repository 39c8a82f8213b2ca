"""What the default run's epochs buy: `nas-search --space resunet` at two or more `--epochs`, same seeds.

`make search` was to finish in about 5 minutes on 2 CPU cores (issue 14), and its time is set by 20 trials x
``--epochs`` of training (small models are not proportionally cheaper on a CPU). This runs the
default search once per (seed, epochs), the variants of a seed side by side in one process each
(one torch thread each, so they share the machine alike), and reports per variant, with the spread
over seeds: wall seconds, trials run, and the quality of what the run hands a user: its Pareto
front (selected on validation Dice vs MACs, as the run does) scored on the held-out test images:
the hypervolume of (test Dice, log10 MACs) against (0, ``--ref-log10-macs``) by moocore, and the
test Dice of the val-best model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_budget.py --epochs 10,6 --seeds 0,1,2 \\
        --out /tmp/default_budget
    .venv/bin/python benchmarks/default_budget.py --epochs 10,6 --seeds 0,1,2 --out /tmp/default_budget --reread

Extra flags after ``--`` go to every ``nas-search`` (e.g. ``-- --trials 12``). What `make search` runs, timed
as it runs (one variant, every core, seeds one after another):

    .venv/bin/python benchmarks/default_budget.py --epochs 10 --seeds 0,1,2 --threads 0 --out /tmp/t240 -- --timeout 240

Prints one JSON blob.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from search_vs_family_parts.fronts import hypervolume  # moocore, the same as the search-vs-family benchmark

ROOT = Path(__file__).resolve().parents[1]


def run_dir(out: Path, seed: int, epochs: int) -> Path:
    return out / f"seed_{seed}" / f"epochs_{epochs}"


def start(out: Path, seed: int, epochs: int, extra: Sequence[str], threads: int = 1) -> subprocess.Popen:
    directory = run_dir(out, seed, epochs)
    directory.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "nas.cli.search", "--space", "resunet", "--seed", str(seed), "--epochs",
               str(epochs), "--out", str(directory), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:  # 0: torch's own default (every core), as `make search` runs
        env["OMP_NUM_THREADS"] = str(threads)
    log = open(directory.parent / f"epochs_{epochs}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def summarise(directory: Path, ref_log10_macs: float) -> dict[str, Any]:
    """The run's val-selected front, scored on test: hypervolume and the val-best model's test Dice."""
    sys.path.insert(0, str(ROOT))
    import nas
    from nas.results.pareto import DICE_MACS, pareto_front

    run = nas.open_run(directory)
    front = pareto_front(run.records, DICE_MACS)
    finished = list(front.finished)

    def test_dice(record: Any) -> float | None:
        value = ((record.result.quality.splits or {}).get("test") or {}).get("dice")
        return float(value) if value is not None and math.isfinite(value) else None

    scored = [(1.0 - test_dice(r), math.log10(r.macs)) for r in front.front if test_dice(r) is not None]
    best = max(finished, key=lambda r: r.dice)
    timing = json.loads((directory.parent / f"{directory.name}.time.json").read_text())
    return {"wall_s": timing["wall_s"], "trials": len(run.records), "finished": len(finished),
            "front": len(front.front), "test_hv": hypervolume(scored, (1.0, ref_log10_macs)),
            "best_val_dice": best.dice, "best_test_dice": test_dice(best), "best_mmac": best.macs / 1e6}


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="10,6", help="the --epochs variants, side by side per seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ref-log10-macs", type=float, default=10.0, help="hypervolume reference (10 GMAC)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (0: torch's default, "
                        "as `make search`; time a --timeout run this way, one variant at a time)")
    parser.add_argument("--reread", action="store_true", help="summarise the runs on disk; train nothing")
    args = parser.parse_args(argv)
    variants = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds if not args.reread else []:
        began = time.perf_counter()
        processes = {epochs: start(args.out, seed, epochs, extra, args.threads) for epochs in variants}
        while processes:  # each variant's own wall time: poll, do not wait in order
            time.sleep(1.0)
            for epochs, process in list(processes.items()):
                code = process.poll()
                if code is None:
                    continue
                del processes[epochs]
                timing = {"wall_s": time.perf_counter() - began, "returncode": code}
                (args.out / f"seed_{seed}" / f"epochs_{epochs}.time.json").write_text(json.dumps(timing))
                if code != 0:
                    raise SystemExit(f"seed {seed}, --epochs {epochs}: nas-search exited {code}")
    per_run = {f"seed {seed}, epochs {epochs}": summarise(run_dir(args.out, seed, epochs), args.ref_log10_macs)
               for seed in seeds for epochs in variants}
    table = {}
    for epochs in variants:
        rows = [per_run[f"seed {seed}, epochs {epochs}"] for seed in seeds]
        table[f"epochs {epochs}"] = {key: spread([row[key] for row in rows])
                                     for key in ("wall_s", "trials", "front", "test_hv", "best_test_dice", "best_mmac")}
    result = {"runs": per_run, "mean ± std over seeds": table, "extra_flags": extra}
    print(json.dumps(result, indent=2))
    (args.out / "default_budget.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
