#!/usr/bin/env python3
"""The tabulated benchmark of the resunet space (docs/benchmark.md), one command per step.

  build   train what the table lacks (resumable: a kill loses only the trainings in flight), both cores
  export  merge the build journal into the parquet table that ships in benchmarks/nasbench/
  surrogate  10-fold cross-validation of the surrogate candidates on the table (parquet + journal): a
          Markdown table on stdout, the report as benchmarks/nasbench/<task>.surrogate.json

  python benchmarks/nasbench.py build --task synthetic --count 500 --workers 2
  python benchmarks/nasbench.py export --task synthetic
  python benchmarks/nasbench.py surrogate --task synthetic
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas.bench.build import build_table, export_table, task_by_name  # noqa: E402

TABLES = ROOT / "benchmarks" / "nasbench"


def paths(task: str) -> tuple[Path, Path]:
    return TABLES / f"{task}.parquet", TABLES / f"{task}.journal.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train what the table lacks")
    build.add_argument("--task", default="synthetic")
    build.add_argument("--count", type=int, default=500, help="uniformly sampled architectures wanted")
    build.add_argument("--workers", type=int, default=2, help="training processes (one torch thread each)")
    build.add_argument("--noise-every", type=int, default=None,
                       help="every N-th sample also trains with seeds 1, 2 (default: the task's, 10 on synthetic)")
    build.add_argument("--limit", type=int, default=None, help="train at most this many now")
    export = sub.add_parser("export", help="merge the journal into the parquet table")
    export.add_argument("--task", default="synthetic")
    surrogate = sub.add_parser("surrogate", help="cross-validate the surrogate candidates on the table")
    surrogate.add_argument("--task", default="synthetic")
    surrogate.add_argument("--folds", type=int, default=10)
    surrogate.add_argument("--seed", type=int, default=0, help="the folds' shuffle and the models' random_state")
    surrogate.add_argument("--models", default="gb,hgb,rf,knn,ridge", help="comma-separated candidates")
    args = parser.parse_args(argv)
    try:
        task = task_by_name(args.task)
    except ValueError as error:
        parser.exit(2, f"nasbench: {error}\n")
    table, journal = paths(task.name)
    if args.command == "surrogate":
        return surrogate_report(task.name, table, journal, args.folds, args.seed, args.models.split(","))
    if args.command == "build":
        try:
            build_table(task, args.count, table, journal, workers=args.workers, noise_every=args.noise_every,
                        limit=args.limit, log=lambda line: print(line, flush=True))
        except ValueError as error:
            parser.exit(2, f"nasbench: {error}\n")
    frame = export_table(table, journal)
    print(f"{table.relative_to(ROOT)}: {len(frame)} rows, {frame['arch_id'].nunique()} architectures, "
          f"{table.stat().st_size / 1e6:.2f} MB")
    return 0


def surrogate_report(task: str, table: Path, journal: Path, folds: int, seed: int, models: list[str]) -> int:
    """Cross-validate on what the table holds now (the build may still be running: nothing is exported)."""
    from nas.bench.build import read_rows
    from nas.bench.surrogate import cross_validate, markdown

    frame = read_rows(table, journal)
    if frame.empty:
        print(f"nasbench: no rows for task {task!r} in {table} or {journal}", file=sys.stderr)
        return 2
    report = {"task": task, "rows": len(frame), **cross_validate(frame, folds=folds, seed=seed, models=models)}
    out = TABLES / f"{task}.surrogate.json"
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(markdown(report))
    print(f"\n{out.relative_to(ROOT)}: best {report['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
