"""Latency you can trust: several models re-measured in one interleaved pass, with their spread.

A single model timed once on a busy machine can read 100x its real cost (a neighbour process took
the cores for a second). Here every model is timed in ``rounds`` rounds, round robin (the order
rotates every round, so no model always runs right after the same neighbour), ``repeats`` timed
forwards per visit after one untimed forward that re-warms the caches the previous model evicted.

* **latency**: the median of the per-round medians (an outlier inside a round cannot move its
  round's median; a bad round cannot move the median of the rounds).
* **spread**: interquartile range of the per-round medians / the latency. Above ``NOISY_SPREAD``
  (0.25: the middle half of the rounds disagree by more than a quarter of the value) the result is
  flagged ``noisy``: the machine's load changed during the pass, so re-measure on a quiet machine
  before trusting a ranking built on it.
* **threads** and **device** are recorded with every result: a latency without them is not comparable.

Engines: ``torch`` (eager, ``torch.inference_mode``, on ``device``) and ``onnxruntime`` (the
exported model on ONNX Runtime's CPU execution provider, what ``nas-export`` users deploy). The
ONNX export is done by the caller's ``export`` (``nas.deploy.export.export_onnx``): nas.costs sits
below nas.deploy in the layering, so it receives the exporter instead of importing it.
"""
from __future__ import annotations

import contextlib
import copy
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from nas.costs.measure import _shape, describe_device, eval_forward

NOISY_SPREAD = 0.25  # relative IQR of the round medians above which a latency is flagged
ENGINES = ("torch", "onnxruntime")
Clock = Callable[[], float]


@dataclass(frozen=True)
class Latency:
    """One model's robust latency; ``to_dict`` is JSON-safe."""

    name: str
    latency_ms: float  # median of the per-round medians
    spread: float  # IQR of the round medians / latency_ms
    noisy: bool  # spread > noisy_threshold
    noisy_threshold: float
    round_medians_ms: tuple[float, ...]  # in round order
    rounds: int
    repeats: int  # timed forwards per round
    engine: str  # "torch" or "onnxruntime"
    device: str  # describe_device(), e.g. "cpu (2 threads)"
    threads: int  # torch.get_num_threads() for torch, intra-op threads for onnxruntime
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["round_medians_ms"] = list(self.round_medians_ms)
        out["input_shape"] = list(self.input_shape)
        return out


def robust_statistic(round_medians: Sequence[float]) -> tuple[float, float]:
    """``(median, IQR / median)`` of per-round medians (inclusive quartiles)."""
    if len(round_medians) < 3:
        raise ValueError(f"need at least 3 rounds for a spread, got {len(round_medians)}")
    q1, median, q3 = statistics.quantiles(round_medians, n=4, method="inclusive")
    return median, (q3 - q1) / median if median > 0 else math.inf


def interleaved_rounds(runners: Mapping[str, Callable[[], Any]], *, rounds: int, repeats: int, warmup: int,
                       clock: Clock = time.perf_counter) -> dict[str, list[float]]:
    """Per model, the median ms of each round; ``runners`` each run one synchronised forward."""
    if rounds < 3 or repeats < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 3, repeats >= 1 and warmup >= 0, got {rounds}, {repeats}, {warmup}")
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    medians: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        start = round_ % len(names) if names else 0
        for name in names[start:] + names[:start]:
            run = runners[name]
            run()  # re-warm what the previous model evicted
            times = []
            for _ in range(repeats):
                began = clock()
                run()
                times.append(clock() - began)
            medians[name].append(1000.0 * statistics.median(times))
    return medians


def _onnx_runner(path: Path, shape: tuple[int, ...], threads: int) -> Callable[[], Any]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros(shape, dtype=np.float32)}
    return lambda: session.run(None, feed)


def _export_to(export: Callable[..., Any], model: nn.Module, path: Path, shape: tuple[int, ...]) -> None:
    """``export`` has ``nas.deploy.export.export_onnx``'s signature; it gets a copy (it moves its model to CPU)."""
    export(copy.deepcopy(model), path, input_size=shape[2:], in_channels=shape[1], spatial_dims=len(shape) - 2)


def measure_latencies(models: Mapping[str, nn.Module], input_shape: Sequence[int],
                      device: torch.device | str = "cpu", *, engine: str = "torch",
                      export: Callable[..., Any] | None = None, rounds: int = 7, repeats: int = 5,
                      warmup: int = 2, noisy_spread: float = NOISY_SPREAD, threads: int | None = None,
                      clock: Clock = time.perf_counter) -> dict[str, Latency]:
    """Re-measure every model in one interleaved pass; one ``Latency`` per name, in ``models``' order.

    ``engine="onnxruntime"`` needs ``export`` (pass ``nas.deploy.export.export_onnx``) and runs on
    the CPU with ``threads`` intra-op threads (default: torch's thread count, so both engines use
    the same cores). ``threads`` is ignored by the torch engine, which records what it runs with.
    """
    shape = _shape(input_shape)
    if engine not in ENGINES:
        raise ValueError(f"unknown latency engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not noisy_spread > 0:
        raise ValueError(f"noisy_spread must be > 0, got {noisy_spread}")
    with contextlib.ExitStack() as stack:
        if engine == "torch":
            runners = {name: stack.enter_context(eval_forward(model, shape, device))
                       for name, model in models.items()}
            used_threads, where = torch.get_num_threads(), describe_device(device)
        else:
            if torch.device(device).type != "cpu":
                raise ValueError(f"the onnxruntime engine runs on the CPU, got device {device}")
            if export is None:
                raise ValueError("the onnxruntime engine needs export= (nas.deploy.export.export_onnx)")
            used_threads = int(threads) if threads is not None else torch.get_num_threads()
            where = f"cpu ({used_threads} threads, onnxruntime)"
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nas-latency-")))
            runners = {}
            for index, (name, model) in enumerate(models.items()):
                path = folder / f"model_{index}.onnx"
                _export_to(export, model, path, shape)
                runners[name] = _onnx_runner(path, shape, used_threads)
        medians = interleaved_rounds(runners, rounds=rounds, repeats=repeats, warmup=warmup, clock=clock)
    results = {}
    for name, values in medians.items():
        latency, spread = robust_statistic(values)
        results[name] = Latency(name=name, latency_ms=latency, spread=spread, noisy=spread > noisy_spread,
                                noisy_threshold=noisy_spread, round_medians_ms=tuple(values), rounds=rounds,
                                repeats=repeats, engine=engine, device=where, threads=used_threads,
                                input_shape=shape)
    return results


def measure_onnx_latency(model: nn.Module, input_shape: Sequence[int], export: Callable[..., Any], *,
                         rounds: int = 7, repeats: int = 5, warmup: int = 2, noisy_spread: float = NOISY_SPREAD,
                         threads: int | None = None) -> Latency:
    """One model exported with ``export`` (``nas.deploy.export.export_onnx``) and timed on ONNX Runtime's CPU."""
    return measure_latencies({"model": model}, input_shape, "cpu", engine="onnxruntime", export=export,
                             rounds=rounds, repeats=repeats, warmup=warmup, noisy_spread=noisy_spread,
                             threads=threads)["model"]
