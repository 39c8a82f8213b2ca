"""What a run directory holds after a search: ``trials.csv``, ``best/``, ``report.html``, PNG fronts."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from reports import Objective, ParetoFront, pareto_front, render_report, save_static_figures

from .checkpoint import replace_folder
from .io import staging_dir
from .records import TrialRecord, write_trials_csv

OBJECTIVES = (Objective("dice", "maximize"), Objective("macs", "minimize"))


def export_best(front: ParetoFront, run_dir: Path) -> list[Path]:
    """Copy each Pareto-optimal trial's checkpoint into ``best/``, swapped in as a whole."""
    run_dir = Path(run_dir)
    staging = staging_dir(run_dir / "best")
    try:
        exported = []
        for record in front.front:
            if record.checkpoint and (run_dir / record.checkpoint).is_dir():
                target = staging / Path(record.checkpoint).name
                shutil.copytree(run_dir / record.checkpoint, target)
                exported.append(run_dir / "best" / target.name)
        replace_folder(staging, run_dir / "best")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return exported


def write_run_outputs(records: list[TrialRecord], run_dir: Path, *, title: str,
                      config: dict[str, Any]) -> ParetoFront:
    """Table, Pareto checkpoints and report, each written atomically."""
    run_dir = Path(run_dir)
    write_trials_csv(records, run_dir / "trials.csv")
    front = pareto_front(records, OBJECTIVES)
    export_best(front, run_dir)
    save_static_figures(records, run_dir)
    render_report(records, run_dir / "report.html", title=title, config=config)
    return front
