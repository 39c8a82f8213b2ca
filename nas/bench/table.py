"""One row of the tabulated benchmark: an architecture trained once at one fidelity, every epoch recorded.

The benchmark (docs/benchmark.md) trains architectures of the default ``resunet`` space with the default
recipe, in processes of one torch thread each, and keeps per epoch the validation Dice the engine ranks by,
the test Dice at 0.5, the loss, and the wall and process-CPU seconds; per architecture its spec, costs and the
final metrics a live trial stores. The simulated clock of a replay is made of the CPU seconds, which do not
depend on what else ran on the machine while the table was built.

A row trains through ``nas.engine.trial.evaluate_spec``, the function a live trial calls, so the curve and
the final metrics are the ones a search with the same seed records.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from search_spaces import RandomSuggest, SearchSpace
from search_spaces.presets import get_preset, list_presets

from nas.costs.latency import measure_latencies
from nas.data.checks import data_fingerprint
from nas.engine.trial import TrialSettings, device_name, evaluate_spec, fit_spec
from nas.run.search_config import SearchConfig
from nas.run.search_plan import Plan, prepare
from nas.stages.family_planning import plan_family
from nas.train.trainer import evaluate_dice, foreground_mean, resolve_device

SAMPLE, FAMILY, PRESET = "sample", "family", "preset"  # how an architecture came into the table
THREADS = 1  # torch threads per training process: the recorded CPU seconds are one core's


@dataclass(frozen=True)
class Task:
    """What a table is trained on: a ``SearchConfig`` (the default search's settings unless named)."""

    name: str
    data: str = "synthetic"
    epochs: int = 10
    image_size: int = 64
    batch_size: int = 8
    patches_per_epoch: int | None = None  # None: the covering epoch (every training pixel once)
    presets: bool = True  # train the presets too (2.8-3 GMAC each: most of a real task's reference cost)
    noise_every: int = 10  # every N-th sample also trains with seeds 1 and 2 (the noise floor)
    note: str = ""

    def config(self, seed: int = 0) -> SearchConfig:
        return SearchConfig(data=self.data, epochs=self.epochs, image_size=self.image_size,
                            batch_size=self.batch_size, patches_per_epoch=self.patches_per_epoch, seed=seed,
                            out="runs/nasbench-plan")  # never written: prepare() only checks it


TASKS = {
    "synthetic": Task("synthetic", note="the make search settings without a budget: 10 epochs of 96 patches, 64 px"),
    "cvc": Task("cvc", data="../shared/data/cvc_clinicdb_sample", epochs=6, presets=False, noise_every=15,
                note="the CVC-ClinicDB polyp sample at 64 px (RGB; 11 train / 5 val / 4 test images of 384 x 288), "
                     "the covering epoch (every training pixel once, 297 patches), 6 epochs: ~1.5x a synthetic "
                     "training's CPU seconds; at 3 epochs the family members' validation Dice was 0.01-0.54 and "
                     "erratic, at 6 two of them doubled it (0.21 -> 0.45, 0.20 -> 0.33)"),
    "isbi": Task("isbi", data="../shared/data/isbi2012_em/train", epochs=4, presets=False,
                 note="ISBI 2012 at 64 px, the covering epoch (every training pixel once, 1,024 patches), 4 epochs: "
                      "~3.5x CVC's seconds per epoch (65-133 CPU s an epoch for two median-plus samples), not built"),
}


@dataclass(frozen=True)
class Entry:
    """One training of the table: an architecture (by id) with one training seed."""

    arch_id: str  # s0000.. (uniform sample), family-<design>-mK, preset-<name>
    kind: str
    spec: dict[str, Any]
    params: dict[str, Any] | None = None  # the space's sampled values (None: not a point of the space)
    seed: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return self.arch_id, self.seed


def spec_key(spec: Any) -> str:
    """The canonical text of a spec: the table's join key (a replayed trial's spec finds its row by it)."""
    return json.dumps(spec.to_dict() if hasattr(spec, "to_dict") else spec, sort_keys=True)


def training_fits(spec: Any, image_size: int) -> bool:
    return image_size // spec.downsampling_factor >= 2


def sampled_entries(space: SearchSpace, count: int, image_size: int, table_seed: int = 0) -> list[Entry]:
    """``count`` distinct architectures drawn uniformly (each dimension independently, conditional ones
    where they apply: what Optuna's RandomSampler draws), architecture ``i`` from its own stream so the
    list only grows when ``count`` does."""
    entries, seen = [], set()
    index = attempt = 0
    while len(entries) < count:
        suggest = RandomSuggest(seed=table_seed * 1_000_003 + attempt)
        attempt += 1
        spec = space.sample_spec(suggest)
        key = spec_key(spec)
        if key in seen or not training_fits(spec, image_size):
            continue
        seen.add(key)
        entries.append(Entry(f"s{index:04d}", SAMPLE, spec.to_dict(), dict(suggest.params)))
        index += 1
    return entries


def reference_entries(plan: Plan, presets: bool = True) -> list[Entry]:
    """The family members' points (what a warm start trains), their planned specs where the space cannot
    express them, and (``presets``) every preset that fits the image size."""
    config = plan.config
    entries, seen = [], set()
    members = plan_family(plan.space, image_size=config.image_size, in_channels=plan.data.in_channels,
                          rungs=config.family_rungs, restriction=plan.restriction, constraints=plan.constraints,
                          points=True)
    for member in members:
        for suffix, spec, params in (("", member.point_spec, member.params), ("-planned", member.spec, None)):
            if spec is None or spec_key(spec) in seen:
                continue
            seen.add(spec_key(spec))
            entries.append(Entry(member.name + suffix, FAMILY, spec.to_dict(), params))
    for name in list_presets() if presets else ():
        preset = get_preset(name)
        if preset.space == plan.space.name and training_fits(preset.spec, config.image_size) \
                and spec_key(preset.spec) not in seen:
            seen.add(spec_key(preset.spec))
            entries.append(Entry(f"preset-{name}", PRESET, preset.spec.to_dict()))
    return entries


def build_order(plan: Plan, count: int, noise_every: int = 10, noise_seeds: Sequence[int] = (1, 2),
                table_seed: int = 0, presets: bool = True) -> list[Entry]:
    """The references first, then the samples in order; every ``noise_every``-th sample is trained with
    ``noise_seeds`` too (the noise floor), right after its seed-0 run so a partial table has it early."""
    order = reference_entries(plan, presets)
    for index, entry in enumerate(sampled_entries(plan.space, count, plan.config.image_size, table_seed)):
        order.append(entry)
        if noise_every and index % noise_every == 0:
            order.extend(replace(entry, seed=seed) for seed in noise_seeds)
    return order


class _Capture:
    """A space whose ``build_model`` keeps the model it built: the epoch hook scores it on the test split."""

    def __init__(self, space: SearchSpace) -> None:
        self.space, self.model = space, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.space, name)

    def build_model(self, *args: Any, **kwargs: Any) -> Any:
        self.model = self.space.build_model(*args, **kwargs)
        return self.model


@dataclass
class _Clock:
    """Per-epoch wall and process-CPU seconds of training, the hook's own test scoring left out."""

    data: Any
    device: Any
    capture: _Capture
    wall: float = 0.0
    cpu: float = 0.0
    rows: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in (
        "val_dice", "test_dice", "loss", "epoch_wall_s", "epoch_cpu_s")})

    def start(self, *_: Any) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __call__(self, epoch: int, loss: float, dice: float) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        _, masks, fovs = self.data.split("test")
        test = foreground_mean(evaluate_dice(self.capture.model, self.data, self.device, split="test"), masks, fovs) \
            if self.data.test_images else math.nan
        for key, value in (("val_dice", dice), ("test_dice", test), ("loss", loss), ("epoch_wall_s", wall),
                           ("epoch_cpu_s", cpu)):
            self.rows[key].append(float(value))
        self.start()


def train_entry(plan: Plan, settings: TrialSettings, entry: Entry) -> dict[str, Any]:
    """Train ``entry`` as a live trial would and return its table row (plain JSON-safe values)."""
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    spec = fit_spec(plan.space.spec_from_dict(entry.spec), plan.data)
    settings = replace(settings, train=replace(settings.train, seed=entry.seed))
    device = resolve_device(settings.train.device)
    capture = _Capture(plan.space)
    clock = _Clock(plan.data, device, capture)
    setup: list[float] = []

    def on_costs(_: Any) -> None:  # training starts now: what came before is the trial's setup
        setup.extend((time.perf_counter() - started_wall, time.process_time() - started_cpu))
        clock.start()

    outcome = evaluate_spec(spec, capture, plan.data, settings, on_epoch=clock, on_costs=on_costs)
    finish = (time.perf_counter() - clock.wall, time.process_time() - clock.cpu)  # scoring the best epoch
    metrics = outcome.metrics()
    train_wall, train_cpu = sum(clock.rows["epoch_wall_s"]), sum(clock.rows["epoch_cpu_s"])
    shape = (1, plan.data.in_channels, *(settings.image_size,) * plan.data.spatial_dims)
    latency = measure_latencies({"model": outcome.model}, shape, device, rounds=7, repeats=5)["model"]
    test = (metrics.get("quality") or {}).get("test") or {}
    return {
        "arch_id": entry.arch_id, "kind": entry.kind, "seed": entry.seed, "spec_key": spec_key(spec),
        "spec": json.dumps(spec.to_dict()), "params": json.dumps(entry.params) if entry.params is not None else None,
        "macs": int(metrics["macs"]), "flops": int(metrics["flops"]), "param_count": int(metrics["params"]),
        "latency_ms": latency.latency_ms, "latency_spread": latency.spread,
        "latency_ms_search": float(metrics["latency_ms"]), "train_memory_mb": metrics.get("train_memory_mb"),
        **clock.rows,
        "final_val_dice": float(metrics["dice"]), "best_epoch": int(metrics["best_epoch"]),
        "threshold": metrics.get("threshold"), "final_test_dice": test.get("dice"),
        "total_wall_s": time.perf_counter() - started_wall, "total_cpu_s": time.process_time() - started_cpu,
        "train_wall_s": train_wall, "train_cpu_s": train_cpu, "setup_wall_s": setup[0], "setup_cpu_s": setup[1],
        "finish_wall_s": finish[0], "finish_cpu_s": finish[1],
        "torch_threads": torch.get_num_threads(), "machine": device_name("cpu"), "torch": torch.__version__,
        "data_fingerprint": data_fingerprint(plan.data), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def task_plan(task: Task) -> tuple[Plan, TrialSettings]:
    """The task's checked plan and the trial settings a live search of it would use (memory measured too)."""
    config = task.config()
    plan = prepare(config)
    return plan, TrialSettings(image_size=config.image_size, train=config.recipe(), measure_train_memory=True)
