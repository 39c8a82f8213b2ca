"""Checkpoints without pickles: ``spec.json`` (architecture) + ``model.safetensors`` (weights).

``metrics.json`` carries the metrics and a SHA-256 of the weights file, checked on load, so a
truncated or swapped weights file is refused instead of silently loaded.
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
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from search_spaces import get_space

from nas.data.normalization import Normalization
from nas.failpoints import failpoint
from nas.io import WriteError, atomic_write_bytes, atomic_write_json, staging_dir

FORMAT = "resunet-nas-checkpoint"
FORMAT_VERSION = 1
SPEC_FILE, WEIGHTS_FILE, METRICS_FILE = "spec.json", "model.safetensors", "metrics.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")  # named in errors, never opened


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class CheckpointInfo:
    space: str
    spec: Any  # the space's spec dataclass, e.g. ResUNetSpec
    in_channels: int
    out_channels: int
    normalization: Normalization
    metrics: dict[str, Any]


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
        # serialized in memory, then written with os.write: a full disk is an OSError (WriteError)
        atomic_write_bytes(weights, save_bytes(state, metadata={"format": FORMAT}))
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
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not readable JSON ({error})") from None


def read_checkpoint_info(folder: str | os.PathLike) -> CheckpointInfo:
    """Parse ``spec.json`` and ``metrics.json`` (no weights), validating every field."""
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
        space = get_space(header["space"])
        spec = space.spec_from_dict(header["spec"])
        normalization = Normalization.from_dict(header["normalization"])
        in_channels, out_channels = int(header["in_channels"]), int(header["out_channels"])
    except KeyError as error:
        raise CheckpointError(f"{where}: missing field {error}") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from None
    metrics_path = folder / METRICS_FILE
    metrics = _read_json(metrics_path) if metrics_path.exists() else {}
    return CheckpointInfo(space.name, spec, in_channels, out_channels, normalization, metrics)


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """Rebuild the model from ``spec.json`` and load the weights strictly; returns ``(model, spec)``.

    The model is in eval mode. Inputs are raw images scaled to [0, 1] and then normalized with
    ``read_checkpoint_info(folder).normalization``.
    """
    folder = Path(folder)
    info = read_checkpoint_info(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        found = f" (found {', '.join(pickles)}: pickled weights are never loaded)" if pickles else ""
        raise CheckpointError(f"{weights}: missing{found}")
    expected = info.metrics.get("weights_sha256")
    try:
        actual = file_sha256(weights)
    except OSError as error:
        raise CheckpointError(f"{weights}: cannot read it ({error.strerror or error})") from None
    if expected is not None and actual != expected:
        raise CheckpointError(f"{weights}: content hash does not match metrics.json (corrupt or replaced)")
    try:
        state = load_file(weights)  # safetensors: plain tensors, never executes code
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error})") from None
    model = get_space(info.space).build_model(info.spec, info.in_channels, info.out_channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{weights}: weights do not fit spec.json ({first})") from None
    return model.to(device).eval(), info.spec
