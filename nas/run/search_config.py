"""``SearchConfig``: every setting of a search, one field per ``nas-search`` flag, with the CLI's defaults.

Field ``x_y`` is flag ``--x-y`` (``space_config`` is ``--config``; ``early_stop`` is the rule of
``--early-stop halving|moasha|none``, where on/off and True/False mean halving/none). Numbers are checked on construction with the ranges the CLI parses them
with (``LIMITS``), so NaN, infinity and out-of-range values never reach a study; a bad value is a
``SearchError`` whose one-line message names the flag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from nas.costs.constraints import parse_count
from nas.engine.early_stop import RULES, rungs_problem
from nas.engine.objectives import Objectives
from nas.run.limits import (BATCH, FRACTION, MAX_SIDE, POSITIVE, SEED, Range, integers, numbers, side_range)
from nas.train.trainer import TrainConfig

_RECIPE = TrainConfig()
DEFAULT_VAL_FRACTION = 0.25
# Training-recipe fields: a value other than the default joins the study's settings (a resume must match).
RECIPE_FIELDS = ("lr", "warmup_fraction", "early_stop_patience", "foreground_fraction", "brightness",
                 "contrast", "elastic", "aux_weight", "amp", "cpu_bf16", "channels_last", "grad_checkpointing")
SWITCHES = {"amp": "--no-amp", "cpu_bf16": "--cpu-bf16", "channels_last": "--channels-last",
            "grad_checkpointing": "--grad-checkpointing"}  # field -> the flag that flips its default
FLAGS = {"space_config": "--config"}  # fields whose flag is not --<field with dashes>
MAX_PRUNED_IN_A_ROW = 25

LIMITS: dict[str, Range] = {
    "trials": integers(1, 1_000_000), "epochs": integers(1, 100_000), "image_size": side_range(16, 4096),
    "batch_size": BATCH, "seed": SEED, "search_seed": SEED, "timeout": POSITIVE, "max_failures": integers(1, 1_000_000),
    "workers": integers(1, 1024), "worker_id": integers(0, 1023), "gpus_per_trial": numbers(0, 1024),
    "cpus_per_trial": numbers(0, 4096, low_open=True),
    "val_fraction": numbers(0, 1, low_open=True, high_open=True), "lr": numbers(0, 10, low_open=True),
    "warmup_fraction": FRACTION, "early_stop_patience": integers(1, 100_000), "foreground_fraction": FRACTION,
    "brightness": FRACTION, "contrast": FRACTION, "elastic": numbers(0, MAX_SIDE), "aux_weight": numbers(0, 1000),
    "max_params": integers(1, 10**15), "max_macs": integers(1, 10**18), "max_latency_ms": POSITIVE,
    "max_memory_mb": POSITIVE, "max_pruned_in_a_row": integers(1, 1_000_000),
    "patches_per_epoch": integers(1, 10**9), "test_fraction": numbers(0, 1, high_open=True),
    "num_classes": integers(2, 256),
    "finalists": integers(0, 1000), "final_epochs": integers(1, 100_000), "final_seeds": integers(1, 100),
    "family_rungs": integers(1, 12), "cost_strata": integers(0, 64),
}


class SearchError(ValueError):
    """A search that cannot start as configured; the message is one line naming the flag or input."""


def flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))


@dataclass(frozen=True)
class SearchConfig:
    space: str = "resunet"
    data: str = "synthetic"
    trials: int = 20
    epochs: int = 10  # 5 or 6 did not bring make search to 5 minutes and cost 7-12 % test hypervolume (RESULTS.md)
    image_size: int = 64
    batch_size: int = 8
    out: str | Path | None = None  # default: runs/<space>-<data name>
    storage: str | None = None  # default: sqlite:///<out>/study.db (a journal file with workers)
    study_name: str | None = None  # default: the space name
    seed: int = 0
    # the search's own randomness (sampler, cost strata) when it should differ from --seed's data and
    # training: another search on the same split with the same trainings; None = --seed
    search_seed: int | None = None
    device: str = "auto"
    # search engine
    objectives: str = str(Objectives())
    sampler: str = "tpe"
    early_stop: str = "halving"  # nas.engine.early_stop.RULES
    early_stop_rungs: tuple[int, ...] = ()  # default: 1, 3, 9, ... below --epochs
    timeout: float | None = None
    max_failures: int = 5
    workers: int = 1
    worker_id: int | None = None  # set in the worker processes of --workers
    backend: str = "optuna"
    latency_engine: str = "torch"  # or "onnxruntime" (nas.costs.latency.ENGINES)
    ray_address: str | None = None
    gpus_per_trial: float | None = None  # default: 1 with CUDA, else 0
    cpus_per_trial: float = 1.0
    baselines: tuple[str, ...] = ("family",)  # presets and/or "family"; () or "none": no baselines
    warm_start: str = "family"  # "family": the family's specs are the study's first trials; or "none"
    family_rungs: int = 3  # MAC targets per family design (nas.stages.family_planning)
    # first proposals, one per band of the space's MACs (nas.engine.strata); 6 won on the replay (issue 25)
    cost_strata: int = 6
    # the finalist stage after the trials (nas.run.finalist_run): 0 finalists = none
    finalists: int = 0
    final_epochs: int | None = None  # default: 3x epochs
    final_seeds: int = 3
    # training recipe
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float | None = None  # folder without test/: None = 0.2 from 10 images on, else none
    num_classes: int | None = None  # classes of label-map masks, background included; None = found from the data
    class_weights: tuple[float, ...] = ()  # label maps: focal-loss weight per class (K values, "1,2,4"); () = none
    patches_per_epoch: int | None = None  # default: the training images' area once (at least one per image)
    lr: float = _RECIPE.lr
    warmup_fraction: float = _RECIPE.warmup_fraction
    early_stop_patience: int | None = _RECIPE.early_stop_patience
    foreground_fraction: float = _RECIPE.foreground_fraction
    brightness: float = _RECIPE.brightness
    contrast: float = _RECIPE.contrast
    elastic: float = _RECIPE.elastic
    aux_weight: float = _RECIPE.aux_weight
    amp: bool = _RECIPE.amp
    cpu_bf16: bool = _RECIPE.cpu_bf16
    channels_last: bool = _RECIPE.channels_last
    grad_checkpointing: bool = _RECIPE.grad_checkpointing
    # restricting the space: "NAME=VALUE" / "NAME=V1,V2" (a dict works too), and a TOML file
    fix: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    space_config: str | Path | None = None
    # constraints checked before training
    max_params: int | None = None  # 500_000 or "500k"
    max_macs: int | None = None  # 2 * 10**9 or "2G"
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    max_pruned_in_a_row: int = MAX_PRUNED_IN_A_ROW

    def __post_init__(self) -> None:
        normal = {"baselines": _names(self.baselines), "fix": _assignments(self.fix),
                  "choices": _assignments(self.choices), "early_stop": _rule(self.early_stop),
                  "max_params": _count("max_params", self.max_params), "max_macs": _count("max_macs", self.max_macs),
                  "class_weights": _weights(self.class_weights)}
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        for name, limits in LIMITS.items():
            value = getattr(self, name)
            if value is None and _optional(name):
                continue
            problem = limits.problem(value)
            if problem:
                raise SearchError(f"{flag(name)} {problem}")
            if not limits.integer:
                object.__setattr__(self, name, float(value))
            else:
                object.__setattr__(self, name, int(value))
        object.__setattr__(self, "early_stop_rungs", _rungs(self.early_stop_rungs, self.epochs, self.early_stop))

    @property
    def sampler_seed(self) -> int:
        """What seeds the sampler and the cost strata: ``--search-seed``, else ``--seed``."""
        return self.seed if self.search_seed is None else self.search_seed

    def to_argv(self) -> list[str]:
        """The ``nas-search`` flags that give this config (defaults left out), e.g. for a benchmark's record."""
        argv: list[str] = []
        for item in fields(self):
            value, default = getattr(self, item.name), _default(item)
            if item.name == "worker_id" or value == default:
                continue
            if item.name in SWITCHES:
                argv.append(SWITCHES[item.name])
            elif item.name in ("fix", "choices"):
                for text in value:
                    argv += [flag(item.name), text]
            elif item.name == "class_weights":
                argv += [flag(item.name), ",".join(f"{w:g}" for w in value)]
            elif item.name in ("baselines", "early_stop_rungs"):
                argv += [flag(item.name), ",".join(map(str, value)) or "none"]
            else:
                argv += [flag(item.name), str(value)]
        return argv

    def recipe(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, patch_size=self.image_size,
                           seed=self.seed, device=self.device, patches_per_epoch=self.patches_per_epoch,
                           class_weights=self.class_weights or None,
                           **{name: getattr(self, name) for name in RECIPE_FIELDS})

    def recipe_changes(self) -> dict[str, Any]:
        """The recipe settings that differ from the defaults (part of the study's settings)."""
        changed = {name: getattr(self, name) for name in RECIPE_FIELDS
                   if getattr(self, name) != getattr(_RECIPE, name)}
        if self.val_fraction != DEFAULT_VAL_FRACTION:
            changed["val_fraction"] = self.val_fraction
        if self.class_weights:
            changed["class_weights"] = list(self.class_weights)
        return changed


def _weights(value: Any) -> tuple[float, ...]:
    """``"1,2,4"`` (or numbers) -> ``(1.0, 2.0, 4.0)``: finite and positive, else a ``SearchError``."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())
    try:
        weights = tuple(float(str(part).strip()) for part in parts if str(part).strip())
    except ValueError:
        raise SearchError(f"--class-weights takes numbers like 1,2,4 (one per class), got {value!r}") from None
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise SearchError(f"--class-weights must be finite positive numbers, got {value!r}")
    return weights


def _default(item: Any) -> Any:
    return item.default_factory() if callable(item.default_factory) else item.default


def _optional(name: str) -> bool:
    return next(f for f in fields(SearchConfig) if f.name == name).default is None


def _names(value: Any) -> tuple[str, ...]:
    """``"family,unet-16"`` -> ``("family", "unet-16")``; ``"none"`` (or nothing) -> ``()``."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())
    names = tuple(str(part).strip() for part in parts if str(part).strip())
    return () if names == ("none",) else names


def _assignments(value: Any) -> tuple[str, ...]:
    """``{"depth": 4, "block": ["basic", "inverted"]}`` -> ``("depth=4", "block=basic,inverted")``."""
    if isinstance(value, Mapping):
        return tuple(f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in value.items())
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value or ())


def _rule(value: Any) -> str:
    """``--early-stop``: a rule name; on/off (and True/False) as before the rules existed."""
    if isinstance(value, (bool, str)):
        value = {True: "halving", False: "none", "on": "halving", "off": "none"}.get(value, value)
    if value not in RULES:
        raise SearchError(f"--early-stop must be one of {', '.join(RULES)} (or on/off), got {value!r}")
    return value


def _rungs(value: Any, epochs: int, rule: str) -> tuple[int, ...]:
    """``"3,6"`` -> ``(3, 6)``: increasing epochs below ``--epochs`` at which the rule decides."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())
    try:
        rungs = tuple(int(str(part).strip()) for part in parts if str(part).strip())
    except ValueError:
        raise SearchError(f"--early-stop-rungs must be epochs such as 3,9, got {value!r}") from None
    problem = rungs_problem(rungs, epochs)
    if rungs and rule == "none":
        problem = "needs --early-stop halving or moasha (it is none)"
    if problem:
        raise SearchError(f"--early-stop-rungs {problem}")
    return rungs


def _count(name: str, value: Any) -> Any:
    """``"500k"`` -> 500000 (the --max-params / --max-macs suffixes); numbers are checked by LIMITS."""
    if not isinstance(value, str):
        return value
    try:
        return parse_count(value)
    except (ValueError, OverflowError) as error:
        raise SearchError(f"{flag(name)}: {error}") from None
