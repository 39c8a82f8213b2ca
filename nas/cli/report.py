"""``nas-report --run DIR``: rebuild ``report.html``, ``trials.csv`` and the static fronts from a run's study.

Reads the run through ``nas.run.open.open_run`` only (never trains, never changes ``best/``); bad
input (including a run directory it cannot write) ends with one line on stderr and exit code 2,
before anything is written. A write that fails midway (disk full) ends with one line and exit
code 1; every file is written atomically, so each one is the new or the previous version, and the
study is only read. A ``best/`` checkpoint that cannot be loaded (corrupt, a pickle, edited) is
someone else's hostile input like any other: one line, exit 2, nothing written (``--no-overlays`` loads
no model and rebuilds the page without it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nas.cli.common import Parser, add_storage, check_writable, number, write_failed
from nas.run.limits import integers

PROG = "nas-report"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Rebuild report.html (+ pareto_*.png/svg, trials.csv) of a nas-search run from its study.",
    )
    parser.add_argument("--run", required=True, help="run directory written by nas-search")
    add_storage(parser, storage_help="Optuna storage URL (default: sqlite:///<run>/study.db)",
                name_help="study inside the storage (default: the only one there)")
    parser.add_argument("--no-overlays", action="store_true",
                        help="skip the prediction overlays (no model is loaded)")
    parser.add_argument("--overlay-images", type=number(integers(1, 64)), default=3, metavar="N",
                        help="validation images per model in the prediction overlays (default 3)")
    return parser


def _unloadable(run: Path) -> str | None:
    """Why the first ``best/`` checkpoint the overlays would load cannot be loaded, or None."""
    from nas.deploy.checkpoint import CheckpointError, load_checkpoint

    for folder in sorted((run / "best").glob("trial_*")):
        try:
            load_checkpoint(folder)  # safetensors only: a pickle is refused, never unpickled
        except (CheckpointError, OSError) as error:
            return f"{error} (move it aside, or rebuild the page without overlays: --no-overlays)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not run.is_dir():
        parser.error(f"--run {args.run}: no such run directory")
    check_writable(parser, "--run", args.run, folder=True)
    from nas.run.open import RunError, open_run  # reads the storage: only once the arguments are known to be good
    from nas.run.outputs import write_run_outputs

    try:
        opened = open_run(run, storage=args.storage, study_name=args.study_name)
    except RunError as error:
        parser.error(str(error))
    overlays = not args.no_overlays and opened.settings.stored
    problem = _unloadable(run) if overlays else None
    if problem:
        parser.error(problem)
    try:
        write_run_outputs(opened.records, run, title=opened.title, settings=opened.run_settings(), overlays=overlays,
                          overlay_images=args.overlay_images, export=False)
    except OSError as error:  # disk full, folder made read-only meanwhile
        return write_failed(PROG, error)
    finished = sum(r.finished for r in opened.records)
    print(f"{PROG}: {len(opened.records)} trial(s), {finished} finished -> {run / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
