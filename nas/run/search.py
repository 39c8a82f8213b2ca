"""``run_search(SearchConfig)``: the search ``nas-search`` runs, callable from Python (a notebook).

Everything is checked before anything is written (``nas.run.search_plan.prepare``). Then the run
directory is locked, the study opened (or resumed), the trials run (in this process, in ``workers``
processes, or on Ray) and the table, ``best/`` and report written. Ctrl-C and SIGTERM end a search
the same way: the running trial is marked interrupted (queued again on resume) and the outputs of
the finished trials are written before returning.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from nas.data.checks import data_fingerprint
from nas.data.patches import describe_epoch, describe_foreground
from nas.engine.early_stop import early_stop_policy
from nas.engine.job import LiveView, SearchJob
from nas.engine.optuna_adapter import (StudyConfigError, complete_unstored, count_finished, open_study,
                                       outputs_after_failure, recover_lost_trials, run_optuna_search, study_records)
from nas.engine.run_lock import RunLocked, lock_run
from nas.engine.run_log import run_log
from nas.engine.trial import TrialSettings
from nas.engine.workers import run_workers
from nas.io import atomic_write_json, clean_stale_writes, read_json
from nas.results.records import TrialRecord
from nas.run.family_run import train_family_baselines, warm_start_until
from nas.run.finalist_run import FinalizeError, FinalOptions, finalize_run
from nas.run.outputs import write_run_outputs
from nas.run.places import storage_file
from nas.run.run_files import (SEARCH_END_FILE, below_trivial, ensure_trivial, orphan_checkpoints, read_trivial,
                               trivial_floor)
from nas.run.search_config import SearchConfig, SearchError
from nas.run.search_plan import Plan, gpu_count, gpus_per_trial, prepare, study_settings
from nas.run.signals import Terminated, sigterm_as_interrupt, sigterm_deferred
from nas.run.start import start_search
from nas.stages.baseline_training import train_baselines
from nas.stages.family_planning import FamilyMember
from nas.train.trainer import resolve_device
from reports.trivial import split_block, trivial_line

__all__ = ["SearchConfig", "SearchError", "SearchResult", "Terminated", "run_search", "run_worker"]

# How a search ended; the CLI maps each to its exit code (nas.cli.search.EXIT_CODES).
STATUSES = {"completed": "the wanted trials finished", "timeout": "--timeout reached (the same call resumes)",
            "exhausted": "the restricted space looks exhausted", "failures": "--max-failures trials failed",
            "infeasible": "no sampled architecture meets the constraints",
            "interrupted": "Ctrl-C (KeyboardInterrupt)", "terminated": "SIGTERM",
            "storage": "the study's storage or the run folder stopped taking writes (disk full, read-only)"}
INTERRUPTED_LINE = "\ninterrupted: writing the report of the finished trials"


@dataclass(frozen=True)
class SearchResult:
    status: str  # a key of STATUSES
    out: Path  # the run directory
    front: tuple[TrialRecord, ...] = ()  # the Pareto front of the search's objectives
    finished: int = 0  # finished trials in the study
    message: str | None = None  # the stop line, when the search stopped early

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "timeout", "exhausted")


def run_search(config: SearchConfig) -> SearchResult:
    """Run (or resume) the search ``config`` describes; ``SearchError`` (one line) if it cannot start.

    ``OSError`` if a write fails midway (disk full): every file is then the old or the new version.
    """
    plan = prepare(config)
    existed = plan.out.exists()
    plan.out.mkdir(parents=True, exist_ok=True)
    lock = None
    try:
        if config.worker_id is None:
            lock = lock_run(plan.out)
        storage_existed = _storage_file_exists(plan.storage)
        study = _open_study(plan)
        if config.worker_id is None:
            _refuse_orphans(plan, study, storage_existed)
    except (RunLocked, SearchError) as error:
        if lock is not None:
            lock.close()
        if not existed:  # made by this call for a study that could not be opened: leave nothing behind
            shutil.rmtree(plan.out, ignore_errors=True)
        raise SearchError(str(error)) from None
    try:
        return _run(plan, study)
    finally:
        if lock is not None:
            lock.close()


def run_worker(config: SearchConfig) -> int:
    """A ``--workers`` process (``nas.engine.workers`` starts it): exit code 0 when its search ended well."""
    return 0 if run_search(config).ok else 1


def _storage_file_exists(url: str) -> bool:
    path = storage_file(url)
    return path is None or path.exists()


def _refuse_orphans(plan: Plan, study: Any, storage_existed: bool) -> None:
    """Checkpoints the study does not know (its study.db deleted or replaced) would be overwritten by a
    study that numbers its trials from 0 again: refuse, and remove the study this call just created."""
    orphans = orphan_checkpoints(plan.out, (record.number for record in study_records(study)))
    if not orphans:
        return
    created = storage_file(plan.storage)
    if not storage_existed and created is not None:
        for path in (created, created.with_name(created.name + ".lock")):
            path.unlink(missing_ok=True)
    shown = ", ".join(orphans[:3]) + (", ..." if len(orphans) > 3 else "")
    raise SearchError(f"--out {plan.out} holds {len(orphans)} checkpoint(s) of trials that study "
                      f"{plan.study_name!r} in {plan.storage} does not have ({shown}): its study was deleted or "
                      "replaced, and a new one would overwrite them; use a new --out, or move trials/ and best/ aside")


def _open_study(plan: Plan) -> Any:
    config = plan.config
    # Each worker samples with its own seed: the same seed would propose the same architectures
    # (wrapped into the samplers' 32-bit range, so --seed 4294967295 works with workers too).
    seed = config.sampler_seed
    seed = (seed + 7919 * (config.worker_id + 1)) % 2**32 if config.worker_id is not None else seed
    try:
        return open_study(plan.storage, plan.study_name, seed, study_settings(plan), plan.objectives, config.sampler,
                          data_fingerprint=data_fingerprint(plan.data))
    except StudyConfigError as error:
        raise SearchError(str(error)) from None
    except Exception as error:  # a server that refuses, a file that is not a database
        first = (str(error).splitlines() or [""])[0]
        raise SearchError(f"--storage {plan.storage}: cannot be opened ({type(error).__name__}: {first})") from None


def _run(plan: Plan, study: Any) -> SearchResult:
    config, out = plan.config, plan.out
    if config.worker_id is None:
        own_storage = plan.storage.endswith((str(out / "study.db"), str(out / "study.journal")))
        for path in clean_stale_writes(out):
            _say(f"cleaned up after an interrupted write: {path.relative_to(out)}")
        for number in complete_unstored(study, out / "logs", plan.objectives.values):
            _say(f"trial {number} had trained when the storage failed: completed from what logs/ kept")
        for number in recover_lost_trials(study, local=own_storage):
            _say(f"trial {number} was lost (killed or interrupted): queued again")
    settings = TrialSettings(image_size=config.image_size, train=config.recipe(),
                             measure_train_memory=plan.objectives.needs_memory, latency_engine=config.latency_engine)
    job = SearchJob(space=plan.space, data=plan.data, settings=settings, out=out, trials=config.trials,
                    restriction=plan.restriction, constraints=plan.constraints, objectives=plan.objectives,
                    early_stop=early_stop_policy(config.early_stop, config.epochs, config.early_stop_rungs),
                    max_failures=config.max_failures, max_pruned_in_a_row=config.max_pruned_in_a_row,
                    timeout=config.timeout, warm_start_until=warm_start_until(config))
    already = count_finished(study)
    live = LiveView(out, config.trials, plan.objectives, already)
    if config.worker_id is not None:
        _say(f"nas-search worker {config.worker_id} (pid {os.getpid()}): storage {plan.storage}")
        with run_log(out), sigterm_as_interrupt():
            try:
                stopped = run_optuna_search(job, study)
            except KeyboardInterrupt as error:
                return SearchResult(_interruption(error), out)
        if str(stopped).startswith("storage: "):  # the parent sees exit code 1 and this line in the worker's log
            _say(f"nas-search: stopped: {stopped.removeprefix('storage: ')}", error=True)
        return SearchResult("storage" if str(stopped).startswith("storage: ") else "completed", out)
    data = plan.data
    rungs = "" if job.early_stop is None else f" at epochs {','.join(map(str, job.early_stop.rungs)) or '(none)'}"
    _say(f"nas-search: space {plan.space.name}, data {data.name} ({len(data.train_images)} train / "
         f"{len(data.val_images)} val / {len(data.test_images)} test images, {data.in_channels} channel(s)), "
         f"device {resolve_device(config.device)}, {already}/{config.trials} trials finished, "
         f"objectives {plan.objectives}, sampler {config.sampler}, early stop {config.early_stop}{rungs}, "
         f"{config.workers} worker(s), out {out}")
    _say(f"  {data.test_note or 'no test split'}; {describe_epoch(data, config.image_size, config.patches_per_epoch)}")
    _say(f"  {describe_foreground(data, config.foreground_fraction)}")
    _say(f"  {trivial_line(split_block(ensure_trivial(out, data)))}")  # what a model's Dice must beat
    family = start_search(plan, study, _say)  # the family planned once per study; the start trials queued
    with run_log(out), sigterm_as_interrupt():  # failed trials: one line here, tracebacks in logs/search.log
        stopped, interrupted = _search(plan, job, study, live, run_optuna_search, family)
    with sigterm_deferred() as late:  # the outputs are finished first; SIGTERM then ends the process
        if str(stopped).startswith("storage: "):  # disk full, read-only: outputs as far as the disk allows
            return SearchResult("storage", out, *outputs_after_failure(
                lambda: _write_outputs(plan, study, live, None, None), stopped, lambda line: _say(line, error=True)))
        result = _write_outputs(plan, study, live, stopped, interrupted)
    if late and result.status not in ("interrupted", "terminated"):
        return SearchResult("terminated", out, result.front, result.finished, result.message)
    return result


def _search(plan: Plan, job: SearchJob, study: Any, live: LiveView, search: Callable[..., str | None],
            family: list[FamilyMember]) -> tuple[str | None, str | None]:
    """Run the trials, then the baselines (presets, and the family when no warm start made it study
    trials); returns (why the engine stopped early, interruption or None)."""
    config = plan.config
    interrupted = stopped = None
    try:
        if config.workers > 1:
            configs = [replace(config, workers=1, worker_id=i, storage=plan.storage, out=plan.out)
                       for i in range(config.workers)]
            stopped = run_workers(
                run_worker, configs, plan.out, poll=lambda: live.update(study_records(study)),
                recover=lambda: recover_lost_trials(study, local=False),
                remaining=lambda: config.trials - count_finished(study), max_failures=config.max_failures,
                gpu_count=gpu_count(config.device))
        elif config.backend == "ray":
            from nas.engine.ray_adapter import run_ray_search  # lazy: imports Ray, only for --backend ray

            stopped = run_ray_search(job, study, storage=plan.storage, study_name=plan.study_name, seed=config.sampler_seed,
                                     sampler=config.sampler, ray_address=config.ray_address,
                                     gpus_per_trial=gpus_per_trial(config), cpus_per_trial=config.cpus_per_trial,
                                     resume=True)
        else:
            stopped = search(job, study, live)
    except KeyboardInterrupt as error:
        interrupted = _interruption(error)
        _say(INTERRUPTED_LINE, error=True)
    if str(stopped).startswith("storage: "):  # no baselines or finalists on a storage that refuses writes
        return stopped, None
    if config.baselines and interrupted is None:
        def on_epoch(epoch: int, loss: float, dice: float) -> None:
            _say(f"    epoch {epoch}/{config.epochs}  loss {loss:.3f}  val dice {dice:.3f}")

        try:
            train_baselines(list(config.baselines), plan.data, job.settings, plan.out, on_epoch=on_epoch)
            train_family_baselines(plan, family, job.settings, _say, on_epoch)
        except KeyboardInterrupt as error:
            interrupted = _interruption(error)
            _say(INTERRUPTED_LINE, error=True)
    if config.finalists and interrupted is None:
        try:
            finalize_run(plan.out, study_records(study), plan.settings.updated(objectives=plan.objectives),
                         plan.data, FinalOptions(config.finalists, config.final_epochs, config.final_seeds,
                                                 config.device), log=_say)
        except FinalizeError as error:  # the trials are done: say why the stage did not run, keep the outputs
            _say(f"nas-search: finalist stage skipped: {error}", error=True)
        except KeyboardInterrupt as error:
            interrupted = _interruption(error)
            _say(INTERRUPTED_LINE, error=True)
    return stopped, interrupted


def _write_outputs(plan: Plan, study: Any, live: LiveView, stopped: str | None, interrupted: str | None) -> SearchResult:
    """Table, ``best/``, report; the summary on the console; how the search ended."""
    config, out = plan.config, plan.out
    records = study_records(study)
    live.update(records)
    settings = plan.settings.updated(objectives=plan.objectives, trials=config.trials, study=plan.study_name,
                                     storage=plan.storage, device=str(resolve_device(config.device)),
                                     torch_threads=torch.get_num_threads(), search_seed=config.search_seed)
    finished = sum(r.finished for r in records)
    below = _record_ending(out, config, records, finished, stopped)
    front = write_run_outputs(records, out, title=f"nas-search: {plan.space.name} on {plan.data.name}",
                              settings=settings)
    if below:
        _say(below)
    _say(f"\n{finished} finished trial(s); Pareto front ({' vs '.join(plan.objectives.names)}):")
    for record in front.front:
        _say(f"  trial {record.number:>3}  dice {record.dice:.3f}  {record.macs / 1e6:.1f} MMAC  "
             f"{record.latency_ms:.2f} ms  -> {_deployed(out, record)}")
    _say(f"report: {out / 'report.html'}\ntable:  {out / 'trials.csv'}")
    status, message = _ending(config, records, finished, stopped, interrupted)
    return SearchResult(status, out, tuple(front.front), finished, message)


def _record_ending(out: Path, config: SearchConfig, records: list[TrialRecord], finished: int,
                   stopped: str | None) -> str:
    """Write ``search_end.json`` (the budget, why the search stopped, how many trained models are no
    better than a trivial predictor) and add the count to ``status.json``; returns the console line
    about those models ("" when there is none)."""
    trivial = read_trivial(out)
    below = below_trivial(records, trivial)
    end = {"trials": config.trials, "timeout": config.timeout, "stopped": stopped, "finished": finished,
           "below_trivial": len(below)}
    try:
        atomic_write_json(out / SEARCH_END_FILE, end)
        status = read_json(out / "status.json") if (out / "status.json").is_file() else {}
        if isinstance(status, dict):
            atomic_write_json(out / "status.json", {**status, "below_trivial": len(below), "stopped": stopped})
    except (OSError, ValueError):
        pass  # conveniences beside the study: the search's outputs come first
    floor = trivial_floor(trivial)
    if not below or floor is None:
        return ""
    return (f"{len(below)} of {finished} trained model(s) no better than the trivial predictor ({floor[0]}, "
            f"validation Dice {floor[1]:.3f}): trial(s) {', '.join(map(str, sorted(below)))}; not deployed to best/")


def _deployed(out: Path, record: TrialRecord) -> str:
    """Where a front model was deployed; never a path that does not exist."""
    folder = out / "best" / Path(record.checkpoint or "").name
    if record.checkpoint and folder.is_dir():
        return str(folder)
    if record.number in below_trivial([record], read_trivial(out)):
        return "not deployed: validation Dice not above the trivial predictor's"
    return f"no checkpoint ({record.checkpoint} is missing)"


def _ending(config: SearchConfig, records: list[TrialRecord], finished: int, stopped: str | None,
            interrupted: str | None) -> tuple[str, str | None]:
    """The status, and the stop line (printed here: stdout when it is no failure, else stderr)."""
    if stopped == "timeout":
        message = (f"nas-search: stopped: --timeout {config.timeout:g} s reached with {finished}/{config.trials} "
                   "finished; the same command resumes")
        _say(message)
        return (interrupted or "timeout"), message
    if stopped == "failures":
        message = f"nas-search: stopped: {config.max_failures} trials failed (see fail_reason in trials.csv)"
        _say(message, error=True)
        return "failures", message
    if stopped == "pruned_in_a_row":
        last = sorted(records, key=lambda r: r.number)[-config.max_pruned_in_a_row:]
        reasons = [r.fail_reason or "" for r in last if r.state == "PRUNED"]
        if reasons and all(reason.startswith("infeasible") for reason in reasons):
            message = (f"nas-search: stopped: the last {len(reasons)} sampled architectures all violate the "
                       f"constraints ({reasons[-1]}); no architecture of the (restricted) space may meet them: "
                       "relax the --max-* limits or restrict the space to smaller architectures")
            _say(message, error=True)
            return "infeasible", message
        message = ("nas-search: stopped: the sampler keeps proposing architectures already trained "
                   "(the restricted space looks exhausted)")
        _say(message)
        return "exhausted", message
    return (interrupted or "completed"), None


def _interruption(error: BaseException) -> str:
    return "terminated" if isinstance(error, Terminated) else "interrupted"


def _say(text: str, *, error: bool = False) -> None:
    print(text, file=sys.stderr if error else sys.stdout, flush=True)
