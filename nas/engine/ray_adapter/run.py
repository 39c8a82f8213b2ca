"""``run_ray_search``: the same space, trial policy and study as the Optuna path, scheduled by Ray Tune.

Ray Tune's ``OptunaSearch`` proposes architectures through the space's own ``sample_spec``
(define-by-run, restricted like the Optuna path) and a Ray worker runs the trial policy on each one
(``trainable.ray_trial``); ``searcher.StudySearcher`` writes every finished Ray trial into the
caller's Optuna study, so ``trials.csv``, ``best/`` and the report see Ray trials like any other.
The warm-start trials a study holds (``--warm-start family``) are the first points ``OptunaSearch``
proposes, and fill their own trials in the study (``searcher``).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from search_spaces import get_space
from search_spaces.overrides import RestrictedSuggest, Restriction

from nas.engine.job import LiveView, SearchJob
from nas.engine.optuna_adapter.foreign import queued_start, warm_copy
from nas.engine.optuna_adapter.study import count_finished, make_sampler
from nas.engine.ray_adapter import searcher as session_module
from nas.engine.ray_adapter.searcher import EXPERIMENT_DIR, StudySearcher, _Session
from nas.engine.ray_adapter.trainable import ray_trial
from nas.io import atomic_write_text

INSTALL_HINT = "the Ray backend needs `pip install .[ray]`"
AUTH_HINT = ("--ray-address {address}: the Ray head refused this process (InvalidAuthToken: it uses token "
             "authentication, as `ray start --head` sets up); set RAY_AUTH_MODE=token in the environment (the "
             "token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN) and run the command again")


class RayConnectError(ValueError):
    """``--ray-address`` could not be joined; the message is one line saying why and what to do."""
DONE_MARKER = "nas_search_done"
FAMILY_FILE = "nas_family.json"  # the numbers of the warm-start trials handed to the experiment's searcher


def check_ray_backend(device: str, gpus_per_trial: float, cpus_per_trial: float) -> None:
    """Before anything is written: RuntimeError without Ray, ValueError for resources that cannot work."""
    try:
        import ray  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    if not cpus_per_trial > 0 or not gpus_per_trial >= 0:
        raise ValueError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got "
                         f"{cpus_per_trial} and {gpus_per_trial}")
    if device.startswith("cuda") and gpus_per_trial == 0:
        raise ValueError("--device cuda with --backend ray needs --gpus-per-trial > 0")


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Any]:
    """File descriptor 2 into a temp file inside the block (Ray's core logs its retries there, not
    through Python); yields the file, read it before the block ends."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def connect_ray(address: str) -> None:
    """``ray.init(address=...)``; a refusal is a ``RayConnectError`` with one line (a missing auth token
    says to set ``RAY_AUTH_MODE=token``) instead of a page of core warnings and a traceback."""
    import ray

    with _stderr_captured() as sink:
        try:
            ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
            return
        except (ConnectionError, RuntimeError, ValueError) as error:
            sink.seek(0)
            said = sink.read().decode("utf-8", "replace") + str(error)
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    if "InvalidAuthToken" in said or "Unauthenticated" in said:
        raise RayConnectError(AUTH_HINT.format(address=address)) from None
    raise RayConnectError(f"--ray-address {address}: cannot join the Ray cluster ({first})") from None


def probe_ray_address(address: str | None) -> None:
    """Before anything is written: join the cluster at ``address`` once and leave (``RayConnectError``)."""
    if address in (None, "local"):
        return
    import ray

    if ray.is_initialized():
        return
    connect_ray(address)
    ray.shutdown()


@dataclass(frozen=True)
class DefineByRun:
    """``OptunaSearch``'s define-by-run space: ``sample_spec`` through the restricted trial.

    A module-level class holding only the space's name, so the searcher checkpoint pickles.
    """

    space_name: str
    restriction: Restriction

    def __call__(self, trial: Any) -> None:
        get_space(self.space_name).sample_spec(
            RestrictedSuggest(trial, self.restriction) if self.restriction else trial)


def _concurrency(cpus_per_trial: float, gpus_per_trial: float) -> int:
    import ray

    available = ray.cluster_resources()
    limits = [int(available.get("CPU", 1) // cpus_per_trial)] if cpus_per_trial > 0 else []
    if gpus_per_trial > 0:
        limits.append(int(round(available.get("GPU", 0) / gpus_per_trial, 6)))
    return max(1, min(limits) if limits else 1)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"  # Tune's default spells out every param


def _handed(path: Path) -> set[int]:
    try:
        return set(json.loads((path / FAMILY_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def _experiment(out: Path, resume: bool, queued: list[int]) -> tuple[Path, bool]:
    """The experiment folder to use, and whether Tune should restore it: the latest one of this
    run that did not end (killed, interrupted), else a new one (a finished one cannot grow). Not
    one that was not handed every warm-start trial still ``queued`` (a resume with a larger
    ``--trials`` queued more members): a new experiment proposes them first."""
    from ray import tune

    root = out / EXPERIMENT_DIR
    existing = sorted(p for p in root.glob("search_*") if p.is_dir()) if root.is_dir() else []
    if resume and existing and not (existing[-1] / DONE_MARKER).exists() \
            and tune.Tuner.can_restore(existing[-1]) and set(queued) <= _handed(existing[-1]):
        return existing[-1], True
    return root / f"search_{len(existing) + 1:03d}", False


def run_ray_search(job: SearchJob, study: Any, *, storage: str, study_name: str,
                   seed: int, sampler: str, ray_address: str | None, gpus_per_trial: float,
                   cpus_per_trial: float, resume: bool, scheduler: Any = None) -> str | None:
    """Run ``job`` with Ray Tune until ``study`` holds ``job.trials`` complete trials.

    ``ray_address``: None or ``"local"`` starts Ray here; ``"auto"`` or ``HOST:PORT`` joins a
    cluster (the storage must then be reachable from the driver; workers read it only for early
    stopping). ``scheduler``: a Ray ``TrialScheduler`` (default FIFO: none); trials it stops are
    recorded PRUNED (it may stop family members: ``--early-stop`` is the policy's rule, which does not,
    and the CLI passes no scheduler). The family's warm-start trials still waiting in ``study`` run
    first, each once. Returns why the search stopped early (``failures``, ``pruned_in_a_row``,
    ``timeout``) or None, like ``nas.engine.optuna_adapter.study.run_study``.
    """
    check_ray_backend(job.settings.train.device, gpus_per_trial, cpus_per_trial)
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if count_finished(study) >= job.trials:
        return None
    owned = not ray.is_initialized()  # a Ray the caller started (a test, a notebook) is left running
    if owned and ray_address in (None, "local"):
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True, configure_logging=False)
    elif owned:
        connect_ray(ray_address)
    names, directions = job.objectives.metric_keys(), job.objectives.directions
    trainable = tune.with_resources(
        tune.with_parameters(ray_trial, job=job, storage=storage, study_name=study_name),
        {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    family = queued_start(study)  # a restored experiment keeps its own queue (the searcher's state)
    path, restore = _experiment(job.out, resume, [member["number"] for member in family])
    already = count_finished(study)
    session = _Session(job=job, study=study, live=LiveView(job.out, job.trials, job.objectives, already),
                       complete=already)
    session_module._SESSION = session  # the searcher, restored by Tune from a pickle, finds it there
    try:
        if restore:
            tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
        else:
            if family:
                path.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path / FAMILY_FILE, json.dumps([member["number"] for member in family]))
            optuna_search = OptunaSearch(
                space=DefineByRun(job.space.name, job.restriction), metric=names,
                mode=["max" if d == "maximize" else "min" for d in directions],
                # seeded per experiment: a later one over the same study must not replay the first's draws
                sampler=make_sampler(sampler, seed + int(path.name.rsplit("_", 1)[-1]) - 1),
                study_name="nas-ray", storage=warm_copy(study, directions),
                points_to_evaluate=[member["params"] for member in family] or None)
            limit = _concurrency(cpus_per_trial, gpus_per_trial)
            searcher = StudySearcher(ConcurrencyLimiter(optuna_search, limit), family)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                            reuse_actors=False, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=path.name, storage_path=str(path.parent), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
        if not session.finished:  # Tune catches Ctrl-C, saves its state and returns
            raise KeyboardInterrupt(f"Ray Tune was interrupted; resuming restores {path}")
        atomic_write_text(path / DONE_MARKER, "this Tune experiment ended; a resumed search starts a new one\n")
        stopped = session.stopped
        if stopped is None and count_finished(study) < job.trials and job.timeout is not None:
            stopped = "timeout"
        return stopped
    finally:
        session_module._SESSION = None
        if owned:
            ray.shutdown()
