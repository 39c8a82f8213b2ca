"""The end-of-search latency pass: the Pareto members and baselines re-measured together, once.

A latency taken once per trial, minutes apart, on a machine other work shares, is not a ranking: one
trial read 1082 ms while its neighbours measured 3-12 ms, and the Dice-vs-latency front and its
model card were built on it. So after the trials, the finished trials (all of them up to
``ALL_UP_TO``, else the members of the Dice-vs-MACs, -params, -latency fronts and of the search's
own objectives) and the baselines are timed in one interleaved pass (``nas.costs.latency``: rounds in rotating order, the median of
round medians, the spread stored, a noisy flag, threads and device), on the search's device and
latency engine (``torch``, or ``onnxruntime`` on the CPU). If the Dice-vs-latency front then holds
a model the pass did not time, the pass runs again with it, so a front is never drawn from numbers
of two kinds.

The results go to ``<run>/latency.json`` (keyed by checkpoint folder). ``with_remeasured_latency``
puts them into the records (``latency_ms``; the search's own value stays as ``latency_ms_search``)
for the table, the fronts, ``best/`` and the report; ``nas-report`` reuses the file without timing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from nas.costs.latency import measure_latencies
from nas.deploy.checkpoint import load_checkpoint, read_checkpoint_info
from nas.deploy.export import checkpoint_spatial_dims, export_onnx
from nas.io import atomic_write_json, read_json
from nas.results.pareto import DICE_LATENCY, DICE_MACS, DICE_PARAMS, Objective, pareto_front
from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind
from nas.run.settings import RunSettings
from nas.train.trainer import resolve_device

LATENCY_FILE = "latency.json"
FORMAT = "resunet-nas-latency"
ROUNDS, REPEATS = 7, 5
ALL_UP_TO = 32  # up to this many finished trials, all are re-timed (an outlier cannot hide a model from a front)
MAX_PASSES = 2


def read_latency(run_dir: Path) -> dict[str, Any]:
    """``latency.json`` of a run, or ``{}`` when there is none (or it cannot be read)."""
    try:
        data = read_json(Path(run_dir) / LATENCY_FILE)  # size- and depth-bounded
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def with_remeasured_latency(records: Iterable[TrialRecord], run_dir: Path) -> list[TrialRecord]:
    """``records`` with the pass's latency where it timed the record's checkpoint (others unchanged)."""
    models = read_latency(run_dir).get("models") or {}
    out = []
    for record in records:
        entry = models.get(record.checkpoint or "")
        if not isinstance(entry, dict) or not isinstance(entry.get("latency_ms"), (int, float)):
            out.append(record)
            continue
        out.append(record.updated(metrics={
            "latency_ms": entry["latency_ms"], "latency_device": entry.get("device"),
            "latency_ms_search": entry.get("search_latency_ms"), "latency_remeasured": dict(entry)}))
    return out


def _candidates(records: list[TrialRecord], objectives: Iterable[Objective], run_dir: Path) -> list[TrialRecord]:
    """Baselines and, with a checkpoint on disk, every finished trial (up to ``ALL_UP_TO`` of them) or
    else the members of every front the report draws or ranks by."""
    search = [r for r in records if r.kind != RecordKind.PRESET]
    numbers = {r.number for r in search if r.finished}
    if len(numbers) > ALL_UP_TO:
        numbers = set()
        for axes in (DICE_MACS, DICE_PARAMS, DICE_LATENCY, tuple(objectives)):
            numbers |= pareto_front(search, axes).numbers
    return [r for r in records if (r.number in numbers or r.kind == RecordKind.PRESET)
            and r.checkpoint and (Path(run_dir) / r.checkpoint / "model.safetensors").is_file()]


def remeasure_latency(records: list[TrialRecord], run_dir: Path, settings: RunSettings,
                      objectives: Iterable[Objective] = (), *, rounds: int | None = None,
                      repeats: int | None = None) -> dict[str, Any]:
    """Time the candidates (see the module docstring) and write ``latency.json``; returns its content.

    ``records`` are the search trials and the baselines; ``settings`` give ``image_size``, ``device``
    and ``latency_engine`` (default ``torch``). Nothing is written when no candidate has a checkpoint.
    """
    run_dir = Path(run_dir)
    rounds, repeats = rounds or ROUNDS, repeats or REPEATS
    engine = settings.latency_engine or "torch"
    device = "cpu" if engine == "onnxruntime" else resolve_device(settings.device or "auto")
    objectives = tuple(objectives)
    measured: dict[str, Any] = {}
    timed: set[str] = set()
    for _ in range(MAX_PASSES):
        current = with_remeasured_latency(records, run_dir) if measured else records
        wanted = [r for r in _candidates(current, objectives, run_dir) if r.checkpoint not in timed]
        if not wanted:
            break
        # the models timed before are timed again with the newcomers: one pass, comparable numbers
        keys = sorted(timed | {str(r.checkpoint) for r in wanted})
        models, shape = {}, None
        for key in keys:
            folder = run_dir / key
            try:
                info = read_checkpoint_info(folder)
                models[key] = load_checkpoint(folder, "cpu")[0]
            except (ValueError, OSError):  # a corrupt copy keeps its search-time number (nas-report warns)
                continue
            dims = checkpoint_spatial_dims(info.space)
            if settings.image_size is None:
                raise ValueError("the run's settings name no image_size to time the models at")
            shape = shape or (1, info.in_channels, *(settings.image_size,) * dims)
        if not models:
            break
        results = measure_latencies(models, shape, device, engine=engine, export=export_onnx, rounds=rounds,
                                    repeats=repeats)
        search = {str(r.checkpoint): r.latency_ms for r in records}
        measured = {"format": FORMAT, "engine": engine, "input_shape": list(shape), "rounds": rounds,
                    "repeats": repeats, "models": {key: {**value.to_dict(), "search_latency_ms": search.get(key)}
                                                   for key, value in results.items()}}
        first = next(iter(results.values()))
        measured.update({"device": first.device, "threads": first.threads, "noisy_threshold": first.noisy_threshold})
        atomic_write_json(run_dir / LATENCY_FILE, measured)
        timed = set(keys)
    return measured


def latency_note(run_dir: Path) -> str | None:
    """One line for the report's conventions: how the front's latencies were measured."""
    data = read_latency(run_dir)
    models = data.get("models") or {}
    if not models:
        return None
    noisy = sorted(name for name, entry in models.items() if entry.get("noisy"))
    flagged = (f"; noisy (spread > {100 * float(data.get('noisy_threshold') or 0):.0f} %, re-measure on a quiet "
               f"machine): {', '.join(noisy)}") if noisy else "; none noisy"
    return (f"{len(models)} front member(s) and baseline(s) re-measured after the search in one interleaved pass "
            f"({data.get('rounds')} rounds x {data.get('repeats')} forwards, median of round medians) with "
            f"{data.get('engine')} on {data.get('device')}, input {'x'.join(map(str, data.get('input_shape') or []))}"
            f"{flagged}; the other trials keep the single measurement taken during the search")
