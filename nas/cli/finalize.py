"""``nas-finalize --run DIR``: retrain a finished search's Pareto members and baselines properly.

At most ``--finalists`` front members (spread along it) and the run's baselines are trained for
``--final-epochs`` (default 3x the search's) with ``--final-seeds`` seeds each; ``best/`` then holds
the finalised weights and the report a "Finalists" section (Dice per seed, mean +- std, 95 % CI on
the test images, search vs final Dice with Kendall tau, one verdict per baseline). Rerunning the same
command after a kill trains only the (finalist, seed) pairs that have no checkpoint yet.

Bad input is one line and exit code 2 before anything is written; a write that fails midway is one
line and exit code 1; Ctrl-C exits 130 with every finished seed kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nas.cli.common import Parser, add_device, add_storage, check_device, check_writable, write_failed
from nas.cli.final_flags import add_final_flags

PROG = "nas-finalize"
DEFAULT_FINALISTS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Retrain a run's Pareto members and baselines with a longer recipe "
                                           "and several seeds; report test Dice with confidence intervals.")
    parser.add_argument("--run", required=True, help="run directory written by nas-search")
    add_final_flags(parser, finalists_default=DEFAULT_FINALISTS,
                    finalists_help=f"at most K Pareto members, spread along the front (default {DEFAULT_FINALISTS})")
    add_device(parser)
    add_storage(parser, storage_help="Optuna storage URL (default: the run's study.db or study.journal)",
                name_help="study inside the storage (default: the only one there)")
    parser.add_argument("--no-overlays", action="store_true", help="skip the report's prediction overlays")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.finalists < 1:
        parser.error("--finalists must be at least 1 here (nas-search takes 0: no finalist stage)")
    check_device(parser, args.device)
    run = Path(args.run)
    if not run.is_dir():
        parser.error(f"--run {args.run}: no such run directory")
    check_writable(parser, "--run", args.run, folder=True)
    from nas.run.finalist_run import FinalOptions, open_for_finalize
    from nas.run.open import RunError

    try:
        opened, data = open_for_finalize(run, storage=args.storage, study_name=args.study_name)
    except RunError as error:
        parser.error(str(error))
    options = FinalOptions(args.finalists, args.final_epochs, args.final_seeds, args.device)
    return _finalize(parser, run, opened, data, options, overlays=not args.no_overlays)


def _finalize(parser: argparse.ArgumentParser, run: Path, opened, data, options, *, overlays: bool) -> int:
    """Lock the run, clean what a killed run left, train what is missing, write best/ and the report."""
    from nas.engine.run_lock import RunLocked, lock_run
    from nas.io import clean_stale_writes
    from nas.run.finalist_run import FinalizeError, finalize_run
    from nas.run.outputs import write_run_outputs

    try:
        lock = lock_run(run)
    except RunLocked as error:
        parser.error(str(error))
    try:
        for path in clean_stale_writes(run):
            print(f"{PROG}: cleaned up after an interrupted write: {path.relative_to(run)}", flush=True)
        try:
            finalize_run(run, opened.records, opened.settings, data, options)
        except FinalizeError as error:
            parser.error(str(error))
        write_run_outputs(opened.records, run, title=opened.title, settings=opened.run_settings(), overlays=overlays)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; finished seeds are kept, the same command resumes", file=sys.stderr)
        return 130
    except OSError as error:
        return write_failed(PROG, error)
    finally:
        lock.close()
    print(f"{PROG}: summary {run / 'finalists' / 'finalists.json'}; report {run / 'report.html'}; best/ holds the "
          "finalised weights", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
