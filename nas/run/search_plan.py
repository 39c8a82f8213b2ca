"""What a search will be, checked before anything is written: ``prepare(SearchConfig) -> Plan``.

A bad setting, data folder or storage URL is a ``SearchError`` (one line naming the flag) and leaves
nothing behind: no run folder, no lock, no study.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from search_spaces import SearchSpace, get_space
from search_spaces.overrides import OverrideError, Restriction, check_restriction, restriction_from_args
from search_spaces.presets import get_preset

from nas.costs.constraints import Constraints
from nas.data.dataset import SegmentationData
from nas.data.loading import DataError, check_data_source, load_data
from nas.data.patches import epoch_patches
from nas.engine.job import sampler_problem
from nas.engine.objectives import Objectives
from nas.io import unwritable
from nas.run.limits import pixel_budget_problem
from nas.run.places import managed_folders, overlap_problem, storage_file
from nas.run.search_config import SearchConfig, SearchError, flag
from nas.run.settings import RunSettings
from nas.train.trainer import resolve_device


@dataclass(frozen=True)
class Plan:
    """What ``prepare`` checked and built; nothing is written yet."""

    config: SearchConfig
    space: SearchSpace
    restriction: Restriction
    constraints: Constraints
    objectives: Objectives
    data: SegmentationData
    out: Path
    storage: str
    study_name: str

    @cached_property
    def settings(self) -> RunSettings:
        """The settings stored in the study (``run_settings``), built once per plan."""
        return run_settings(self)


def resolve_space(config: SearchConfig) -> tuple[SearchSpace, Restriction, Constraints]:
    """The space, its checked restriction and the constraints (all ``--describe`` needs)."""
    try:
        space = get_space(config.space)
        restriction = restriction_from_args(space.dimensions, config.fix, config.choices, config.space_config)
        check_restriction(space.sample_spec, restriction, space.dimensions)
        constraints = Constraints(config.max_params, config.max_macs, config.max_latency_ms, config.max_memory_mb)
    except (OverrideError, ValueError) as error:
        raise SearchError(str(error)) from None
    return space, restriction, constraints


def data_name(source: str) -> str:
    """``isbi2012_em/train`` -> ``isbi2012_em-train``: a split folder alone says too little."""
    if source.startswith("synthetic"):
        return source.replace(":", "-")
    folder = Path(source).resolve()
    generic = folder.name.lower() in {"train", "training", "val", "valid", "validation", "test", "data"}
    return f"{folder.parent.name}-{folder.name}" if generic else folder.name


def _check_settings(config: SearchConfig, out: Path) -> None:
    """Everything about the settings themselves, before the data is read."""
    from nas.engine.optuna_adapter import storage_problem  # lazy: nas-search --describe (resolve_space) needs no Optuna

    try:
        check_data_source(config.data)
        resolve_device(config.device)
    except ValueError as error:  # DataError too
        raise SearchError(str(error)) from None
    synthetic = config.data == "synthetic" or config.data.startswith("synthetic:")
    inputs = [] if synthetic else [(f"the data folder {config.data}", Path(config.data))]
    problem = overlap_problem("--out", config.out or out, inputs, managed_folders(out))
    study_file = storage_file(config.storage) if config.storage else None
    if not problem and study_file is not None:  # the study is written too: not into the data, not into best/
        problem = overlap_problem("--storage", study_file, inputs, managed_folders(study_file))
    if problem:  # a run inside its data, around it, or in another run's best/ or trials/
        raise SearchError(problem)
    try:
        Objectives.parse(config.objectives)
    except ValueError as error:
        raise SearchError(f"--objectives: {error}") from None
    problem = sampler_problem(config.sampler)
    if problem:
        raise SearchError(problem)
    for name, allowed in (("backend", ("optuna", "ray")), ("warm_start", ("family", "none")),
                          ("latency_engine", ("torch", "onnxruntime"))):
        if getattr(config, name) not in allowed:
            raise SearchError(f"{flag(name)} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")
    if config.baselines:
        try:
            for name in config.baselines:
                if name != "family":  # the baseline family (nas.stages.family_planning), not a preset
                    get_preset(name)
        except ValueError as error:
            raise SearchError(f"--baselines: {error} (or family, or none)") from None
    problem = unwritable(out, folder=True)
    if problem:
        raise SearchError(f"--out {config.out or out}: {problem}")
    if config.storage is not None:
        problem = storage_problem(config.storage, creating=out)
        if problem:
            raise SearchError(problem)
    if config.workers > 1 and config.storage and config.storage.startswith("sqlite"):
        raise SearchError("--workers > 1 needs a storage that takes several writers: leave --storage out "
                          "(a journal file), or use journal:///path or postgresql://...")
    if config.backend == "ray":
        if config.workers > 1:
            raise SearchError("--workers and --backend ray do not mix: Ray runs the trials in parallel itself")
        from nas.engine.ray_adapter import check_ray_backend, probe_ray_address  # lazy: imports Ray

        try:
            check_ray_backend(config.device, gpus_per_trial(config), config.cpus_per_trial)
            probe_ray_address(config.ray_address)  # a head that wants an auth token: one line, before any write
        except (RuntimeError, ValueError) as error:
            raise SearchError(str(error)) from None


def prepare(config: SearchConfig) -> Plan:
    """Check everything and load the data; ``SearchError`` (one line) if anything is wrong. Writes nothing."""
    for name in ("out", "data", "storage"):  # "" from Python: refused, never read as the default
        value = getattr(config, name)
        if value is not None and not str(value).strip():
            raise SearchError(f"{flag(name)} '' is empty: it names no file or folder (leave it out for the default)")
    space, restriction, constraints = resolve_space(config)
    out = Path(config.out or Path("runs") / f"{space.name}-{data_name(config.data)}").resolve()
    _check_settings(config, out)
    problem = pixel_budget_problem([config.image_size] * space.spatial_dims, config.batch_size,
                                   what="--image-size")
    if problem:
        raise SearchError(problem)
    try:
        data = load_data(config.data, image_size=config.image_size, seed=config.seed,
                         val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                         num_classes=config.num_classes)
    except DataError as error:
        raise SearchError(str(error)) from None
    if config.class_weights and (data.num_classes == 2 or len(config.class_weights) != data.num_classes):
        raise SearchError(f"--class-weights has {len(config.class_weights)} weight(s) but the data has "
                          f"{data.num_classes} classes" + (" (binary: no class weights)" if data.num_classes == 2 else
                                                           f" ({', '.join(data.class_names)})"))
    try:
        Objectives.parse(config.objectives).check_data(data)  # dice:<class>, dice_small: scorable on this data?
    except ValueError as error:
        raise SearchError(f"--objectives {error}") from None
    if data.spatial_dims != space.spatial_dims:
        kind = {2: "2D images", 3: "3D volumes"}
        raise SearchError(f"space {space.name!r} builds {kind[space.spatial_dims]} networks but --data "
                          f"{config.data!r} holds {kind[data.spatial_dims]}")
    from nas.engine.optuna_adapter import default_storage  # lazy: see _check_settings

    return Plan(config, space, restriction, constraints, Objectives.parse(config.objectives), data, out,
                config.storage or default_storage(out, config.workers), config.study_name or space.name)


def run_settings(plan: Plan) -> RunSettings:
    """The settings a resume must match, as the study stores them: only what differs from the defaults
    (so studies made before a setting existed still resume); never change the fields' names."""
    config = plan.config
    data_id = config.data if config.data.startswith("synthetic") else str(Path(config.data).resolve())
    family = config.warm_start == "family" or "family" in config.baselines
    early_stop = {"halving": "on", "none": "off"}.get(config.early_stop, config.early_stop)  # as before the rules

    def changed(value: Any, default: Any) -> Any:
        return value if value != default else None

    return RunSettings(
        space=plan.space.name, data=data_id, epochs=config.epochs, image_size=config.image_size,
        batch_size=config.batch_size, seed=config.seed,
        restriction=plan.restriction.to_dict() if plan.restriction else None,
        constraints=plan.constraints.to_dict() if plan.constraints else None,
        recipe=config.recipe_changes() or None, **data_settings(plan),
        family_rungs=changed(config.family_rungs, SearchConfig.family_rungs) if family else None,
        early_stop_rungs=config.early_stop_rungs or None, objectives=changed(plan.objectives, Objectives()),
        sampler=changed(config.sampler, "tpe"), early_stop=changed(early_stop, "on"),
        latency_engine=changed(config.latency_engine, "torch"))


def study_settings(plan: Plan) -> dict[str, Any]:
    """The settings stored in the study (``Plan.settings`` as its dict): a resume with other values is refused."""
    return plan.settings.to_dict()


def data_settings(plan: Plan) -> dict[str, Any]:
    """How an epoch and the test split were made, when they differ from what runs before them did (one
    patch per image, no test split): a resume must match, and ``nas-finalize`` splits the same way."""
    data, settings = plan.data, {}
    patches = plan.config.patches_per_epoch or epoch_patches(data, plan.config.image_size)
    if patches != len(data.train_images):
        settings["patches_per_epoch"] = patches
    if data.held_out:
        settings["test_fraction"] = data.held_out
    if data.num_classes != 2:  # label maps (binary studies keep their settings)
        settings["num_classes"] = data.num_classes
    return settings


def gpus_per_trial(config: SearchConfig) -> float:
    return config.gpus_per_trial if config.gpus_per_trial is not None else float(gpu_count(config.device) > 0)


def gpu_count(device: str) -> int:
    return torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
