"""``nas-report --run DIR``: rebuild ``report.html``, ``trials.csv`` and the static fronts from a run's study.

Reads the study storage only (never trains, never changes ``best/``); bad input (including a run
directory it cannot write) ends with one line on stderr and exit code 2, before anything is written.
A write that fails midway (disk full) ends with one line and exit code 1; every file is written
atomically, so each one is the new or the previous version, and the study is only read. A ``best/``
checkpoint that cannot be loaded (corrupt, a pickle) is named in a warning; its overlay is skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nas.io import unwritable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-report",
        description="Rebuild report.html (+ pareto_*.png/svg, trials.csv) of a nas-search run from its study.",
    )
    parser.add_argument("--run", required=True, help="run directory written by nas-search")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///<run>/study.db)")
    parser.add_argument("--study-name", default=None,
                        help="study inside the storage (default: the only one there)")
    parser.add_argument("--no-overlays", action="store_true",
                        help="skip the prediction overlays (no model is loaded)")
    parser.add_argument("--overlay-images", type=int, default=3,
                        help="validation images per model in the prediction overlays (default 3)")
    return parser


def _title(config: dict) -> str:
    data = str(config.get("data", "?"))
    name = data if data.startswith("synthetic") else Path(data).name
    return f"nas-search: {config.get('space', '?')} on {name}"


def _warn_unloadable(run: Path, prog: str) -> None:
    """One warning line per ``best/`` checkpoint the overlays cannot load (the page says why too)."""
    from nas.deploy.checkpoint import CheckpointError, load_checkpoint

    for folder in sorted((run / "best").glob("trial_*")):
        try:
            load_checkpoint(folder)  # safetensors only: a pickle is refused, never unpickled
        except (CheckpointError, OSError) as error:
            print(f"{prog}: warning: {error} (its overlay is skipped)", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not run.is_dir():
        parser.error(f"--run {args.run}: no such run directory")
    if args.overlay_images < 1:
        parser.error(f"--overlay-images must be >= 1, got {args.overlay_images}")
    problem = unwritable(run, folder=True)
    if problem:
        parser.error(f"--run {args.run}: {problem}")
    from nas.engine.optuna_adapter.study import run_storage  # imports Optuna, but only once the arguments are known to be good

    if args.storage is None:
        storage = run_storage(run)
        if storage is None:
            parser.error(f"--run {args.run}: no study.db or study.journal in it (pass --storage for another storage)")
    elif "://" not in args.storage:
        parser.error(f"--storage must be a URL such as sqlite:///path/study.db, got {args.storage!r}")
    else:
        storage = args.storage

    import optuna  # late: argument errors stay fast

    from nas.engine.optuna_adapter.study import CONFIG_ATTR, make_storage, study_records
    from nas.run.outputs import write_run_outputs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        opened = make_storage(storage)
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
    except Exception as error:  # unreadable or foreign storage
        where = f"--storage {storage}" if args.storage else storage.split(":///", 1)[-1]
        parser.error(f"{where}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]})")
    if args.study_name is None and len(names) != 1:
        found = ", ".join(names) or "none"
        parser.error(f"{storage}: {'no study' if not names else 'several studies'} in it "
                     f"(found: {found}); pass --study-name")
    name = args.study_name or names[0]
    if name not in names:
        parser.error(f"--study-name {name!r}: no such study in {storage} (found: {', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=name, storage=opened)
    search_config = dict(study.user_attrs.get(CONFIG_ATTR) or {})
    records = study_records(study)
    config = {**search_config, "study": name, "storage": storage}
    overlays = not args.no_overlays and bool(search_config)
    if overlays:
        _warn_unloadable(run, parser.prog)
    try:
        write_run_outputs(records, run, title=_title(search_config), config=config, study=study,
                          overlays=overlays, overlay_images=args.overlay_images, export=False)
    except OSError as error:  # disk full, folder made read-only meanwhile
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    finished = sum(r.finished for r in records)
    print(f"nas-report: {len(records)} trial(s), {finished} finished -> {run / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
