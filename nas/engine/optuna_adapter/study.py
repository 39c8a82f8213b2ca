"""Thin Optuna adapter: open/resume the study, drive trials, turn frozen trials into records.

Everything Optuna-specific lives here; a trial reaches the core only as a ``Suggest``.
"""
from __future__ import annotations

import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.engine.policy import TrialStopped
from nas.engine.optuna_adapter.storage_fault import StorageFailed, save_unstored, storage_failure
from nas.engine.run_log import LOG_FILE, trial_log
from nas.engine.trial import failure_kind, failure_reason, release_memory
from nas.results.outcome import (FAILURE_KIND_ATTR, STOP_REASON_ATTR, FailureKind, StopReason, TrialState as State,
                                 classify_legacy)
from nas.engine.job import SAMPLERS
from nas.engine.objectives import Objectives
from nas.results.records import TrialRecord

CONFIG_ATTR = "search_config"
DATA_FINGERPRINT_ATTR = "data_fingerprint"  # nas.data.checks.data_fingerprint of the data the study was made on
HEARTBEAT_SECONDS, GRACE_SECONDS = 20, 60
JOURNAL_SCHEME = "journal:///"
MEMORY_STORAGE = ":memory:"  # a study in this process only (the benchmark's replays: nas.bench.replay)
WORKER_ATTR = "worker"  # {"host", "pid", "started"} of the process running the trial
INTERRUPTED = "interrupted"  # fail_reason prefix of a trial cut short by Ctrl-C: retried on resume
STALE = "stale"  # fail_reason prefix of a trial whose process died (kill -9, power loss): retried

# Heartbeats, fail_stale_trials and multivariate TPE are marked experimental; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class StudyConfigError(ValueError):
    """The run directory holds a study made with other settings; resuming would mix results."""


def default_storage(out: Path, workers: int) -> str:
    """The run's own storage: an existing one is reused; else SQLite for one process, a journal
    file (safe for several processes: SQLite locks up under concurrent writers) for more."""
    journal, sqlite = Path(out) / "study.journal", Path(out) / "study.db"
    if journal.exists() or (workers > 1 and not sqlite.exists()):
        return f"{JOURNAL_SCHEME}{journal}"
    return f"sqlite:///{sqlite}"


def run_storage(run: Path) -> str | None:
    """The URL of the storage a run directory holds (journal file or SQLite), or None."""
    for name, scheme in (("study.journal", JOURNAL_SCHEME), ("study.db", "sqlite:///")):
        if (Path(run) / name).is_file():
            return f"{scheme}{(Path(run) / name).resolve()}"
    return None


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB storages get a heartbeat, so a trial of a killed process on another machine is marked
    failed and retried once; ``journal:///path`` is Optuna's journal file storage."""
    if url == MEMORY_STORAGE:
        return optuna.storages.InMemoryStorage()
    if url.startswith(JOURNAL_SCHEME):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len(JOURNAL_SCHEME) - 1:]))
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    return optuna.storages.get_storage(url)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Seeded multi-objective samplers; TPE (the default) learns fastest from few trials.

    Every sampler but random learns from the constraint violations (``trial.set_constraint``): TPE
    and the NSGAs read them, and GP fits one Gaussian process per constraint (log constrained EHVI).
    GP models categorical dimensions natively; a conditional one (absent from some trials) is
    left to its independent (random) sampler. It needs scipy (``pip install .[gp]``).
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=10)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")


def open_study(storage_url: str, study_name: str, seed: int, config: dict[str, Any],
               objectives: Objectives = Objectives(), sampler: str = "tpe", *,
               data_fingerprint: str | None = None) -> optuna.Study:
    """Create the study or load it; a loaded study must have been made with the same ``config``, and
    on the same data when ``data_fingerprint`` is given (a study made before fingerprints gets one)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=make_storage(storage_url), study_name=study_name,
                                directions=objectives.directions, sampler=make_sampler(sampler, seed),
                                load_if_exists=True)
    if [d.name.lower() for d in study.directions] != objectives.directions:
        raise StudyConfigError(f"study {study_name!r} optimises {len(study.directions)} objectives, "
                               f"not {objectives}; use the same --objectives or a new --out/--study-name")
    if study.metric_names is None:  # named once, so optuna-dashboard and plots say "dice", "macs"
        study.set_metric_names(list(objectives.names))
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, config)
    elif stored != config:
        changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        details = ", ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise StudyConfigError(
            f"study {study_name!r} was made with other settings ({details}); "
            "use the same settings to resume or a new --out/--study-name"
        )
    if data_fingerprint is not None:
        known = study.user_attrs.get(DATA_FINGERPRINT_ATTR)
        if known is None:
            study.set_user_attr(DATA_FINGERPRINT_ATTR, data_fingerprint)
        elif known != data_fingerprint:
            raise StudyConfigError(
                f"the data of study {study_name!r} changed since it was made (other files, or files whose content "
                f"changed, e.g. masks edited; fingerprint {known[:12]} -> {data_fingerprint[:12]}): trials on other "
                "data cannot share a front; restore the data or use a new --out/--study-name")
    optuna.storages.fail_stale_trials(study)
    return study


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


TrialFunction = Callable[[optuna.Trial], dict[str, Any]]
MAX_DUPLICATES_IN_A_ROW = 25  # pruned trials in a row (duplicates or infeasible) that end a search
FIXED_PARAMS_ATTR = "fixed_params"
VIOLATION_ATTR = "constraint_violation"


def record_fixed_params(trial: optuna.Trial, fixed: dict[str, Any]) -> None:
    """Dimensions fixed by the restriction never reach the sampler; keep them beside its params."""
    if fixed:
        trial.set_user_attr(FIXED_PARAMS_ATTR, dict(fixed))


def record_violations(trial: optuna.Trial, verdict: Any) -> None:
    """Store a ``nas.costs.constraints.Verdict``'s violations on the trial (feasible ones too).

    Optuna's TPE reads them through ``trial.constraints`` and pushes sampling away from infeasible
    regions. ``set_constraint`` is the Optuna 5 form of the deprecated
    ``TPESampler(constraints_func=...)``; the list also lives in the ``constraint_violation`` user
    attr, in ``Constraints.limits()`` order. The trial policy prunes an infeasible trial.
    """
    for key, value in verdict.violations.items():
        trial.set_constraint(key, value)
    trial.set_user_attr(VIOLATION_ATTR, list(verdict.violations.values()))


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The finished (or, with several workers, running) trial whose sampled params equal this
    trial's: same spec, same seed, same result. Asked once the params are sampled, before training."""
    params = trial.params  # a deep copy on every read: read once
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if other.number != trial.number and other.params == params:
            return other.number
    return None


FAMILY_ATTR = "family"  # a warm-start trial's family member name (nas.results.family_records.FAMILY_KEY)
FAMILY_ATTRS = (FAMILY_ATTR, "family_target_macs", "family_exact")
STRATUM_ATTR = "cost_stratum"  # a queued cost-stratum trial's name, "stratum-<i>" (nas.engine.strata)
START_ATTRS = (*FAMILY_ATTRS, STRATUM_ATTR)  # what labels the trials a search queues before its sampler


def _process_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), so a reused pid is told apart."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_alive(pid: int, started: str | None = None) -> bool:
    """Process ``pid`` runs, and is the same process that started at ``started`` (when known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _process_started(pid)
    return started is None or now is None or now == started


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the same params again (once): the trial was lost through no fault of its own. A family
    member's (or cost stratum's) retry is still that member."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    kept = {key: trial.user_attrs[key] for key in START_ATTRS if key in trial.user_attrs}
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": trial.number, **kept},
        system_attrs={"failed_trial": trial.number, "retry_history": history}))


def recover_lost_trials(study: optuna.Study, *, local: bool) -> list[int]:
    """Fail the trials whose process is gone, and queue each lost trial once more.

    A RUNNING trial is stale only when its own process is gone: same host, and the pid no longer
    runs (or now belongs to a process started later). Holding this run directory's lock says
    nothing about other run directories that share the storage (``--storage``), so their live
    trials are never touched; trials of other hosts are left to the RDB heartbeat. ``local`` (the
    storage lives in the locked run directory) adds one case: a RUNNING trial that recorded no
    worker at all (written by an older version) is stale. Trials cut short by Ctrl-C are retried
    too. Returns the numbers of the trials queued again.
    """
    host = socket.gethostname()
    retried_from = {t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
    queued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        if not worker:
            dead = local
        else:
            dead = worker.get("host") == host and not _process_alive(int(worker.get("pid", -1)), worker.get("started"))
        if dead:
            study._storage.set_trial_user_attr(  # the trial is still RUNNING, so this is allowed
                trial._trial_id, "fail_reason", f"{STALE}: its process ({worker.get('pid', '?')}) "
                "ended without finishing it (killed or crashed); queued again")
            study._storage.set_trial_user_attr(trial._trial_id, FAILURE_KIND_ATTR, FailureKind.STALE.value)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        once = len(trial.system_attrs.get("retry_history", [])) < 1
        if _failure_kind(trial).retried and trial.number not in retried_from and once:
            _retry(study, trial)
            queued.append(trial.number)
    return queued


def _failure_kind(trial: FrozenTrial) -> FailureKind:
    stored = trial.user_attrs.get(FAILURE_KIND_ATTR)
    return FailureKind(stored) if stored else classify_legacy(State.FAIL, trial.user_attrs.get("fail_reason"))


def _start_trial(trial: optuna.Trial) -> None:
    """Who runs the trial (for lost-trial recovery); attrs a retried trial copied are reset."""
    trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid(),
                                      "started": _process_started(os.getpid())})
    for key in ("fail_reason", "epoch_dice", "metrics", "checkpoint", STOP_REASON_ATTR, FAILURE_KIND_ATTR,
                "stopped_at_epoch"):
        if key in trial.user_attrs:
            trial.set_user_attr(key, None)


def run_study(study: optuna.Study, n_finished: int, run_trial: TrialFunction,
              max_failures: int = 5, max_pruned_in_a_row: int = MAX_DUPLICATES_IN_A_ROW,
              objectives: Objectives = Objectives(), timeout: float | None = None,
              on_trial_done: Callable[[optuna.Study, FrozenTrial], None] | None = None,
              clock: Callable[[], float] | None = None, unstored: Path | None = None) -> str | None:
    """Run trials until ``n_finished`` have completed (resume-aware) or ``max_failures`` fail.

    ``max_pruned_in_a_row`` pruned trials in a row mean the sampler keeps proposing what was
    already trained (a small or heavily fixed space) or what violates the constraints (limits no
    architecture meets): the search stops instead of spinning. Early-stopped trials do not count
    toward it: stopping them is the engine working.

    ``run_trial(trial)`` returns the attributes to store (``metrics`` holds the objectives); an
    exception, a NaN loss or running out of memory marks the trial failed with its reason, frees
    memory, and the search goes on. ``timeout`` (seconds) ends the search after the running trial, by
    ``clock`` when given (a replay's simulated seconds), else by the wall clock.

    Returns why the search stopped early (``"failures"``, ``"pruned_in_a_row"``, ``"timeout"``), or None.
    A full or read-only storage (``storage_fault``) raises ``StorageFailed`` at once, the running trial
    left RUNNING, never FAIL; a trained one's attributes kept in ``unstored`` (a folder) if the disk allows.
    """
    if count_finished(study) >= n_finished:
        return None
    failures = pruned_in_a_row = 0
    stopped: str | None = None
    now = clock or time.monotonic
    started = now()

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        _start_trial(trial)
        clock = time.perf_counter()
        try:
            attrs = run_trial(trial)
        except TrialStopped as stop:
            trial.set_user_attr("fail_reason", stop.message)
            trial.set_user_attr(STOP_REASON_ATTR, stop.reason.value)
            if stop.epoch is not None:
                trial.set_user_attr("stopped_at_epoch", stop.epoch)
            if stop.measured or stop.reason == StopReason.INFEASIBLE:
                trial.set_user_attr("metrics", stop.measured)  # the costs that made it infeasible
            raise optuna.TrialPruned(stop.message) from None
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", f"{INTERRUPTED} (Ctrl-C); queued again on resume")
            trial.set_user_attr(FAILURE_KIND_ATTR, FailureKind.INTERRUPTED.value)
            raise
        except Exception as error:
            if storage_failure(error):
                raise StorageFailed(storage_failure(error)) from error
            reason = failure_reason(error)[:500]  # one line on the console; the traceback goes to the run's log
            trial_log().error("trial %d failed: %s", trial.number, reason, exc_info=True)
            print(f"    -> failed: {reason} (traceback in {LOG_FILE})", flush=True)
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr(FAILURE_KIND_ATTR, failure_kind(error).value)
            release_memory()
            raise
        finally:
            _store(trial, {"device_seconds": time.perf_counter() - clock})
        _store(trial, attrs, unstored)
        return objectives.values(attrs["metrics"])

    def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal failures, pruned_in_a_row, stopped
        early = trial.user_attrs.get(STOP_REASON_ATTR) in (StopReason.EARLY_STOPPED, StopReason.SCHEDULER,
                                                           StopReason.BUDGET) \
            or trial.user_attrs.get("stopped_at_epoch") is not None
        pruned_in_a_row = pruned_in_a_row + 1 if trial.state == TrialState.PRUNED and not early else 0
        if trial.state == TrialState.FAIL:
            failures += 1
        if on_trial_done is not None:
            on_trial_done(study, trial)
        if failures >= max_failures or pruned_in_a_row >= max_pruned_in_a_row:
            stopped = "failures" if failures >= max_failures else "pruned_in_a_row"
            study.stop()
        elif timeout is not None and now() - started >= timeout:
            stopped = "timeout"
            study.stop()

    def on_trial_end(study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's ``MaxTrialsCallback`` on finished trials, then ``stop_when_done``: one callback, as
        Optuna deep-copies the ended trial once per callback."""
        if count_finished(study) >= n_finished:
            study.stop()
        stop_when_done(study, trial)

    try:
        study.optimize(
            objective, n_trials=None, timeout=timeout if clock is None else None,
            callbacks=[on_trial_end],
            catch=(Exception,), gc_after_trial=clock is None,  # a simulated clock trains nothing: nothing to free
        )
    except Exception as error:  # a new trial or a callback's write refused by the storage
        if storage_failure(error):
            raise StorageFailed(storage_failure(error)) from error
        raise
    if stopped is None and timeout is not None and count_finished(study) < n_finished:
        stopped = "timeout"
    return stopped


def _store(trial: optuna.Trial, attrs: dict[str, Any], unstored: Path | None = None) -> None:
    """``attrs`` into the study; a storage that refuses them ends the search (``StorageFailed``)."""
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    except Exception as error:
        if not storage_failure(error):
            raise
        kept = save_unstored(unstored, trial.number, attrs) if "metrics" in attrs else None
        raise StorageFailed(f"{storage_failure(error)}; trial {trial.number} trained" +
                            (f", kept in {kept} for the resume" if kept else "")) from error


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_record(trial: FrozenTrial, quality: str = "dice") -> TrialRecord:
    """The trial as plain data; stop reason and failure kind are the stored enums, or read from the
    message for studies written before those attrs existed (``classify_legacy``). ``quality``: the
    study's first objective; only a Dice first objective may stand in for a missing stored Dice."""
    attrs = trial.user_attrs
    complete = trial.state == TrialState.COMPLETE
    metrics = dict(attrs.get("metrics") or {})
    # a pruned or failed trial's time and curve live beside the metrics; Dice is the first objective
    beside = {"seconds": attrs.get("device_seconds"), "epoch_dice": attrs.get("epoch_dice"),
              "dice": _finite(trial.values[0]) if complete and trial.values and quality == "dice" else None}
    metrics.update({key: value for key, value in beside.items() if value is not None and not metrics.get(key)})
    return TrialRecord.from_metrics(
        trial.number, trial.state.name, metrics, params={**attrs.get(FIXED_PARAMS_ATTR, {}), **trial.params},
        spec=attrs.get("spec"), message=attrs.get("fail_reason"), stop_reason=attrs.get(STOP_REASON_ATTR),
        failure_kind=attrs.get(FAILURE_KIND_ATTR), stopped_at_epoch=attrs.get("stopped_at_epoch"),
        checkpoint=attrs.get("checkpoint") if complete else None)


def study_records(study: optuna.Study) -> list[TrialRecord]:
    names = str((study.user_attrs.get(CONFIG_ATTR) or {}).get("objectives") or "dice")
    return [to_record(trial, names.split(",")[0].strip().lower()) for trial in study.get_trials(deepcopy=False)]
