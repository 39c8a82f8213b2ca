"""``nas-report --run DIR``: rebuild ``report.html``, ``trials.csv`` and the static fronts from a run's study.

Reads the study storage only (never trains, never changes ``best/``); bad input ends with one line
on stderr and exit code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not run.is_dir():
        parser.error(f"--run {args.run}: no such run directory")
    if args.overlay_images < 1:
        parser.error(f"--overlay-images must be >= 1, got {args.overlay_images}")
    if args.storage is None:
        if not (run / "study.db").is_file():
            parser.error(f"--run {args.run}: no study.db in it (pass --storage for another storage)")
        storage = f"sqlite:///{(run / 'study.db').resolve()}"
    elif "://" not in args.storage:
        parser.error(f"--storage must be a URL such as sqlite:///path/study.db, got {args.storage!r}")
    else:
        storage = args.storage

    import optuna  # late: argument errors stay fast

    from .optuna_study import CONFIG_ATTR, study_records
    from .outputs import write_run_outputs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as error:  # unreadable or foreign storage
        parser.error(f"--storage {storage}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]})")
    if args.study_name is None and len(names) != 1:
        found = ", ".join(names) or "none"
        parser.error(f"{storage}: {'no study' if not names else 'several studies'} in it "
                     f"(found: {found}); pass --study-name")
    name = args.study_name or names[0]
    if name not in names:
        parser.error(f"--study-name {name!r}: no such study in {storage} (found: {', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=name, storage=storage)
    search_config = dict(study.user_attrs.get(CONFIG_ATTR) or {})
    records = study_records(study)
    config = {**search_config, "study": name, "storage": storage}
    write_run_outputs(records, run, title=_title(search_config), config=config, study=study,
                      overlays=not args.no_overlays and bool(search_config), overlay_images=args.overlay_images,
                      export=False)
    finished = sum(r.finished for r in records)
    print(f"nas-report: {len(records)} trial(s), {finished} finished -> {run / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
