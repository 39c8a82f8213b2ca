"""``--backend ray``: the same space, trials and study as the Optuna path, scheduled by Ray Tune.

The only module that imports Ray; the CLI imports it only for ``--backend ray``. Ray Tune's
``OptunaSearch`` proposes architectures through the space's own ``sample_spec`` (define-by-run,
restricted like the Optuna path) and a Ray worker trains each one (``_ray_trial``), reporting
after every epoch so Ray schedulers can act. ``StudySearcher`` sits between Tune and that
searcher, in the driver: it writes every finished Ray trial into the caller's Optuna study
(``optuna.trial.create_trial``), so ``study_records``, ``trials.csv``, ``best/`` and the report
see Ray trials exactly like the others, and it decides when the search ends.

A trial that a Ray scheduler stops early would reach ``OptunaSearch`` as finished with its early
values (Tune calls ``on_trial_complete`` with the last result either way). Here it is recorded as
PRUNED ("stopped by the Ray scheduler at epoch k", with its partial curve) and ``OptunaSearch`` is
told PRUNED too, so it never enters the Pareto front or the sampler's model as if fully trained.

Cost-aware early stopping (``job.early_stop``) runs inside each Ray trial, as in the Optuna path,
but its peers are the trials already in the study: running Ray trials join only once finished.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search_spaces import get_space
from search_spaces.overrides import RestrictedSuggest, Restriction

from nas.costs.constraints import check_model
from nas.engine.early_stop import EarlyStopped, rung_verdict
from nas.engine.trial import failure_reason, train_and_save
from nas.engine.optuna_adapter.search import COSTS_ATTR, CURVE_ATTR, rung_peers
from nas.engine.optuna_adapter.study import (FIXED_PARAMS_ATTR, JOURNAL_SCHEME, VIOLATION_ATTR, count_finished, make_sampler,
                           make_storage, study_records)
from nas.io import atomic_write_text
from nas.engine.job import LiveView, SearchJob

try:  # Ray is optional: the module imports without it, ``run_ray_search`` then says what to install
    from ray.tune.search import Searcher as _Searcher
except ImportError:  # pragma: no cover - exercised only without ray
    _Searcher = object  # type: ignore[assignment,misc]

INSTALL_HINT = "the Ray backend needs `pip install .[ray]`"
RAY_TRIAL_ATTR = "ray_trial_id"
OUTCOME_KEY = "nas_outcome"  # in a trial's last report only when the trainable ran to its end
EXPERIMENT_DIR = "ray"  # under job.out: one Tune experiment per search, restored on resume
DONE_MARKER = "nas_search_done"
RECORDED = "RECORDED"  # outcome of a restored trial the study already holds: nothing to add


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


# ---------------------------------------------------------------------------------------------
# Suggest adapters: the space is sampled the same way everywhere, only the source of values differs.

class ReplaySuggest:
    """A ``Suggest`` answering from stored params, recording each call as an Optuna distribution.

    Replaying ``sample_spec`` through it (under the same ``RestrictedSuggest``) rebuilds the spec
    of a Ray config and the distributions ``optuna.trial.create_trial`` needs.
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self.distributions: dict[str, BaseDistribution] = {}

    def _value(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self.params:
            raise KeyError(f"the Ray config lacks the parameter {name!r} (another space or restriction?)")
        self.distributions[name] = distribution
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._value(name, IntDistribution(low, high, step=step, log=log)))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return float(self._value(name, FloatDistribution(low, high, step=step, log=log)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._value(name, CategoricalDistribution(list(choices)))


def replay(space_name: str, restriction: Restriction, params: dict[str, Any]):
    """(spec, distributions, fixed params) of the architecture ``params`` describe."""
    space = get_space(space_name)
    recorder = ReplaySuggest(params)
    suggest = RestrictedSuggest(recorder, restriction) if restriction else recorder
    spec = space.sample_spec(suggest)
    return spec, recorder.distributions, dict(getattr(suggest, "fixed", {}))


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


# ---------------------------------------------------------------------------------------------
# The trainable: runs in a Ray worker.

def _open_study_for_peers(storage: str, study_name: str) -> optuna.Study | None:
    """The study, for early-stopping peers, if this worker can read it (not on another machine)."""
    files = {"sqlite:///": len("sqlite:///"), JOURNAL_SCHEME: len(JOURNAL_SCHEME) - 1}  # as make_storage reads them
    for scheme, start in files.items():  # a missing file would be created empty on this machine
        if storage.startswith(scheme) and not Path(storage[start:]).exists():
            return None
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=study_name, storage=make_storage(storage), sampler=None)
    except Exception:  # noqa: BLE001 - no peers means no early stopping, never a failed trial
        return None


def _ray_trial(config: dict[str, Any], job: SearchJob, storage: str, study_name: str) -> None:
    """Train one architecture; report after every epoch and once more with the whole outcome."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    started = time.perf_counter()
    curve: list[float] = []
    costs: dict[str, float] = {}
    measured: dict[str, Any] = {}
    names = job.objectives.metric_keys()
    study = _open_study_for_peers(storage, study_name)  # None: no early stopping, no resume check

    def progress(epoch: int) -> dict[str, Any]:
        finite = [d for d in curve if d is not None and math.isfinite(d)]
        # Tune wants every searcher metric in every report: costs not measured yet are NaN.
        return {"epoch": epoch, names[0]: max(finite) if finite else math.nan, CURVE_ATTR: list(curve),
                **{name: costs.get(name, math.nan) for name in names[1:]}}

    def finish(state: str, **attrs: Any) -> None:
        attrs = {"device_seconds": time.perf_counter() - started, CURVE_ATTR: list(curve), **attrs}
        if costs:
            attrs[COSTS_ATTR] = [costs[name] for name in names[1:]]
        tune.report({**progress(len(curve)), OUTCOME_KEY: json.dumps({"state": state, "attrs": attrs})})

    def on_costs(measured_costs: dict[str, Any]) -> None:
        both = {**measured, **measured_costs}
        costs.update({name: float(value) for name, value in zip(names[1:], job.objectives.cost_values(both))})

    def on_epoch(epoch: int, loss: float, dice: float) -> None:
        curve.append(dice)
        tune.report({**progress(epoch), "loss": loss, "val_dice": dice})
        policy = job.early_stop
        if policy is None or not costs or epoch not in policy.rungs:
            return
        if study is not None:
            cost_vector = [costs[name] for name in names[1:]]
            reason = rung_verdict(policy, epoch, curve, cost_vector, rung_peers(study, -1, epoch))
            if reason is not None:
                raise EarlyStopped(reason, epoch)

    if study is not None and any(t.user_attrs.get(RAY_TRIAL_ATTR) == trial_id
                                 for t in study.get_trials(deepcopy=False)):
        # Tune restored a trial that finished after its last saved state: the study has it already.
        tune.report({**progress(0), OUTCOME_KEY: json.dumps({"state": RECORDED, "attrs": {}})})
        return
    if config.get("duplicate_of") is not None:
        finish("PRUNED", fail_reason=f"duplicate of trial {config['duplicate_of']}")
        return
    folder = Path("trials") / f"ray_{trial_id}"
    try:
        spec, _, _ = replay(job.space.name, job.restriction, config["params"])
        if job.image_size // spec.downsampling_factor < 2:
            reason = f"depth {spec.depth} halves --image-size {job.image_size} to under 2 px at the bridge"
            finish("PRUNED", fail_reason=f"infeasible: {reason}", **{VIOLATION_ATTR: [1.0]})
            return
        if job.constraints:
            model = job.space.build_model(spec, job.data.in_channels, 1)
            verdict = check_model(model, job.constraints, in_channels=job.data.in_channels,
                                  image_size=job.image_size, batch_size=job.settings.train.batch_size,
                                  device=_device(job))
            violation = {VIOLATION_ATTR: list(verdict.violations.values())}
            if not verdict.feasible:
                finish("PRUNED", fail_reason=verdict.reason[:500], metrics=verdict.measured, **violation)
                return
            measured.update(verdict.measured)
        else:
            violation = {}
        metrics = train_and_save(spec, job.space, job.data, job.settings, job.out / folder,
                                 extra={RAY_TRIAL_ATTR: trial_id}, on_epoch=on_epoch, on_costs=on_costs)
    except EarlyStopped as stop:
        finish("PRUNED", fail_reason=str(stop)[:500], stopped_at_epoch=stop.epoch,
               metrics={**costs, "stopped_at_epoch": stop.epoch, "epoch_dice": list(curve)})
        return
    except Exception as error:  # noqa: BLE001 - failure isolation: the search goes on
        finish("FAIL", fail_reason=failure_reason(error)[:500])
        return
    metrics.update({k: v for k, v in measured.items() if k not in metrics})
    metrics["seconds"] = time.perf_counter() - started
    finish("COMPLETE", spec=spec.to_dict(), metrics=metrics, checkpoint=folder.as_posix(), **violation)


def _device(job: SearchJob) -> Any:
    from nas.train.trainer import resolve_device

    return resolve_device(job.settings.train.device)


# ---------------------------------------------------------------------------------------------
# The driver side: the study, the stop rule, the searcher wrapper.

@dataclass
class _Session:
    """What one ``run_ray_search`` call knows; the searcher (restored by Tune from a pickle) finds
    it through ``_SESSION`` instead of carrying the study inside its pickled state."""

    job: SearchJob
    study: optuna.Study
    live: LiveView
    started: float = field(default_factory=time.monotonic)
    failures: int = 0
    pruned_in_a_row: int = 0
    stopped: str | None = None
    finished: bool = False  # the searcher ended the experiment (else Tune was interrupted: Ctrl-C)
    complete: int = 0

    def stop_reason(self, running: int) -> str | None:
        """``done``, ``failures``, ``pruned_in_a_row``, ``timeout``: no new trial; ``wait``: not now."""
        job = self.job
        if self.complete >= job.trials:
            return "done"
        if self.failures >= job.max_failures:
            return "failures"
        if self.pruned_in_a_row >= job.max_pruned_in_a_row:
            return "pruned_in_a_row"
        if job.timeout is not None and time.monotonic() - self.started >= job.timeout:
            return "timeout"
        return "wait" if self.complete + running >= job.trials else None

    def duplicate_of(self, params: dict[str, Any]) -> int | None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.params == params:
                return trial.number
        return None

    def record(self, trial_id: str, params: dict[str, Any] | None, result: dict[str, Any] | None,
               error: bool) -> tuple[TrialState, tuple[float, ...] | None] | None:
        """Add the finished Ray trial to the study (once); returns its state and values, or None
        for a trial that never ran (removed while pending when the search ended)."""
        if not result and not error:
            return None
        recorded = [t for t in self.study.get_trials(deepcopy=False)
                    if t.user_attrs.get(RAY_TRIAL_ATTR) == trial_id]
        if result and OUTCOME_KEY in result and json.loads(result[OUTCOME_KEY])["state"] == RECORDED:
            last = recorded[-1] if recorded else None
            return (last.state, tuple(last.values) if last.values else None) if last else None
        state, values, attrs = self.outcome(result, error)
        if any(t.state == state for t in recorded):
            return state, values  # recorded before this resume
        try:
            _, distributions, fixed = replay(self.job.space.name, self.job.restriction, params or {})
        except Exception:  # noqa: BLE001 - params that no longer replay still deserve a record
            distributions, fixed = {}, {}
        if fixed:
            attrs[FIXED_PARAMS_ATTR] = fixed
        attrs[RAY_TRIAL_ATTR] = trial_id
        attrs = self._number_checkpoint(attrs)
        kept = {k: v for k, v in (params or {}).items() if k in distributions}
        self.study.add_trial(optuna.trial.create_trial(
            state=state, values=list(values) if values else None, params=kept, distributions=distributions,
            user_attrs={k: v for k, v in attrs.items() if v is not None}))
        self._count(state, attrs)
        return state, values

    def outcome(self, result: dict[str, Any] | None, error: bool):
        job = self.job
        if error or not result:  # the worker died or raised outside the trainable's own guard
            return TrialState.FAIL, None, {
                "fail_reason": f"the Ray trial process failed (see error.txt under {job.out / EXPERIMENT_DIR})",
                CURVE_ATTR: list((result or {}).get(CURVE_ATTR) or [])}
        if OUTCOME_KEY not in result:
            names = job.objectives.metric_keys()
            epoch = int(result.get("epoch") or 0)
            curve = list(result.get(CURVE_ATTR) or [])
            costs = {name: result[name] for name in names[1:]
                     if isinstance(result.get(name), (int, float)) and math.isfinite(result[name])}
            return TrialState.PRUNED, None, {
                "fail_reason": f"stopped by the Ray scheduler at epoch {epoch}", "stopped_at_epoch": epoch,
                CURVE_ATTR: curve, COSTS_ATTR: list(costs.values()) if len(costs) == len(names) - 1 else None,
                "metrics": {**costs, "stopped_at_epoch": epoch, "epoch_dice": curve}}
        outcome = json.loads(result[OUTCOME_KEY])
        state, attrs = TrialState[outcome["state"]], outcome["attrs"]
        if state != TrialState.COMPLETE:
            return state, None, attrs
        try:
            values = job.objectives.values(attrs["metrics"])
        except (KeyError, TypeError, ValueError) as problem:
            return TrialState.FAIL, None, {**attrs, "fail_reason": f"no objective values: {problem}"}
        if not all(math.isfinite(v) for v in values):
            return TrialState.FAIL, None, {**attrs, "fail_reason": f"non-finite objective values {values}"}
        return state, values, attrs

    def _number_checkpoint(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Rename ``trials/ray_<id>`` to ``trials/trial_NNNN`` with the number the study will give
        it: the driver is the only writer of this study while Ray runs, so the next number is known."""
        checkpoint = attrs.get("checkpoint")
        if not checkpoint:
            return attrs
        number = len(self.study.get_trials(deepcopy=False))
        target = Path("trials") / f"trial_{number:04d}"
        source, destination = self.job.out / checkpoint, self.job.out / target
        if source.is_dir() and not destination.exists():
            try:
                os.replace(source, destination)
                attrs = {**attrs, "checkpoint": target.as_posix()}
            except OSError:
                pass  # the ray_<id> name stays; the attr points at it
        return attrs

    def _count(self, state: TrialState, attrs: dict[str, Any]) -> None:
        early = attrs.get("stopped_at_epoch") is not None
        self.failures += state == TrialState.FAIL
        self.pruned_in_a_row = self.pruned_in_a_row + 1 if state == TrialState.PRUNED and not early else 0
        self.complete = count_finished(self.study)
        records = study_records(self.study)
        last = records[-1]
        shown = f"dice {last.dice:.3f}" if last.dice is not None else (last.fail_reason or "")
        print(f"trial {last.number:>3} (ray {attrs[RAY_TRIAL_ATTR]}) {state.name}: {shown}", flush=True)
        self.live.update(records)


_SESSION: _Session | None = None


class StudySearcher(_Searcher):
    """Between Tune and ``ConcurrencyLimiter(OptunaSearch)``: records finished trials in the
    study, corrects what the inner searcher is told, skips duplicates, and ends the search.

    It returns ``FINISHED`` once the study holds ``job.trials`` complete trials (or failures,
    pruned-in-a-row or ``job.timeout`` end it; running trials finish, as ``--timeout`` promises),
    and ``None`` (not now) while the running trials could still complete it.
    """

    def __init__(self, searcher: Any) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.params: dict[str, dict[str, Any]] = {}
        self.running: set[str] = set()

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        session = _session()
        reason = session.stop_reason(len(self.running))
        if reason == "wait":
            return None
        if reason is not None:
            session.stopped, session.finished = (None if reason == "done" else reason), True
            return _Searcher.FINISHED
        config = self.searcher.suggest(trial_id)
        if config is None or config == _Searcher.FINISHED:
            return config
        self.params[trial_id] = dict(config)
        self.running.add(trial_id)
        return {"params": dict(config), "duplicate_of": session.duplicate_of(dict(config))}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.running.discard(trial_id)
        recorded = _session().record(trial_id, self.params.get(trial_id), result, error)
        state, values = recorded if recorded else (TrialState.PRUNED, None)
        metrics = self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
        told = dict(zip(metrics, values)) if state == TrialState.COMPLETE and values else None
        self.searcher.on_trial_complete(trial_id, result=told, error=state == TrialState.FAIL)

    def get_state(self) -> dict:
        return {"params": dict(self.params), "running": set(self.running)}

    def set_state(self, state: dict) -> None:
        self.params, self.running = dict(state["params"]), set(state["running"])

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def _session() -> _Session:
    if _SESSION is None:
        raise RuntimeError("the Ray searcher runs only inside run_ray_search")
    return _SESSION


def _warm_storage(study: optuna.Study, directions: list[str]):
    """An in-memory copy of the study's complete trials: what the sampler learns from on a fresh
    experiment over an existing study (a restored experiment keeps the searcher's own state)."""
    storage = optuna.storages.InMemoryStorage()
    warm = optuna.create_study(storage=storage, study_name="nas-ray", directions=directions)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.params and trial.values:
            warm.add_trial(optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                                     values=trial.values))
    return storage


def _concurrency(cpus_per_trial: float, gpus_per_trial: float) -> int:
    import ray

    available = ray.cluster_resources()
    limits = [int(available.get("CPU", 1) // cpus_per_trial)] if cpus_per_trial > 0 else []
    if gpus_per_trial > 0:
        limits.append(int(round(available.get("GPU", 0) / gpus_per_trial, 6)))
    return max(1, min(limits) if limits else 1)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"  # Tune's default spells out every param


def _experiment(out: Path, resume: bool) -> tuple[Path, bool]:
    """The experiment folder to use, and whether Tune should restore it: the latest one of this
    run that did not end (killed, interrupted), else a new one (a finished one cannot grow)."""
    from ray import tune

    root = out / EXPERIMENT_DIR
    existing = sorted(p for p in root.glob("search_*") if p.is_dir()) if root.is_dir() else []
    if resume and existing and not (existing[-1] / DONE_MARKER).exists() \
            and tune.Tuner.can_restore(existing[-1]):
        return existing[-1], True
    return root / f"search_{len(existing) + 1:03d}", False


def run_ray_search(job: SearchJob, study: optuna.Study, *, storage: str, study_name: str,
                   seed: int, sampler: str, ray_address: str | None, gpus_per_trial: float,
                   cpus_per_trial: float, resume: bool, scheduler: Any = None) -> str | None:
    """Run ``job`` with Ray Tune until ``study`` holds ``job.trials`` complete trials.

    ``ray_address``: None or ``"local"`` starts Ray here; ``"auto"`` or ``HOST:PORT`` joins a
    cluster (the storage must then be reachable from the driver; workers read it only for early
    stopping). ``scheduler``: a Ray ``TrialScheduler`` (default FIFO: none); trials it stops are
    recorded PRUNED. Returns why the search stopped early (``failures``, ``pruned_in_a_row``,
    ``timeout``) or None, like ``nas.engine.optuna_adapter.study.run_study``.
    """
    global _SESSION
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
        ray.init(address=ray_address, log_to_driver=False, ignore_reinit_error=True)
    names, directions = job.objectives.metric_keys(), job.objectives.directions
    trainable = tune.with_resources(
        tune.with_parameters(_ray_trial, job=job, storage=storage, study_name=study_name),
        {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    path, restore = _experiment(job.out, resume)
    already = count_finished(study)
    _SESSION = _Session(job=job, study=study, live=LiveView(job.out, job.trials, job.objectives, already),
                        complete=already)
    try:
        if restore:
            tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
        else:
            optuna_search = OptunaSearch(
                space=DefineByRun(job.space.name, job.restriction), metric=names,
                mode=["max" if d == "maximize" else "min" for d in directions],
                # seeded per experiment: a later one over the same study must not replay the first's draws
                sampler=make_sampler(sampler, seed + int(path.name.rsplit("_", 1)[-1]) - 1),
                study_name="nas-ray", storage=_warm_storage(study, directions))
            limit = _concurrency(cpus_per_trial, gpus_per_trial)
            searcher = StudySearcher(ConcurrencyLimiter(optuna_search, limit))
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                            reuse_actors=False, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=path.name, storage_path=str(path.parent), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
        if not _SESSION.finished:  # Tune catches Ctrl-C, saves its state and returns
            raise KeyboardInterrupt(f"Ray Tune was interrupted; resuming restores {path}")
        atomic_write_text(path / DONE_MARKER, "this Tune experiment ended; a resumed search starts a new one\n")
        stopped = _SESSION.stopped
        if stopped is None and count_finished(study) < job.trials and job.timeout is not None:
            stopped = "timeout"
        return stopped
    finally:
        _SESSION = None
        if owned:
            ray.shutdown()
