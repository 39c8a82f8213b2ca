"""What a checkpoint's files may hold: every field checked before anything is built or used.

Checkpoints are shared (``best/``, the model card), so ``spec.json``, ``metrics.json`` and
``model.safetensors`` are input from someone else. Each check here raises ``ValueError`` with one
line (``nas.deploy.checkpoint`` names the file in front of it and raises ``CheckpointError``):

* types and ranges of every field a command uses (channels, a threshold in (0, 1), a normalization
  with finite means and stds >= 1e-6, class names and colours, the measured input shape);
* the values that change what the model predicts (architecture, channels, normalization,
  threshold, class names) against the copy ``save_checkpoint`` put into the weights file's header
  (``PREDICTS``), which the SHA-256 in ``metrics.json`` covers: an edit without re-hashing is
  caught; a checkpoint saved before that copy existed is read as before;
* the weights file's size against the bytes the architecture's state dict takes.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

from nas.costs.footprint import Footprint
from nas.data.labels import MAX_NAME
from nas.data.normalization import Normalization
from nas.io import printable

PREDICTS = "predicts"  # key of the safetensors header metadata: the JSON of ``predicts(...)``
MAX_CHANNELS = 1024
MAX_SIDE, MAX_PIXELS = 8192, 2**26  # nas.run.limits: the largest side and pixels per batch any command takes
STD_FLOOR = 1e-6  # nas.data.normalization floors a computed std here
HEADER_SLACK = 64 << 10  # bytes a safetensors header may take beyond ~1 kB per tensor
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _shown(value: Any, limit: int = 80) -> str:
    text = printable(json.dumps(value, default=str) if not isinstance(value, str) else repr(value))
    return text if len(text) <= limit else text[:limit] + "..."


def channels(header: Mapping[str, Any], key: str) -> int:
    value = header.get(key)
    if not _is_int(value) or not 1 <= value <= MAX_CHANNELS:
        raise ValueError(f"{key} must be an int in 1..{MAX_CHANNELS}, got {_shown(value)}")
    return value


def normalization(value: Any, in_channels: int) -> Normalization:
    """One finite mean and one finite std >= 1e-6 per input channel."""
    if not isinstance(value, dict) or not isinstance(value.get("mean"), list) or not isinstance(value.get("std"), list):
        raise ValueError(f"normalization must be {{\"mean\": [...], \"std\": [...]}}, got {_shown(value)}")
    mean, std = value["mean"], value["std"]
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"normalization needs one mean and one std per input channel ({in_channels}), "
                         f"got {len(mean)} and {len(std)}")
    if not all(_finite(v) for v in mean):
        raise ValueError(f"normalization mean must be finite numbers, got {_shown(mean)}")
    if not all(_finite(v) and v >= STD_FLOOR for v in std):
        raise ValueError(f"normalization std must be finite numbers >= {STD_FLOOR:g} (a std of 0 divides by "
                         f"zero), got {_shown(std)}")
    return Normalization(tuple(mean), tuple(std))


def _check(ok: bool, key: str, wanted: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key} must be {wanted}, got {_shown(value)}")


def _input_shape(shape: Any, in_channels: int, dims: int) -> None:
    wanted = f"[batch, {in_channels}, {', '.join('S' * dims)}] of positive ints (sides <= {MAX_SIDE}, at most " \
             f"{MAX_PIXELS:,} pixels)"
    ok = (isinstance(shape, list) and len(shape) == 2 + dims and all(_is_int(s) and s >= 1 for s in shape)
          and shape[1] == in_channels and shape[0] <= MAX_CHANNELS and all(s <= MAX_SIDE for s in shape[2:])
          and math.prod(shape[2:]) <= MAX_PIXELS)
    _check(ok, "input_shape", wanted, shape)


def _classes(metrics: Mapping[str, Any], count: int) -> None:
    names, colours, declared = metrics.get("class_names"), metrics.get("class_colours"), metrics.get("num_classes")
    if declared is not None:
        _check(_is_int(declared) and declared == count, "num_classes", f"{count} (the model's output classes)",
               declared)
    if names is not None:
        _check(isinstance(names, list) and len(names) == count and all(
            isinstance(n, str) and 0 < len(n) <= MAX_NAME and printable(n) == n for n in names)
            and len(set(names)) == count,
            "class_names", f"{count} distinct names of 1..{MAX_NAME} characters without control characters", names)
    if colours is not None:
        _check(isinstance(colours, list) and len(colours) == count and all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c) for c in colours),
            "class_colours", f"{count} [R, G, B] triples of 0..255", colours)


# key -> (what it must be, test); None always passes (not measured)
_TOP = {
    "dice": ("a number in [0, 1]", lambda v: _finite(v) and 0 <= v <= 1),
    "params": ("a non-negative int", lambda v: _is_int(v) and v >= 0),
    "macs": ("a non-negative int", lambda v: _is_int(v) and v >= 0),
    "flops": ("a non-negative int", lambda v: _is_int(v) and v >= 0),
    "latency_ms": ("a number", _is_number),
    "latency_ms_search": ("a number", _is_number),
    "miou": ("a number", _is_number),
    "quality": ("an object", lambda v: isinstance(v, dict)),
    "per_class": ("an object", lambda v: isinstance(v, dict)),
    "finalized": ("an object", lambda v: isinstance(v, dict)),
    "latency_remeasured": ("an object", lambda v: isinstance(v, dict)),
    "onnx": ("an object", lambda v: isinstance(v, dict)),
}
_NESTED = {
    ("finalized", "dice_mean"): ("a number", _is_number),
    ("finalized", "dice_std"): ("a number", _is_number),
    ("finalized", "dice_ci"): ("[low, high] numbers", lambda v: isinstance(v, list) and len(v) == 2
                               and all(x is None or _is_number(x) for x in v)),
    ("latency_remeasured", "spread"): ("a number", _is_number),
    ("latency_remeasured", "latency_ms"): ("a number", _is_number),
}


def metrics(value: Any, *, in_channels: int, class_count: int, dims: int) -> dict[str, Any]:
    """``metrics.json``: an object whose threshold, hashes, classes, input shape and the numbers the
    commands compute with have the types and ranges they need."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    threshold = value.get("threshold")
    _check(threshold is None or (_finite(threshold) and 0 < threshold < 1), "threshold",
           "a number strictly between 0 and 1 (foreground where sigmoid(logit) > threshold)", threshold)
    sha = value.get("weights_sha256")
    _check(sha is None or (isinstance(sha, str) and _SHA256.fullmatch(sha) is not None), "weights_sha256",
           "64 lowercase hex digits", sha)
    _classes(value, class_count)
    if value.get("input_shape") is not None:
        _input_shape(value["input_shape"], in_channels, dims)
    for key, (wanted, test) in _TOP.items():
        if value.get(key) is not None:
            _check(test(value[key]), key, wanted, value[key])
    for (block, key), (wanted, test) in _NESTED.items():
        inner = (value.get(block) or {}).get(key)
        if inner is not None:
            _check(test(inner), f"{block}.{key}", wanted, inner)
    return value


def predicts(space: str, spec: Any, in_channels: int, out_channels: int, norm: Normalization,
             metrics_: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that changes what the weights predict, as plain JSON: the copy stored in the
    weights file's header at save time and compared on every load."""
    return json.loads(json.dumps({
        "space": space, "spec": spec.to_dict(), "in_channels": in_channels, "out_channels": out_channels,
        "normalization": norm.to_dict(), "threshold": metrics_.get("threshold"),
        "class_names": metrics_.get("class_names"),
    }, sort_keys=True))


# which file holds each field, for the message
_FILE_OF = {"threshold": "metrics.json", "class_names": "metrics.json"}


def predicts_problem(stored: str | None, current: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(file, why)`` when the checkpoint's JSON files disagree with what the weights were saved with,
    else None. ``stored`` is the weights header's ``PREDICTS`` text (None: saved before it existed,
    nothing to compare)."""
    if stored is None:
        return None
    try:
        saved = json.loads(stored)
    except (ValueError, RecursionError):
        saved = None
    if not isinstance(saved, dict):
        return "model.safetensors", f"its header's {PREDICTS!r} entry is not a JSON object (the file was altered)"
    for key in sorted(set(saved) | set(current)):
        was, now = saved.get(key), current.get(key)
        if was == now:
            continue
        name = key
        if key == "spec" and isinstance(was, dict) and isinstance(now, dict):  # name the field that differs
            name = next(k for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k))
            was, now = was.get(name), now.get(name)
        return _FILE_OF.get(key, "spec.json"), (
            f"{name} {_shown(now)}, but the weights were saved with {_shown(was)} (model.safetensors records it): "
            "edited after saving; restore the file, or save the checkpoint again")
    return None


def weights_size_problem(size: int, footprint: Footprint) -> str | None:
    """Why a weights file of ``size`` bytes cannot hold the architecture's state dict, or None.
    Its tensors take ``footprint.state_bytes`` (float32 as saved) after an 8-byte length and a JSON
    header of about 100 bytes per tensor (allowed up to 1 kB each, plus 64 kB)."""
    least = 8 + footprint.state_bytes
    most = least + HEADER_SLACK + 1024 * footprint.tensors
    if size < least:
        return (f"not a readable safetensors file for spec.json: {size:,} bytes, but the architecture's "
                f"{footprint.tensors} tensors take {footprint.state_bytes:,} (truncated, or another model's weights)")
    if size > most:
        return (f"not a readable safetensors file for spec.json: {size:,} bytes, but the architecture's "
                f"{footprint.tensors} tensors take {footprint.state_bytes:,} (at most {most:,} with the header): "
                "another model's weights, or data appended")
    return None


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """One printable line of an error's text."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    text = printable(lines[0])
    return text if len(text) <= limit else text[:limit] + "..."

