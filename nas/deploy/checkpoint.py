"""Checkpoints without pickles: ``spec.json`` (architecture) + ``model.safetensors`` (weights).

``metrics.json`` carries the metrics and a SHA-256 of the weights file, checked on load, so a
truncated or swapped weights file is refused instead of silently loaded. Every file is input from
someone else (``nas.deploy.checkpoint_checks``): the JSON files are size- and depth-bounded and
every field checked, the architecture's size is counted on the meta device before it is built, the
weights file's size is checked against it before it is hashed or read, and the values that change
predictions are compared with the copy the weights file's header carries. Every refusal is one
``CheckpointError`` line.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from search_spaces import get_space

from nas.costs.footprint import Footprint, footprint_problem, spec_footprint
from nas.data.normalization import Normalization
from nas.deploy import checkpoint_checks as checks
from nas.failpoints import failpoint
from nas.io import JsonError, WriteError, atomic_write_bytes, atomic_write_json, printable, read_json, staging_dir

FORMAT = "resunet-nas-checkpoint"
FORMAT_VERSION = 1
SPEC_FILE, WEIGHTS_FILE, METRICS_FILE = "spec.json", "model.safetensors", "metrics.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")  # named in errors, never opened


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message is one printable line naming the file
    and the problem."""

    def __init__(self, message: object) -> None:
        super().__init__(printable(message))


@dataclass(frozen=True)
class CheckpointInfo:
    space: str
    spec: Any  # the space's spec dataclass, e.g. ResUNetSpec
    in_channels: int
    out_channels: int
    normalization: Normalization
    metrics: dict[str, Any]
    footprint: Footprint | None = None  # the architecture's weights, counted on the meta device

    @property
    def threshold(self) -> float | None:
        """The probability above which a binary model's pixel is foreground (chosen on validation and
        stored in ``metrics.json``; 0.5 when none was stored); None for a K-class model (argmax)."""
        if self.out_channels != 1:
            return None
        value = self.metrics.get("threshold")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.5


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, spec: Any, *, space: str,
                    in_channels: int, out_channels: int, normalization: Normalization,
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write the three files into a temp folder, then swap it in: never a half-written folder."""
    folder = Path(folder)
    staging = staging_dir(folder)
    try:
        weights = staging / WEIGHTS_FILE
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        # what changes predictions, in the header the weights' hash covers (checked on every load)
        predicts = checks.predicts(space, spec, in_channels, out_channels, normalization, metrics or {})
        header = {"format": FORMAT, checks.PREDICTS: json.dumps(predicts, sort_keys=True)}
        # serialized in memory, then written with os.write: a full disk is an OSError (WriteError)
        atomic_write_bytes(weights, save_bytes(state, metadata=header))
        atomic_write_json(staging / SPEC_FILE, {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "space": space,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "normalization": normalization.to_dict(),
            "spec": spec.to_dict(),
        })
        atomic_write_json(staging / METRICS_FILE,
                          {**(metrics or {}), "weights_sha256": file_sha256(weights)})
        failpoint("checkpoint")
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def replace_folder(source: Path, target: Path) -> None:
    """Rename ``source`` onto ``target``; an existing target is moved aside first, then deleted."""
    trash = None
    try:
        if target.exists():
            trash = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(target, trash)
            failpoint("replace_folder")
        try:
            os.replace(source, target)
        except BaseException:
            if trash is not None:
                os.replace(trash, target)  # the previous version goes back
            raise
    except OSError as error:
        raise WriteError(target, error) from error
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _read_json(path: Path) -> Any:
    try:
        return read_json(path, invalid="not readable JSON")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except JsonError as error:
        raise CheckpointError(str(error)) from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror or error})") from None


def read_checkpoint_info(folder: str | os.PathLike) -> CheckpointInfo:
    """Parse ``spec.json`` and ``metrics.json`` (no weights), validating every field, and count the
    architecture's weights on the meta device (refused when they could not be allocated)."""
    folder = Path(folder)
    if not folder.is_dir():
        hint = (" (pickled checkpoints are never loaded: a checkpoint is a folder with spec.json and "
                f"{WEIGHTS_FILE})") if folder.suffix.lower() in PICKLE_SUFFIXES else ""
        raise CheckpointError(f"{folder}: not a checkpoint folder{hint}")
    header = _read_json(folder / SPEC_FILE)
    where = folder / SPEC_FILE
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a {FORMAT} file")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {version!r} is newer than this tool ({FORMAT_VERSION})")
    try:
        if not isinstance(header["space"], str):
            raise ValueError(f"space must be a name, got {header['space']!r}")
        space = get_space(header["space"])
        spec = space.spec_from_dict(header["spec"])
        in_channels, out_channels = checks.channels(header, "in_channels"), checks.channels(header, "out_channels")
        if getattr(spec, "out_channels", out_channels) != out_channels:
            raise ValueError(f"out_channels {out_channels} disagrees with the spec's {spec.out_channels} "
                             f"(num_classes {getattr(spec, 'num_classes', '?')})")
        normalization = checks.normalization(header["normalization"], in_channels)
    except KeyError as error:
        raise CheckpointError(f"{where}: missing field {error}") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from None
    footprint = _footprint(where, space, spec, in_channels, out_channels)
    metrics_path = folder / METRICS_FILE
    metrics = _read_json(metrics_path) if metrics_path.exists() else {}
    try:
        checks.metrics(metrics, in_channels=in_channels, class_count=2 if out_channels == 1 else out_channels,
                       dims=int(getattr(space, "spatial_dims", 2)))
    except ValueError as error:
        raise CheckpointError(f"{metrics_path}: {error}") from None
    return CheckpointInfo(space.name, spec, in_channels, out_channels, normalization, metrics, footprint)


def _footprint(where: Path, space: Any, spec: Any, in_channels: int, out_channels: int) -> Footprint:
    """The architecture's weights counted without allocating them; refused when they would not fit."""
    try:
        footprint = spec_footprint(space, spec, in_channels, out_channels)
    except (RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the architecture cannot be built ({checks.first_line(error)})") from None
    problem = footprint_problem(footprint)
    if problem:
        raise CheckpointError(f"{where}: {problem}")
    return footprint


def _stored_predicts(weights: Path) -> str | None:
    """The header's ``predicts`` entry (None when the file predates it); the file was size-checked."""
    with safe_open(weights, "pt") as handle:  # reads the header only
        return (handle.metadata() or {}).get(checks.PREDICTS)


def verify_weights(folder: str | os.PathLike, info: CheckpointInfo | None = None) -> Path:
    """``model.safetensors`` checked without loading it: present, of the size the architecture
    implies (before it is hashed or read), of the SHA-256 ``metrics.json`` records, and saved with
    the architecture, normalization, threshold and class names the JSON files now state."""
    folder = Path(folder)
    info = info if info is not None else read_checkpoint_info(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        found = f" (found {', '.join(pickles)}: pickled weights are never loaded)" if pickles else ""
        raise CheckpointError(f"{weights}: missing{found}")
    try:
        problem = checks.weights_size_problem(weights.stat().st_size, info.footprint) if info.footprint else None
        if problem:
            raise CheckpointError(f"{weights}: {problem}")
        actual = file_sha256(weights)
    except OSError as error:
        raise CheckpointError(f"{weights}: cannot read it ({error.strerror or error})") from None
    expected = info.metrics.get("weights_sha256")
    if expected is not None and actual != expected:
        raise CheckpointError(f"{weights}: content hash does not match metrics.json (corrupt or replaced)")
    try:
        stored = _stored_predicts(weights)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({checks.first_line(error)})") from None
    current = checks.predicts(info.space, info.spec, info.in_channels, info.out_channels, info.normalization,
                              info.metrics)
    disagreement = checks.predicts_problem(stored, current)
    if disagreement:
        raise CheckpointError(f"{folder / disagreement[0]}: {disagreement[1]}")
    return weights


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """Rebuild the model from ``spec.json`` and load the weights strictly; returns ``(model, spec)``.

    The model is in eval mode. Inputs are raw images scaled to [0, 1] and then normalized with
    ``read_checkpoint_info(folder).normalization``. Anything wrong with the folder's files is one
    ``CheckpointError`` line, raised before the model is allocated.
    """
    folder = Path(folder)
    info = read_checkpoint_info(folder)
    weights = verify_weights(folder, info)
    try:
        state = load_file(weights)  # safetensors: plain tensors, never executes code
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({checks.first_line(error)})") from None
    model = get_space(info.space).build_model(info.spec, info.in_channels, info.out_channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights}: weights do not fit spec.json ({checks.first_line(error)})") from None
    return model.to(device).eval(), info.spec
