"""The GPU check's ground: its clock, the project internals it uses, card peaks, its errors and
its context (the budget). Imported first by benchmarks/gpu_check.py, so the clock starts before torch."""
from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here (before torch is imported)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as _dt  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a bare copy of the tree (PYTHONPATH-less) too
    sys.path.insert(0, str(ROOT))

PARTS = ("environment", "throughput", "memory", "oom", "workers", "ray", "export_latency", "e2e_search")
FAIL_ENV = "GPU_CHECK_FAIL_PART"  # = the hidden --fail-part flag: that part raises at its start (tests)
MIB, GIB = 2**20, 2**30


# ---------------------------------------------------------------------------------------------
# The project's internals this script uses, in one place. Everything else goes through the CLIs
# (subprocesses) and the public ``nas.load_checkpoint`` / ``nas.save_checkpoint``. When a module
# moves, only this table changes (a name may list several modules: the first that has it wins).

_INTERNALS = {
    # name: (attribute, module, ...)
    "TrainConfig": ("TrainConfig", "nas.train.trainer"),
    "train_model": ("train_model", "nas.train.trainer"),
    "dice_focal_loss": ("dice_focal_loss", "nas.train.trainer"),
    "gradient_checkpointing": ("gradient_checkpointing", "nas.train.trainer"),
    "load_data": ("load_data", "nas.data.loading"),
    "Normalization": ("Normalization", "nas.data.normalization", "nas.data.loading"),
    "iterate_train_batches": ("iterate_train_batches", "nas.data.patches"),
    "training_step_memory": ("training_step_memory", "nas.costs.constraints"),
    "measure_latency": ("measure_latency", "nas.costs.measure"),
    "failure_reason": ("failure_reason", "nas.engine.trial"),
    "release_memory": ("release_memory", "nas.engine.trial"),
    "get_space": ("get_space", "search_spaces"),
    "get_preset": ("get_preset", "search_spaces.presets"),
}
_project_cache: SimpleNamespace | None = None


def project() -> SimpleNamespace:
    """The internals above; an ImportError names what moved (that part then fails, the rest runs)."""
    global _project_cache
    if _project_cache is None:
        found = {}
        for name, (attribute, *modules) in _INTERNALS.items():
            for module in modules:
                try:
                    found[name] = getattr(importlib.import_module(module), attribute)
                    break
                except (ImportError, AttributeError):
                    continue
            else:
                raise ImportError(f"{attribute} not found in {' or '.join(modules)}")
        _project_cache = SimpleNamespace(**found)
    return _project_cache


# ---------------------------------------------------------------------------------------------
# Dense peak throughput per card (TFLOP/s, no sparsity), from the vendors' datasheets. Keys are
# regular expressions searched in torch.cuda.get_device_name(); the first match wins. "tf32" is what
# PyTorch's fp32 convolutions run at while torch.backends.cudnn.allow_tf32 is True (its default).

PEAKS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("H100 PCIe", r"H100.*PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("H100 NVL", r"H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H200 / H100 SXM", r"H200|H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", r"A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", r"L40S", {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("L40", r"\bL40\b", {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5}),
    ("L4", r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("A10", r"\bA10\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    ("RTX 4090", r"RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    ("RTX 3090", r"RTX 3090", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}),
    ("V100", r"V100", {"fp16": 125.0, "fp32": 15.7}),  # SXM2; no bf16, no tf32
    ("T4", r"\bT4\b", {"fp16": 65.0, "fp32": 8.1}),  # no bf16, no tf32
)


def card_peaks(name: str | None) -> tuple[str | None, dict[str, float]]:
    """``(table entry, {dtype: TFLOP/s})`` for a card name; ``(None, {})`` for an unknown card."""
    for label, pattern, peaks in PEAKS:
        if name and re.search(pattern, name):
            return label, peaks
    return None, {}


# ---------------------------------------------------------------------------------------------
# A part's outcomes other than a result, and the context every part gets (the budget).

class Skip(Exception):
    """This part cannot run here; the message is the reason shown after "skipped: "."""


class PartFailed(RuntimeError):
    """A part that ran but missed what it checks: reported failed, with what it measured."""

    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


class PartTimeout(RuntimeError):
    """A subprocess of a part outran what the budget left it."""


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    out: Path
    work: Path
    deadline: float
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    current: str | None = None
    children: list[subprocess.Popen] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    finished: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def smoke(self) -> bool:
        return bool(self.args.smoke)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def need_cuda(self) -> None:
        if not self.cuda:
            raise Skip("no CUDA")


