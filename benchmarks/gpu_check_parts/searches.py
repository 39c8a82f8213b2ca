"""Parts 5 and 6, workers and ray: nas-search with two workers on one GPU, and on Ray with fractional GPUs."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
from typing import Any

from .base import Context, Skip
from .commands import cli_command, read_csv, run_command

# ---------------------------------------------------------------------------------------------
# Parts 5 and 6: --workers 2 on one GPU, Ray with fractional GPUs

def small_search_flags(ctx: Context, trials: int) -> list[Any]:
    flags: list[Any] = ["--trials", trials, "--epochs", 1 if ctx.smoke else 2,
                        "--image-size", 32 if ctx.smoke else 64, "--batch-size", 8, "--device", ctx.device.type,
                        "--sampler", "random", "--early-stop", "off", "--seed", 0,
                        "--cost-strata", 0]  # device paths, not the start: the first trial stays a family member
    if ctx.smoke:  # cheap corners only, so CI stays fast
        flags += ["--fix", "depth=3", "--fix", "base_width=8", "--fix", "blocks_per_stage=1"]
    return flags


def _study_trials(storage: Any) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="resunet", storage=storage)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        worker = trial.user_attrs.get("worker") or {}
        rows.append({"number": trial.number, "state": trial.state.name, "pid": worker.get("pid"),
                     "start": trial.datetime_start.timestamp() if trial.datetime_start else None,
                     "end": trial.datetime_complete.timestamp() if trial.datetime_complete else None})
    return rows


def _max_overlap(rows: list[dict[str, Any]]) -> int:
    events = []
    for r in rows:
        if r["start"] is not None and r["end"] is not None:
            events += [(r["start"], 1), (r["end"], -1)]
    best = level = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        level += delta
        best = max(best, level)
    return best


def part_workers(ctx: Context) -> dict[str, Any]:
    run = ctx.work / "workers_search"
    shutil.rmtree(run, ignore_errors=True)
    trials = 2 if ctx.smoke else 4
    result = run_command(ctx, cli_command("nas-search", "--workers", 2, "--out", run,
                                          *small_search_flags(ctx, trials)),
                         label="workers-search", cap_s=240)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    rows = _study_trials(JournalStorage(JournalFileBackend(str(run / "study.journal"))))
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    pids = sorted({r["pid"] for r in rows if r["pid"] is not None})
    csv_rows = read_csv(run / "trials.csv")
    devices = sorted({r.get("latency_device") or "" for r in csv_rows if r["state"] == "COMPLETE"})
    logs = sorted(p.name for p in (run / "logs").glob("worker-*.log"))
    if len(complete) < trials:
        raise RuntimeError(f"{len(complete)}/{trials} trials finished")
    if len(pids) < 2:
        raise RuntimeError(f"only {len(pids)} worker process ran trials")
    if ctx.cuda and not all(d.startswith("cuda") for d in devices):
        raise RuntimeError(f"trials ran on {devices}, not on the GPU")
    overlap = _max_overlap(rows)
    return {
        "summary": f"{len(complete)} finished trials by {len(pids)} worker processes on {', '.join(devices)} in "
                   f"{result.seconds:.0f} s; at most {overlap} trials ran at the same time",
        "seconds": result.seconds, "trials": rows, "worker_pids": pids, "devices": devices,
        "max_concurrent_trials": overlap, "worker_logs": logs,
    }


def part_ray(ctx: Context) -> dict[str, Any]:
    if importlib.util.find_spec("ray") is None:
        raise Skip("ray is not installed (pip install .[ray])")
    ctx.need_cuda()
    run = ctx.work / "ray_search"
    shutil.rmtree(run, ignore_errors=True)
    result = run_command(ctx, cli_command("nas-search", "--backend", "ray", "--gpus-per-trial", 0.5,
                                          "--cpus-per-trial", 1, "--out", run, *small_search_flags(ctx, 2)),
                         label="ray-search", cap_s=300)
    csv_rows = read_csv(run / "trials.csv")
    complete = [r for r in csv_rows if r["state"] == "COMPLETE"]
    devices = sorted({r.get("latency_device") or "" for r in complete})
    if len(complete) < 2 or not all(d.startswith("cuda") for d in devices):
        raise RuntimeError(f"{len(complete)} finished trials on {devices}")
    return {"summary": f"{len(complete)} Ray trials with 0.5 GPU each on {', '.join(devices)} in {result.seconds:.0f} s",
            "seconds": result.seconds, "devices": devices, "finished": len(complete)}


