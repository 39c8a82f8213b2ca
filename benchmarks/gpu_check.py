#!/usr/bin/env python3
"""GPU check: one command that exercises every CUDA path of the workbench and measures it.

    python benchmarks/gpu_check.py --out runs/gpu_check                  # on a GPU machine (make gpu-check)
    python benchmarks/gpu_check.py --device cpu --smoke --out /tmp/gpu   # CI: toy sizes on the CPU

Parts, in this order (each isolated: a part that raises is reported with its one-line error and the
rest runs; a part whose estimated time exceeds what is left of ``--budget-s`` is "skipped: budget";
a GPU-only part without CUDA is "skipped: no CUDA"):

* ``environment``: torch, CUDA and cuDNN versions, the card, its memory, bf16 support, the dense peak used;
* ``throughput``: preset ``resunet-standard`` (one gray channel) at 256 px, the project's trainer
  (``train_model``) against a plain PyTorch loop over the same pre-built batches, for fp32, bf16 AMP,
  fp16 AMP + GradScaler, channels_last and channels_last + bf16; images/s and MFU = 3 x forward FLOPs x
  images/s / the card's dense peak for that dtype (table ``PEAKS``; "unknown card" otherwise);
* ``memory``: peak CUDA memory of one training step at batch 1 on 2048 x 2048 and 3840 x 2160, with and
  without gradient checkpointing (the trainer's own context manager), against the project's estimate
  (``nas-profile``'s training-step memory, scaled by pixel count); an OOM is recorded, not fatal;
* ``oom``: a real CUDA out-of-memory inside a tiny ``nas-search`` (batch 96 of the widest architecture
  cannot fit): the trial fails with its reason, memory is released, the next trial trains; plus the
  same failure in this process, with the allocator's numbers before and after ``release_memory``;
* ``workers``: ``nas-search --workers 2`` sharing one GPU (trials per worker, overlap in time);
* ``ray``: ``nas-search --backend ray --gpus-per-trial 0.5`` when Ray imports;
* ``export_latency``: ``nas-export`` to ONNX, then batch-1 latency: PyTorch eager fp32 / fp16 against
  ONNX Runtime's CUDA (and TensorRT) execution providers, with the CPU provider as reference;
* ``e2e_search``: a tiny ``nas-search --device cuda`` whose checkpoints are reloaded (and whose report is
  rebuilt by ``nas-report``) in a process that sees no GPU.

Isolation: the parts that compute in-process (throughput, memory, oom, export_latency) each run in a
child process of this script, so a segfault, a sticky CUDA error or a hang ends that part only; the
CLIs run as subprocesses, from the entry points in ``pyproject.toml`` (a stale console script cannot
hide a moved module). Every subprocess gets at most what the budget has left, in its own process group.

Outputs, both rewritten atomically after every part (a killed run still leaves valid files):
``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (tables, and the issue's goals: met / not met /
not measured). Exit code: 0 when no part failed, 1 when one did (or the budget stopped one), 2 for bad
arguments. Nothing is installed at run time.
"""
from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here (before torch is imported)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as _dt  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any, Callable  # noqa: E402
from unittest import mock  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
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
# Running parts: budget, watchdog, subprocesses, outputs.

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


def entry_points() -> dict[str, str]:
    """``{"nas-search": "nas.cli.search:main", ...}`` from pyproject.toml's [project.scripts]."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib

        return dict(tomllib.loads(text)["project"]["scripts"])
    except ImportError:  # Python 3.10: the table is simple enough to read by hand
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        return dict(re.findall(r'^\s*([\w-]+)\s*=\s*"([^"]+)"', section, re.M))


def cli_command(name: str, *args: Any) -> list[str]:
    """The command line of one of the project's CLIs, run by this interpreter from the source tree."""
    target = entry_points()[name]
    module, _, function = target.partition(":")
    code = f"import sys; from {module} import {function} as main; sys.exit(main())"
    return [sys.executable, "-c", code, *map(str, args)]


def run_command(ctx: Context, command: list[str], *, label: str, cap_s: float,
                env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``command`` in the repository root, in its own process group (killed whole on a timeout),
    with at most ``cap_s`` seconds and never past the budget; its output goes to a log under work/."""
    timeout = min(cap_s, ctx.remaining() - 3.0)
    if timeout < 1.0:
        raise PartTimeout(f"{label}: no budget left to start it")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    pythonpath = full_env.get("PYTHONPATH", "")
    if str(ROOT) not in pythonpath.split(os.pathsep):
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)
    log = ctx.work / "logs" / f"{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        ctx.children.append(process)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            raise PartTimeout(f"{label} did not finish within {timeout:.0f} s (killed); log tail: "
                              f"{tail(log, 3)}") from None
        finally:
            ctx.children.remove(process)
    output = log.read_text(encoding="utf-8", errors="replace")
    result = subprocess.CompletedProcess(command, process.returncode, output, "")
    result.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if check and process.returncode != 0:
        raise RuntimeError(f"{label} exited with {process.returncode}: {tail(log, 3)}")
    return result


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Shared measurements

def standard_spec(ctx: Context):
    """``resunet-standard``'s spec; with --smoke the same design at 1/8 of the width (8-16-32 + 64).

    Not 1/16: on torch 2.13.0+cpu a channels_last backward through the 4 -> 8 stride-2 1x1 shortcut
    conv corrupts the heap (``Conv2d(4, 8, 1, stride=2)``, 32 px, batch 4: SIGSEGV / "double free").
    """
    spec = project().get_preset("resunet-standard").spec
    if ctx.smoke:
        spec = dataclasses.replace(spec, encoder_widths=(8, 16, 32, 64), decoder_widths=(8, 16, 32))
    return spec


def build(spec, in_channels: int = 1) -> torch.nn.Module:
    return project().get_space("resunet").build_model(spec, in_channels, 1)


def profile_spec(ctx: Context, spec, size: int) -> dict[str, Any]:
    """``nas-profile --spec ... --json`` (1 gray channel, batch 1, on the CPU): MACs, FLOPs, params and
    the project's training-step memory estimate. Kept under work/, so the parts' processes share it."""
    import hashlib

    key = hashlib.sha256(f"{json.dumps(spec.to_dict(), sort_keys=True)}:{size}".encode()).hexdigest()[:16]
    cached = ctx.work / f"profile-{key}.json"
    if not cached.exists():
        path = ctx.work / f"spec-{key}.json"
        path.write_text(json.dumps(spec.to_dict()))
        result = run_command(ctx, cli_command("nas-profile", "--spec", path, "--image-size", size,
                                              "--in-channels", 1, "--batch-size", 1, "--device", "cpu",
                                              "--repeats", 1, "--warmup", 0, "--json"),
                             label=f"nas-profile-{size}", cap_s=180)
        atomic_write(cached, result.stdout.strip().splitlines()[-1])
    return json.loads(cached.read_text())


def amp_dtype() -> torch.dtype:
    """What the trainer's AMP picks on this card: bf16 where supported, else fp16 (+ GradScaler)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_step(model: torch.nn.Module, device: torch.device, cast: torch.dtype | None, scaler: bool,
              memory_format: torch.memory_format):
    """One training step as the trainer does it (Adam, Dice + focal loss, autocast, optional scaler)."""
    P = project()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    grad_scaler = torch.amp.GradScaler("cuda", enabled=scaler and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=cast)) if cast is not None else nullcontext

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast():
            logits = model(x.contiguous(memory_format=memory_format))
        loss = P.dice_focal_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        grad_scaler.scale(loss).backward()
        grad_scaler.step(optimizer)
        grad_scaler.update()
        return loss.detach()

    return step


# ---------------------------------------------------------------------------------------------
# Part 1: environment

def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def part_environment(ctx: Context) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "cuda_available": torch.cuda.is_available(), "device": str(ctx.device),
        "tf32_convolutions": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "packages": {p: _version(p) for p in ("optuna", "onnx", "onnxruntime", "onnxruntime-gpu", "fvcore",
                                              "plotly", "safetensors", "ray", "numpy")},
        "ray_importable": importlib.util.find_spec("ray") is not None,
    }
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError as error:
        info["onnxruntime_providers"] = f"not importable: {error}"
    if not ctx.cuda:
        info["summary"] = (f"no CUDA: {info['cpu']} ({info['cpu_count']} CPUs, {info['torch_threads']} torch "
                           f"threads); torch {torch.__version__}"
                           + ("" if torch.version.cuda else " (a CPU build: CUDA needs a CUDA build of torch)"))
        return info
    index = ctx.device.index if ctx.device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    label, peaks = card_peaks(props.name)
    info.update({
        "card": props.name, "memory_bytes": props.total_memory, "memory_gib": props.total_memory / GIB,
        "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
        "bf16_supported": torch.cuda.is_bf16_supported(), "device_count": torch.cuda.device_count(),
        "peak_table_entry": label or "unknown card", "peaks_tflops": peaks,
    })
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip().splitlines()
        except (OSError, subprocess.TimeoutExpired) as error:
            info["nvidia_smi"] = one_line(error)
    info["summary"] = (f"{props.name}, {props.total_memory / GIB:.1f} GiB, sm_{props.major}{props.minor}, bf16 "
                       f"{'yes' if info['bf16_supported'] else 'no'}; torch {torch.__version__} (CUDA "
                       f"{torch.version.cuda}, cuDNN {info['cudnn']}); peaks: "
                       + (f"{label} (bf16 {peaks.get('bf16', '-')}, tf32 {peaks.get('tf32', '-')} TFLOP/s dense)"
                          if label else "unknown card"))
    return info


# ---------------------------------------------------------------------------------------------
# Part 2: training throughput, trainer vs plain loop

def _variants(ctx: Context) -> list[dict[str, Any]]:
    """Each variant: the trainer's config, the plain loop's equivalent, the peak's dtype."""
    tf32 = "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    if ctx.cuda:
        bf16_ok = torch.cuda.is_bf16_supported()
        return [
            dict(name="fp32", config=dict(amp=False), cast=None, scaler=False, cl=False, peak=tf32),
            dict(name="bf16 AMP", config=dict(amp=True), cast=torch.bfloat16, scaler=False, cl=False, peak="bf16",
                 skip=None if bf16_ok else "this card has no bf16"),
            dict(name="fp16 AMP + GradScaler", config=dict(amp=True), cast=torch.float16, scaler=True, cl=False,
                 peak="fp16", force_fp16=True),
            dict(name="channels_last", config=dict(amp=False, channels_last=True), cast=None, scaler=False,
                 cl=True, peak=tf32),
            dict(name="channels_last + bf16 AMP", config=dict(amp=True, channels_last=True), cast=torch.bfloat16,
                 scaler=False, cl=True, peak="bf16", skip=None if bf16_ok else "this card has no bf16"),
        ]
    return [
        dict(name="fp32", config=dict(), cast=None, scaler=False, cl=False, peak="fp32"),
        dict(name="bf16 AMP", config=dict(cpu_bf16=True), cast=torch.bfloat16, scaler=False, cl=False, peak="bf16"),
        dict(name="fp16 AMP + GradScaler", skip="no CUDA", peak="fp16"),
        dict(name="channels_last", config=dict(channels_last=True), cast=None, scaler=False, cl=True, peak="fp32"),
        dict(name="channels_last + bf16 AMP", config=dict(channels_last=True, cpu_bf16=True), cast=torch.bfloat16,
             scaler=False, cl=True, peak="bf16"),
    ]


def plain_loop(spec, batches: list, normalization, device: torch.device, cast, scaler: bool, cl: bool,
               warmup_steps: int) -> float:
    """Images/s of a hand-written loop: same model, loss, optimizer, autocast and memory format over
    the same batches, already on the device; no sampling, augmentation, schedule or validation."""
    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = build(spec).to(device, memory_format=fmt).train()
    step = make_step(model, device, cast, scaler, fmt)
    batches = [(normalization.apply(x.to(device)), y.to(device)) for x, y in batches]
    for x, y in batches[:warmup_steps]:
        step(x, y)
    sync(device)
    images, started = 0, time.perf_counter()
    losses = []
    for x, y in batches:
        losses.append(step(x, y))
        images += x.shape[0]
    float(torch.stack(losses).float().mean())  # one host sync, as the trainer does per epoch
    sync(device)
    return images / (time.perf_counter() - started)


def part_throughput(ctx: Context) -> dict[str, Any]:
    P = project()
    spec = standard_spec(ctx)
    size, batch, patches = (32, 4, 16) if ctx.smoke else (256, 32, 1024)
    warmup_patches = batch * 2
    profile = profile_spec(ctx, spec, size)
    forward_flops = float(profile["flops"])
    counts = dict(synthetic_train=16, synthetic_val=4) if ctx.smoke else {}  # validation is not timed
    data = P.load_data("synthetic", image_size=size, seed=0, **counts)
    batches = list(P.iterate_train_batches(data, patch_size=size, batch_size=batch, seed=0, epoch=1,
                                           patches_per_epoch=patches))
    label, peaks = card_peaks(torch.cuda.get_device_name(ctx.device) if ctx.cuda else None)
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # what the trainer sets
    rows = []
    for variant in _variants(ctx):
        row: dict[str, Any] = {"variant": variant["name"], "peak_dtype": variant["peak"]}
        rows.append(row)
        if variant.get("skip"):
            row["status"] = f"skipped: {variant['skip']}"
            continue
        estimate = 4.0 if ctx.smoke else 25.0
        if ctx.remaining() < estimate + 5:
            row["status"] = "skipped: budget"
            continue
        started = time.monotonic()
        try:
            forced = (mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
                      if variant.get("force_fp16") else nullcontext())
            config_args = dict(epochs=1, batch_size=batch, patch_size=size, seed=0, device=str(ctx.device),
                               **variant["config"])
            with forced:
                if ctx.cuda:  # warm-up: cuDNN autotuning, allocator, first-call costs
                    torch.manual_seed(0)
                    P.train_model(build(spec), data, P.TrainConfig(patches_per_epoch=warmup_patches, **config_args))
                    free_cuda()
                plain = plain_loop(spec, batches, data.normalization, ctx.device, variant["cast"],
                                   variant["scaler"], variant["cl"], warmup_steps=2)
                free_cuda()
                torch.manual_seed(0)
                result = P.train_model(build(spec), data, P.TrainConfig(patches_per_epoch=patches, **config_args))
            trainer = float(result.images_per_second)
            peak = peaks.get(variant["peak"])
            row.update({
                "status": "ok", "trainer_images_per_s": trainer, "plain_images_per_s": plain,
                "ratio": trainer / plain, "peak_tflops": peak,
                "mfu_trainer": 3 * forward_flops * trainer / (peak * 1e12) if peak else None,
                "mfu_plain": 3 * forward_flops * plain / (peak * 1e12) if peak else None,
                "trainer_peak_memory_bytes": result.peak_memory_bytes, "seconds": time.monotonic() - started,
            })
            if variant.get("force_fp16"):
                row["note"] = "trainer put on its fp16 + GradScaler path by reporting no bf16 support"
        except Exception as error:  # one variant failing (an OOM, a kernel missing) keeps the others
            row.update({"status": "failed", "error": one_line(error)})
        finally:
            free_cuda()
    done = [r for r in rows if r.get("status") == "ok"]
    if not done:
        raise RuntimeError("no variant ran: " + "; ".join(f"{r['variant']}: {r.get('error') or r['status']}"
                                                          for r in rows))
    peak_note = (f"peaks of {label}" if label else
                 "unknown card: no peak, no MFU" if ctx.cuda else "CPU: no peak table, no MFU")
    summary = "; ".join(
        f"{r['variant']}: trainer {r['trainer_images_per_s']:.1f} img/s, plain {r['plain_images_per_s']:.1f}, "
        f"ratio {r['ratio']:.2f}" + (f", MFU {100 * r['mfu_trainer']:.1f} %" if r.get("mfu_trainer") else "")
        for r in done)
    return {
        "summary": f"{summary} ({peak_note})", "model": "resunet-standard" + (" at 1/8 width (smoke)" if ctx.smoke else ""),
        "spec": spec.to_dict(), "in_channels": 1, "image_size": size, "batch_size": batch,
        "timed_images": patches, "forward_macs": profile["macs"], "forward_flops": forward_flops,
        "peak_table_entry": label or ("unknown card" if ctx.cuda else "cpu"), "variants": rows,
        "mfu_definition": "3 x forward FLOPs (2 x MACs, batch 1, 1 gray channel) x images/s / dense peak of the dtype",
    }


# ---------------------------------------------------------------------------------------------
# Part 3: peak memory with and without gradient checkpointing

def _checkpointing_grads_match(spec, device: torch.device, size: int) -> float:
    """Max |grad difference| between a step with and one without checkpointing (same weights, input)."""
    P = project()
    torch.manual_seed(0)
    model = build(spec).to(device).train()
    x = torch.randn(2, 1, size, size, device=device)
    y = (torch.rand(2, 1, size, size, device=device) > 0.8).float()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = []
    for enabled in (False, True):
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        with P.gradient_checkpointing(model, enabled):
            P.dice_focal_loss(model(x), y).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    return max(float((a - b).abs().max()) for a, b in zip(*grads, strict=True))


def _peak_step(ctx: Context, spec, height: int, width: int, cast, checkpointing: bool, steps: int) -> dict:
    """Peak allocated bytes (CUDA) and seconds per step of ``steps`` training steps at batch 1."""
    P = project()
    device = ctx.device
    free_cuda()
    torch.manual_seed(0)
    model = build(spec).to(device).train()
    step = make_step(model, device, cast, cast == torch.float16, torch.contiguous_format)
    x = torch.randn(1, 1, height, width, device=device)
    y = (torch.rand(1, 1, height, width, device=device) > 0.9).float()
    try:
        with P.gradient_checkpointing(model, checkpointing):
            step(x, y)  # warm-up: Adam state, cuDNN autotuning (its workspaces stay out of the peak)
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            for _ in range(steps):
                step(x, y)
            sync(device)
            seconds = (time.perf_counter() - started) / steps
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None
        return {"status": "ok", "peak_bytes": peak, "peak_reserved_bytes": reserved, "step_seconds": seconds}
    except torch.cuda.OutOfMemoryError as error:
        return {"status": "OOM", "error": P.failure_reason(error)[:300]}
    finally:
        del model, step, x, y
        free_cuda()


def part_memory(ctx: Context) -> dict[str, Any]:
    P = project()
    spec = standard_spec(ctx)
    sizes = [(32, 32), (24, 40)] if ctx.smoke else [(2048, 2048), (2160, 3840)]
    recipe = amp_dtype() if ctx.cuda else None  # the trainer's default: AMP on CUDA, fp32 on the CPU
    recipe_name = {torch.bfloat16: "bf16 AMP", torch.float16: "fp16 AMP", None: "fp32"}[recipe]
    steps = 2 if ctx.smoke else 3
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # as the trainer runs (its algorithms' workspaces count)
    out: dict[str, Any] = {"rows": [], "in_channels": 1,
                           "estimate_note": "the project's training-step memory (nas.costs training_step_memory, "
                                            "as nas-profile and --max-memory-mb use it): float32 activations saved "
                                            "for backward + params, grads and Adam state, at the row's size"}
    out["grad_checkpointing_max_grad_diff"] = _checkpointing_grads_match(spec, ctx.device, 16 if ctx.smoke else 128)
    plan = []
    for index, (h, w) in enumerate(sizes):
        plan += [(h, w, recipe, recipe_name, False), (h, w, recipe, recipe_name, True)]
        if index == 0 and recipe is not None:
            plan.append((h, w, None, "fp32", False))  # what the estimate describes
    estimates = {}
    for h, w, cast, cast_name, checkpointing in plan:
        if (h, w) not in estimates:
            parts_of = P.training_step_memory(build(spec), (1, 1, h, w))
            estimates[h, w] = parts_of["activation_bytes"] + parts_of["state_bytes"]
        estimate = estimates[h, w]
        row = {"height": h, "width": w, "recipe": cast_name, "checkpointing": checkpointing,
               "estimate_bytes": estimate}
        out["rows"].append(row)
        if ctx.remaining() < (5 if ctx.smoke else 30):
            row["status"] = "skipped: budget"
            continue
        row.update(_peak_step(ctx, spec, h, w, cast, checkpointing, steps))
        if row.get("peak_bytes"):
            row["measured_over_estimate"] = row["peak_bytes"] / estimate
    first = [r for r in out["rows"] if (r["height"], r["width"]) == sizes[0] and r["recipe"] == recipe_name]
    off = next((r for r in first if not r["checkpointing"] and r.get("status") == "ok"), None)
    on = next((r for r in first if r["checkpointing"] and r.get("status") == "ok"), None)
    if off and on:
        out["checkpointing_time_overhead"] = on["step_seconds"] / off["step_seconds"] - 1
        if off.get("peak_bytes") and on.get("peak_bytes"):
            out["checkpointing_memory_cut"] = 1 - on["peak_bytes"] / off["peak_bytes"]
    parts = []
    for r in out["rows"]:
        what = f"{r['height']}x{r['width']} {r['recipe']}{' ckpt' if r['checkpointing'] else ''}"
        if r.get("status") == "ok":
            memory = f"{r['peak_bytes'] / GIB:.2f} GiB" if r.get("peak_bytes") else "peak n/a on CPU"
            parts.append(f"{what}: {memory}, {r['step_seconds'] * 1000:.0f} ms/step")
        else:
            parts.append(f"{what}: {r.get('status')}")
    cut = out.get("checkpointing_memory_cut")
    overhead = out.get("checkpointing_time_overhead")
    headline = (f"checkpointing: {'-' if cut is None else f'{100 * cut:.0f} % less memory'}, "
                f"{'-' if overhead is None else f'{100 * overhead:+.0f} % step time'}; ")
    out["summary"] = headline + "; ".join(parts)
    return out


# ---------------------------------------------------------------------------------------------
# Part 4: a real CUDA out-of-memory inside a search

# The widest and the narrowest corner of the resunet space, as the sampler's params (replayed by
# optuna.trial.FixedTrial, so a name the space no longer has fails loudly).
OOM_BIG = dict(depth=3, width_mode="growth", base_width=16, width_growth=2.0, blocks_per_stage=3, block="inverted",
               expansion=6, downsample="maxpool", dilation="1", aspp=False, attention="scse",
               attention_place="decoder", skip_fusion="concat", skip_gain=False, upsample="transposed",
               multiscale_input=True, deep_supervision=True, norm="batch", activation="gelu", dropout=0.0)
OOM_SMALL = dict(depth=3, width_mode="growth", base_width=8, width_growth=1.5, blocks_per_stage=1, block="basic",
                 downsample="maxpool", dilation="1", aspp=False, attention="none", skip_fusion="add",
                 skip_gain=False, upsample="transposed", multiscale_input=False, deep_supervision=False,
                 norm="batch", activation="relu", dropout=0.0)
OOM_BATCH = 96  # = the synthetic training set: one step sees all of it


def _spec_from_params(params: dict[str, Any]):
    import optuna

    return project().get_space("resunet").sample_spec(optuna.trial.FixedTrial(params))


def _oom_sizing(ctx: Context, total: int) -> dict[str, Any]:
    """The smallest image side at which batch 96 of the big corner needs >= 4x the card by the project's
    estimate (float32; AMP saves about half) while the small corner needs <= 40 % of it."""
    P = project()
    models = {"big": build(_spec_from_params(OOM_BIG)), "small": build(_spec_from_params(OOM_SMALL))}

    def estimate(name: str, side: int) -> float:
        parts_of = P.training_step_memory(models[name], (OOM_BATCH, 1, side, side))
        return parts_of["activation_bytes"] + parts_of["state_bytes"]

    for side in (64, 128, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048):
        big, small = estimate("big", side), estimate("small", side)
        if big >= 4 * total and small <= 0.4 * total:
            return {"image_size": side, "batch_size": OOM_BATCH, "big_estimate_bytes": big,
                    "small_estimate_bytes": small, "card_bytes": total}
    raise RuntimeError("no image size up to 2048 px makes the big corner overflow the card while the small fits")


def _inprocess_oom(ctx: Context, sizing: dict[str, Any]) -> dict[str, Any]:
    """The failure handling of a trial, in this process: provoke the OOM, call the project's
    failure_reason / release_memory as the search does (inside its except block), read the allocator."""
    P = project()
    device, side, batch = ctx.device, sizing["image_size"], sizing["batch_size"]
    free_cuda()
    mem = lambda: {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device)}  # noqa: E731
    before = mem()
    report: dict[str, Any] = {"before": before}
    model = build(_spec_from_params(OOM_BIG)).to(device).train()
    x = torch.randn(batch, 1, side, side, device=device)
    y = (torch.rand(batch, 1, side, side, device=device) > 0.9).float()
    logits = None
    try:
        with torch.autocast("cuda", dtype=amp_dtype()):
            logits = model(x)
        P.dice_focal_loss(logits, y).backward()
        report["oom"] = False
    except RuntimeError as error:  # torch.cuda.OutOfMemoryError, or a library's own "out of memory"
        if "out of memory" not in str(error).lower():
            raise
        report["oom"] = True
        report["reason"] = P.failure_reason(error)[:300]
        report["at_failure_reserved"] = torch.cuda.memory_reserved(device)
        P.release_memory()  # where the search calls it: the traceback still holds the activations
        report["after_release_in_except"] = mem()
    del model, x, y, logits
    P.release_memory()  # once the failed trial's frames are gone (Optuna's gc_after_trial does this)
    report["after_release"] = mem()
    torch.cuda.reset_peak_memory_stats(device)
    small = build(_spec_from_params(OOM_SMALL)).to(device).train()
    step = make_step(small, device, amp_dtype(), amp_dtype() == torch.float16, torch.contiguous_format)
    loss = step(torch.randn(batch, 1, side, side, device=device),
                (torch.rand(batch, 1, side, side, device=device) > 0.9).float())
    report["next_step_loss"] = float(loss)
    report["next_step_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    del small, step
    free_cuda()
    return report


def _enqueue(storage: str, *param_sets: dict[str, Any]) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="resunet", storage=storage)
    for params in param_sets:
        study.enqueue_trial(params, skip_if_exists=False)


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def part_oom(ctx: Context) -> dict[str, Any]:
    ctx.need_cuda()
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    sizing = _oom_sizing(ctx, total)
    out: dict[str, Any] = {"sizing": sizing, "big_params": OOM_BIG, "small_params": OOM_SMALL}
    out["in_process"] = _inprocess_oom(ctx, sizing)
    run = ctx.work / "oom_search"
    shutil.rmtree(run, ignore_errors=True)
    flags = ["--out", run, "--trials", 1, "--epochs", 1, "--image-size", sizing["image_size"],
             "--batch-size", sizing["batch_size"], "--device", "cuda", "--sampler", "random",
             "--early-stop", "off", "--max-failures", 3, "--seed", 0]
    # 1. create the study (no trial starts after a 1 ns timeout), 2. queue the big corner, then the
    # small one, 3. resume: the queued trials run first, in order.
    run_command(ctx, cli_command("nas-search", *flags, "--timeout", "1e-9"), label="oom-create", cap_s=150)
    _enqueue(f"sqlite:///{run / 'study.db'}", OOM_BIG, OOM_SMALL)
    search = run_command(ctx, cli_command("nas-search", *flags), label="oom-search", cap_s=240, check=False)
    rows = _read_csv(run / "trials.csv")
    out["search_exit_code"] = search.returncode
    out["trials"] = [{k: r.get(k) for k in ("number", "state", "fail_reason", "failure_kind", "dice",
                                              "latency_device", "checkpoint")} for r in rows]
    failed = [r for r in rows if r["state"] == "FAIL"]
    finished = [r for r in rows if r["state"] == "COMPLETE"]
    oom_failed = [r for r in failed if "out of memory" in (r.get("fail_reason") or "")
                  or "memory" in (r.get("failure_kind") or "").lower()]
    if finished and finished[0].get("checkpoint"):
        metrics = json.loads((run / finished[0]["checkpoint"] / "metrics.json").read_text())
        out["next_trial_peak_bytes"] = metrics.get("train_peak_memory_bytes")
        out["next_trial_device"] = metrics.get("device_name") or metrics.get("train_device")
    inproc = out["in_process"]
    # back to where it was, give or take the library workspaces (cuBLAS) the first forward keeps
    released = inproc.get("oom") and inproc["after_release"]["reserved"] <= inproc["before"]["reserved"] + 256 * MIB
    out["memory_released_in_process"] = bool(released)
    out["recovered"] = bool(oom_failed and finished and int(finished[0]["number"]) > int(oom_failed[0]["number"])
                            and search.returncode == 0 and released)
    in_except = inproc.get("after_release_in_except", {}).get("reserved")
    out["summary"] = (
        f"batch {sizing['batch_size']} at {sizing['image_size']} px (estimate {sizing['big_estimate_bytes'] / GIB:.0f} GiB "
        f"vs {total / GIB:.0f} GiB card): "
        + (f"trial {oom_failed[0]['number']} failed ({oom_failed[0]['fail_reason'][:90]}), " if oom_failed
           else "no trial failed with an OOM, ")
        + (f"trial {finished[0]['number']} then trained (Dice {float(finished[0]['dice'] or 'nan'):.3f}, peak "
           f"{(out.get('next_trial_peak_bytes') or 0) / GIB:.1f} GiB); " if finished else "no trial trained after it; ")
        + (f"in this process: reserved {inproc.get('at_failure_reserved', 0) / GIB:.1f} GiB at the failure, "
           f"{(in_except or 0) / GIB:.1f} GiB after release_memory inside the except block, "
           f"{inproc['after_release']['reserved'] / GIB:.2f} GiB once the frames were gone"
           if inproc.get("oom") else "in this process: no OOM at that size"))
    if not out["recovered"]:
        raise PartFailed("OOM recovery not shown: " + out["summary"], out)
    return out


# ---------------------------------------------------------------------------------------------
# Parts 5 and 6: --workers 2 on one GPU, Ray with fractional GPUs

def _small_search_flags(ctx: Context, trials: int) -> list[Any]:
    flags: list[Any] = ["--trials", trials, "--epochs", 1 if ctx.smoke else 2,
                        "--image-size", 32 if ctx.smoke else 64, "--batch-size", 8, "--device", ctx.device.type,
                        "--sampler", "random", "--early-stop", "off", "--seed", 0]
    if ctx.smoke:  # cheap corners only, so CI stays fast
        flags += ["--fix", "depth=3", "--fix", "base_width=8", "--fix", "blocks_per_stage=1"]
    return flags


def _study_trials(storage: Any) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="resunet", storage=storage)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        worker = trial.user_attrs.get("worker") or {}
        rows.append({"number": trial.number, "state": trial.state.name, "pid": worker.get("pid"),
                     "start": trial.datetime_start.timestamp() if trial.datetime_start else None,
                     "end": trial.datetime_complete.timestamp() if trial.datetime_complete else None})
    return rows


def _max_overlap(rows: list[dict[str, Any]]) -> int:
    events = []
    for r in rows:
        if r["start"] is not None and r["end"] is not None:
            events += [(r["start"], 1), (r["end"], -1)]
    best = level = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        level += delta
        best = max(best, level)
    return best


def part_workers(ctx: Context) -> dict[str, Any]:
    run = ctx.work / "workers_search"
    shutil.rmtree(run, ignore_errors=True)
    trials = 2 if ctx.smoke else 4
    result = run_command(ctx, cli_command("nas-search", "--workers", 2, "--out", run,
                                          *_small_search_flags(ctx, trials)),
                         label="workers-search", cap_s=240)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    rows = _study_trials(JournalStorage(JournalFileBackend(str(run / "study.journal"))))
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    pids = sorted({r["pid"] for r in rows if r["pid"] is not None})
    csv_rows = _read_csv(run / "trials.csv")
    devices = sorted({r.get("latency_device") or "" for r in csv_rows if r["state"] == "COMPLETE"})
    logs = sorted(p.name for p in (run / "logs").glob("worker-*.log"))
    if len(complete) < trials:
        raise RuntimeError(f"{len(complete)}/{trials} trials finished")
    if len(pids) < 2:
        raise RuntimeError(f"only {len(pids)} worker process ran trials")
    if ctx.cuda and not all(d.startswith("cuda") for d in devices):
        raise RuntimeError(f"trials ran on {devices}, not on the GPU")
    overlap = _max_overlap(rows)
    return {
        "summary": f"{len(complete)} finished trials by {len(pids)} worker processes on {', '.join(devices)} in "
                   f"{result.seconds:.0f} s; at most {overlap} trials ran at the same time",
        "seconds": result.seconds, "trials": rows, "worker_pids": pids, "devices": devices,
        "max_concurrent_trials": overlap, "worker_logs": logs,
    }


def part_ray(ctx: Context) -> dict[str, Any]:
    if importlib.util.find_spec("ray") is None:
        raise Skip("ray is not installed (pip install .[ray])")
    ctx.need_cuda()
    run = ctx.work / "ray_search"
    shutil.rmtree(run, ignore_errors=True)
    result = run_command(ctx, cli_command("nas-search", "--backend", "ray", "--gpus-per-trial", 0.5,
                                          "--cpus-per-trial", 1, "--out", run, *_small_search_flags(ctx, 2)),
                         label="ray-search", cap_s=300)
    csv_rows = _read_csv(run / "trials.csv")
    complete = [r for r in csv_rows if r["state"] == "COMPLETE"]
    devices = sorted({r.get("latency_device") or "" for r in complete})
    if len(complete) < 2 or not all(d.startswith("cuda") for d in devices):
        raise RuntimeError(f"{len(complete)} finished trials on {devices}")
    return {"summary": f"{len(complete)} Ray trials with 0.5 GPU each on {', '.join(devices)} in {result.seconds:.0f} s",
            "seconds": result.seconds, "devices": devices, "finished": len(complete)}


# ---------------------------------------------------------------------------------------------
# Part 7: batch-1 latency of an exported model

def _ort_latency(path: Path, provider: str, x, warmup: int, repeats: int) -> tuple[float, Any, list[str]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=[provider, "CPUExecutionProvider"])
    used = session.get_providers()
    if used[0] != provider:
        raise RuntimeError(f"onnxruntime fell back to {used[0]}")
    name = session.get_inputs()[0].name
    output = None
    for _ in range(warmup):
        output = session.run(None, {name: x})[0]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        output = session.run(None, {name: x})[0]
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times), output, used


def part_export_latency(ctx: Context) -> dict[str, Any]:
    import nas

    P = project()
    spec = standard_spec(ctx)
    size = 32 if ctx.smoke else 256
    warmup, repeats = (2, 5) if ctx.smoke else (10, 50)
    folder = ctx.work / "export_checkpoint"
    torch.manual_seed(0)
    model = build(spec).eval()
    nas.save_checkpoint(folder, model, spec, space="resunet", in_channels=1, out_channels=1,
                        normalization=P.Normalization(mean=(0.5,), std=(0.25,)),
                        metrics={"input_shape": [1, 1, size, size], "note": "untrained, for latency only"})
    export = run_command(ctx, cli_command("nas-export", "--checkpoint", folder, "--format", "onnx",
                                          "--image-size", size), label="nas-export", cap_s=240)
    onnx_path = folder / "model.onnx"
    shape = (1, 1, size, size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model(x).numpy()
    rows: list[dict[str, Any]] = []
    device = ctx.device
    rows.append({"runtime": f"PyTorch eager fp32 ({device.type})",
                 "ms": P.measure_latency(model, shape, device, warmup=warmup, repeats=repeats)})
    if ctx.cuda:
        half = build(spec).eval()
        half.load_state_dict(model.state_dict())
        half = half.to(device).half()
        rows.append({"runtime": "PyTorch eager fp16 (cuda)",
                     "ms": P.measure_latency(half, shape, device, warmup=warmup, repeats=repeats)})
        del half
    else:
        rows.append({"runtime": "PyTorch eager fp16 (cuda)", "status": "skipped: no CUDA"})
    try:
        import onnxruntime as ort

        available = ort.get_available_providers()
    except ImportError as error:
        available, rows = [], rows + [{"runtime": "ONNX Runtime", "status": f"failed: {one_line(error)}"}]
    providers = [("CUDAExecutionProvider", "ONNX Runtime CUDA EP"),
                 ("TensorrtExecutionProvider", "ONNX Runtime TensorRT EP"),
                 ("CPUExecutionProvider", "ONNX Runtime CPU EP")]
    for provider, label in providers:
        row: dict[str, Any] = {"runtime": label}
        rows.append(row)
        if provider not in available:
            build_note = ("this onnxruntime is a CPU build: the GPU providers come with onnxruntime-gpu"
                          if "CUDAExecutionProvider" not in available else "not in this onnxruntime build")
            row["status"] = f"skipped: {build_note}"
            continue
        if provider != "CPUExecutionProvider" and not ctx.cuda:
            row["status"] = "skipped: no CUDA"
            continue
        if provider == "TensorrtExecutionProvider" and ctx.remaining() < 150:
            row["status"] = "skipped: budget (a TensorRT engine build takes minutes)"
            continue
        cpu_only_slow = provider == "CPUExecutionProvider" and ctx.cuda
        try:
            ms, output, used = _ort_latency(onnx_path, provider, x.numpy(), 1 if cpu_only_slow else warmup,
                                            3 if cpu_only_slow else repeats)
            row.update({"status": "ok", "ms": ms, "providers": used,
                        "max_abs_diff_vs_torch": float(abs(output - reference).max())})
        except Exception as error:
            row["status"] = f"failed: {one_line(error)}"
    for row in rows:
        if "ms" in row:
            row.setdefault("status", "ok")
    fp32 = rows[0]["ms"]
    for row in rows:
        if row.get("ms"):
            row["speedup_vs_torch_fp32"] = fp32 / row["ms"]
    summary = ", ".join(f"{r['runtime']} {r['ms']:.2f} ms" if r.get("ms") else f"{r['runtime']} {r['status']}"
                        for r in rows)
    return {"summary": f"batch 1, {size} px: {summary}", "image_size": size, "export": export.stdout.strip()[-400:],
            "rows": rows, "timing": f"median of {repeats} after {warmup} warm-up runs (ONNX Runtime: numpy in and "
                                   "out, so host-device copies are included)"}


# ---------------------------------------------------------------------------------------------
# Part 8: a tiny search on the GPU, reloaded on a CPU-only process

RELOAD_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
import torch
import nas
run = Path(sys.argv[1])
rows = []
for folder in sorted((run / "best").iterdir()):
    if not (folder / "spec.json").exists():
        continue
    model, spec = nas.load_checkpoint(folder, "cpu")
    info = nas.read_checkpoint_info(folder)
    size = int(info.metrics.get("input_shape", [1, 1, 64, 64])[-1])
    x = info.normalization.apply(torch.rand(1, info.in_channels, size, size, generator=torch.Generator().manual_seed(0)))
    with torch.inference_mode():
        logits = model(x)
    row = {"checkpoint": folder.name, "finite": bool(torch.isfinite(logits).all()),
           "trained_on": info.metrics.get("device_name") or info.metrics.get("train_device"),
           "dice": info.metrics.get("dice")}
    if (folder / "model.onnx").exists():
        import onnxruntime as ort
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        onnx = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        row["max_abs_diff_onnx"] = float(np.abs(onnx - logits.numpy()).max())
    rows.append(row)
print(json.dumps({"cuda_visible": torch.cuda.is_available(), "checkpoints": rows}))
"""


def part_e2e_search(ctx: Context) -> dict[str, Any]:
    run = ctx.work / "e2e_search"
    shutil.rmtree(run, ignore_errors=True)
    wanted = 1 if ctx.smoke else 2
    search = run_command(ctx, cli_command("nas-search", "--out", run, *_small_search_flags(ctx, wanted)),
                         label="e2e-search", cap_s=240)
    rows = _read_csv(run / "trials.csv")
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    devices = sorted({r.get("latency_device") or "" for r in complete})
    if len(complete) < wanted:
        raise RuntimeError(f"{len(complete)}/{wanted} trials finished")
    if ctx.cuda and not all(d.startswith("cuda") for d in devices):
        raise RuntimeError(f"trials ran on {devices}, not on the GPU")
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}
    report_html = run / "report.html"
    written = report_html.stat().st_mtime_ns if report_html.exists() else 0
    reload = run_command(ctx, [sys.executable, "-c", RELOAD_SCRIPT, str(run)], label="e2e-reload-cpu",
                         cap_s=120, env=no_gpu)
    loaded = json.loads(reload.stdout.strip().splitlines()[-1])
    if ctx.smoke:  # nas-report's figures cost CI ~10 s; its own tests cover it. Check what the search wrote.
        rebuilt, report_note = None, f"report.html written by the search ({report_html.stat().st_size / MIB:.1f} MiB)"
    else:
        report = run_command(ctx, cli_command("nas-report", "--run", run, "--no-overlays"), label="e2e-report-cpu",
                             cap_s=120, env=no_gpu)
        rebuilt = report_html.exists() and report_html.stat().st_mtime_ns > written
        report_note = f"nas-report rebuilt report.html there in {report.seconds:.0f} s"
    checkpoints = loaded["checkpoints"]
    problems = [c["checkpoint"] for c in checkpoints
                if not c["finite"] or (c.get("max_abs_diff_onnx") is not None and c["max_abs_diff_onnx"] > 1e-3)]
    if loaded["cuda_visible"] or not checkpoints or problems or rebuilt is False or not report_html.exists():
        raise RuntimeError(f"reload on the CPU: cuda visible {loaded['cuda_visible']}, {len(checkpoints)} "
                           f"checkpoints, bad {problems}, report rebuilt {rebuilt}")
    worst = max((c.get("max_abs_diff_onnx") or 0.0) for c in checkpoints)
    return {
        "summary": f"{len(complete)} trial(s) on {', '.join(devices)} in {search.seconds:.0f} s; "
                   f"{len(checkpoints)} best/ checkpoint(s) reloaded in a process without CUDA (outputs finite, "
                   f"max abs diff torch vs onnx {worst:.1e}); {report_note}",
        "devices": devices, "search_seconds": search.seconds, "checkpoints": checkpoints,
        "report_rebuilt_on_cpu": rebuilt,
    }


# ---------------------------------------------------------------------------------------------
# Goals and outputs

GOAL_TEXT = (
    ("trainer / plain loop", ">= 0.95 on the GPU"),
    ("bf16 MFU of resunet-standard training at 256 px", ">= 35 % of the card's dense bf16 peak"),
    ("gradient checkpointing", "peak memory -40 % or more at < 30 % extra step time (2048 x 2048, batch 1)"),
    ("OOM recovery", "the trial fails with its reason, memory is released, the next trial trains"),
)


def evaluate_goals(ctx: Context) -> list[dict[str, Any]]:
    results = ctx.results
    goals = []

    def add(index: int, verdict: str, value: str) -> None:
        goals.append({"goal": GOAL_TEXT[index][0], "threshold": GOAL_TEXT[index][1], "measured": value,
                      "verdict": verdict})

    gpu_full = ctx.cuda and not ctx.smoke
    why = "not measured (no GPU)" if not ctx.cuda else "not measured (--smoke sizes)"
    tp = results.get("throughput", {})
    rows = [r for r in tp.get("variants", []) if r.get("status") == "ok"]
    ratios = [r["ratio"] for r in rows]
    if rows and gpu_full:
        worst = min(rows, key=lambda r: r["ratio"])
        add(0, "met" if worst["ratio"] >= 0.95 else "not met",
            f"lowest {worst['ratio']:.2f} ({worst['variant']}); all: "
            + ", ".join(f"{r['variant']} {r['ratio']:.2f}" for r in rows))
    else:
        add(0, why if rows else "not measured (throughput did not run)",
            ", ".join(f"{r['variant']} {r['ratio']:.2f}" for r in rows) if ratios else "-")
    bf16 = next((r for r in rows if r["variant"] == "bf16 AMP"), None)
    if bf16 and bf16.get("mfu_trainer") is not None and gpu_full:
        add(1, "met" if bf16["mfu_trainer"] >= 0.35 else "not met",
            f"{100 * bf16['mfu_trainer']:.1f} % (trainer; plain loop {100 * bf16['mfu_plain']:.1f} %) of "
            f"{bf16['peak_tflops']} TFLOP/s ({tp.get('peak_table_entry')})")
    elif bf16 and gpu_full:
        add(1, "not measured (unknown card: no peak)", f"{bf16['trainer_images_per_s']:.1f} img/s")
    else:
        add(1, why if ctx.cuda or bf16 else "not measured (no GPU)", "-")
    memory = results.get("memory", {})
    cut, overhead = memory.get("checkpointing_memory_cut"), memory.get("checkpointing_time_overhead")
    if cut is not None and overhead is not None and gpu_full:
        add(2, "met" if cut >= 0.40 and overhead < 0.30 else "not met",
            f"{100 * cut:.0f} % less peak memory at {100 * overhead:+.0f} % step time")
    else:
        value = "-" if overhead is None else f"step time {100 * overhead:+.0f} % (peak memory needs CUDA)"
        add(2, why, value)
    oom = results.get("oom", {})
    if oom.get("status") == "ok":
        add(3, "met", oom.get("summary", ""))
    elif oom.get("status") == "failed" and ctx.cuda:
        add(3, "not met", oom.get("error", ""))
    else:
        add(3, "not measured (no GPU)" if not ctx.cuda else f"not measured ({oom.get('reason', 'did not run')})", "-")
    return goals


def _fmt(value: Any, pattern: str = "{:.1f}", scale: float = 1.0, empty: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return empty
    return pattern.format(value * scale)


def _bytes(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value / GIB:.2f} GiB" if value >= GIB else f"{value / MIB:.1f} MiB"


def status_text(part: dict[str, Any]) -> str:
    if part.get("status") == "ok":
        return "ok"
    if part.get("status") == "skipped":
        return f"skipped: {part.get('reason', '')}"
    if part.get("status") == "failed":
        return f"failed: {part.get('error', '')}"
    return part.get("status", "not run")


def render_markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# GPU check", "",
        f"`{doc['command']}`", "",
        f"Started {doc['started']}, {doc['elapsed_s']:.0f} s of a {doc['budget_s']:.0f} s budget; device "
        f"`{doc['device']}`{' (smoke sizes)' if doc['smoke'] else ''}; "
        f"{doc['device_name']}; torch {doc['torch']}"
        + (f" (CUDA {doc['torch_cuda_build']})" if doc["torch_cuda_build"] else "") + ".", "",
        "| part | status | s | result |", "|---|---|---:|---|",
    ]
    for name in PARTS:
        part = doc["parts"].get(name, {"status": "not run"})
        text = part.get("summary") or ""
        lines.append(f"| {name} | {status_text(part).replace('|', '/')} | {_fmt(part.get('seconds'), '{:.0f}')} | "
                     f"{text.replace('|', '/')} |")
    lines += ["", "## Goals", "", "| goal | threshold | verdict | measured |", "|---|---|---|---|"]
    for goal in doc["goals"]:
        lines.append(f"| {goal['goal']} | {goal['threshold']} | **{goal['verdict']}** | "
                     f"{str(goal['measured']).replace('|', '/')} |")
    tp = doc["parts"].get("throughput", {})
    if tp.get("variants"):
        lines += ["", f"## Training throughput: {tp.get('model')}, {tp.get('image_size')} px, batch "
                      f"{tp.get('batch_size')}, 1 gray channel, {tp.get('timed_images')} timed images", "",
                  f"Forward: {_fmt(tp.get('forward_macs'), '{:.2f}', 1e-9)} GMAC; MFU = {tp.get('mfu_definition')}; "
                  f"peaks: {tp.get('peak_table_entry')}.", "",
                  "| variant | trainer img/s | plain img/s | trainer / plain | MFU trainer | MFU plain | peak (dtype) | status |",
                  "|---|---:|---:|---:|---:|---:|---|---|"]
        for r in tp["variants"]:
            lines.append(
                f"| {r['variant']} | {_fmt(r.get('trainer_images_per_s'))} | {_fmt(r.get('plain_images_per_s'))} | "
                f"{_fmt(r.get('ratio'), '{:.2f}')} | {_fmt(r.get('mfu_trainer'), '{:.1f} %', 100)} | "
                f"{_fmt(r.get('mfu_plain'), '{:.1f} %', 100)} | {_fmt(r.get('peak_tflops'), '{:.0f} TFLOP/s')} "
                f"({r.get('peak_dtype')}) | {r.get('error') or r.get('status')} |")
    memory = doc["parts"].get("memory", {})
    if memory.get("rows"):
        lines += ["", "## Peak memory of one training step, batch 1, resunet-standard"
                      + (" (1/8 width, smoke)" if doc["smoke"] else ""), "",
                  f"Estimate: {memory.get('estimate_note')}. "
                  f"Gradients with vs without checkpointing differ by at most "
                  f"{_fmt(memory.get('grad_checkpointing_max_grad_diff'), '{:.1e}')}.", "",
                  "| input | recipe | checkpointing | peak allocated | step | estimate | measured / estimate | status |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for r in memory["rows"]:
            lines.append(
                f"| {r['width']}x{r['height']} | {r['recipe']} | {'on' if r['checkpointing'] else 'off'} | "
                f"{_bytes(r.get('peak_bytes'))} | {_fmt(r.get('step_seconds'), '{:.0f} ms', 1000)} | "
                f"{_bytes(r.get('estimate_bytes'))} | {_fmt(r.get('measured_over_estimate'), '{:.2f}')} | "
                f"{r.get('error') or r.get('status')} |")
    latency = doc["parts"].get("export_latency", {})
    if latency.get("rows"):
        lines += ["", f"## Batch-1 latency, {latency.get('image_size')} px ({latency.get('timing')})", "",
                  "| runtime | ms | speed-up vs PyTorch fp32 | max abs diff vs PyTorch | status |",
                  "|---|---:|---:|---:|---|"]
        for r in latency["rows"]:
            lines.append(f"| {r['runtime']} | {_fmt(r.get('ms'), '{:.3f}')} | {_fmt(r.get('speedup_vs_torch_fp32'), '{:.2f}')} | "
                         f"{_fmt(r.get('max_abs_diff_vs_torch'), '{:.1e}')} | {r.get('status', 'ok')} |")
    return "\n".join(lines) + "\n"


def write_outputs(ctx: Context, final: bool = False) -> dict[str, Any]:
    with ctx.lock:
        doc = {
            "script": "benchmarks/gpu_check.py", "format_version": 1,
            "command": " ".join(["python", "benchmarks/gpu_check.py", *ctx.args.argv]),
            "started": ctx.args.started, "written": now_iso(), "complete": final,
            "elapsed_s": time.monotonic() - START, "budget_s": ctx.args.budget_s, "device": str(ctx.device),
            "device_name": torch.cuda.get_device_name(ctx.device) if ctx.cuda else cpu_name(),
            "torch": torch.__version__, "torch_cuda_build": torch.version.cuda, "smoke": ctx.smoke, "parts": {name: ctx.results.get(name, {"status": "not run"}) for name in PARTS},
            "goals": evaluate_goals(ctx),
        }
        doc = json_safe(doc)
        atomic_write(ctx.out / "gpu_check.json", json.dumps(doc, indent=1) + "\n")
        atomic_write(ctx.out / "gpu_check.md", render_markdown(doc))
        return doc


PART_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "environment": part_environment, "throughput": part_throughput, "memory": part_memory, "oom": part_oom,
    "workers": part_workers, "ray": part_ray, "export_latency": part_export_latency, "e2e_search": part_e2e_search,
}
# Seconds each part is expected to take (full sizes on one modern GPU / --smoke on 2 CPU cores): a part
# starts only when what the budget has left covers its estimate.
ESTIMATES = {"environment": (5, 1), "throughput": (120, 8), "memory": (60, 5), "oom": (80, 30),
             "workers": (45, 16), "ray": (90, 30), "export_latency": (35, 8), "e2e_search": (45, 14)}
# Parts that compute in-process (CUDA kernels, allocator, ONNX Runtime) run in a child process of their
# own: a segfault, a sticky CUDA error or a hang there ends that part only. CAPS: its longest run (s).
ISOLATED = {"throughput", "memory", "oom", "export_latency"}
CAPS = {"throughput": (300, 90), "memory": (200, 60), "oom": (300, 90), "export_latency": (200, 60)}
GPU_ONLY = {"oom"}  # "ray" says first whether Ray is installed, then whether there is CUDA


def forced_failure(ctx: Context, name: str) -> None:
    """The hidden --fail-part NAME[:crash|:hang] (tests): at the part's start raise, crash its process
    (SIGSEGV) or hang; the part runs even where it would be skipped (a GPU-only part on the CPU)."""
    wanted, _, how = (ctx.args.fail_part or "").partition(":")
    if wanted != name:
        return
    if how == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    while how == "hang":
        time.sleep(1.0)
    raise RuntimeError(f"forced failure of part {name} (--fail-part / {FAIL_ENV})")


def run_inline(ctx: Context, name: str) -> dict[str, Any]:
    try:
        forced_failure(ctx, name)
        return {"status": "ok", **PART_FUNCTIONS[name](ctx)}
    except Skip as skip:
        return {"status": "skipped", "reason": str(skip)}
    except PartFailed as failed:
        return {**failed.data, "status": "failed", "error": one_line(failed)[:500]}
    except Exception as error:  # isolation: report the one line, keep the traceback's end, go on
        frames = traceback.extract_tb(error.__traceback__)[-3:]
        return {"status": "failed", "error": one_line(error)[:500],
                "where": [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames]}
    finally:
        free_cuda()


def run_isolated(ctx: Context, name: str) -> dict[str, Any]:
    """The part in a child process (this script with --part-child NAME), stopped at its cap or the budget."""
    cap = min(CAPS[name][1 if ctx.smoke else 0], ctx.remaining() - 2.0)
    result_file = ctx.work / f"part-{name}.json"
    result_file.unlink(missing_ok=True)
    log = ctx.work / "logs" / f"part-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), *ctx.args.argv, "--work", str(ctx.work),
               "--part-child", name, "--part-seconds", f"{cap:.1f}"]
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        ctx.children.append(process)
        try:
            process.wait(timeout=max(1.0, cap))
            stopped = False
        except subprocess.TimeoutExpired:
            stopped = True
            try:
                os.killpg(process.pid, signal.SIGTERM)  # the child stops its own subprocesses first
                process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            kill_group(process)
        finally:
            ctx.children.remove(process)
    last = tail(log, 2)
    if stopped:
        end = "the budget's end" if cap < CAPS[name][1 if ctx.smoke else 0] else f"its {cap:.0f} s cap"
        return {"status": "failed", "error": f"stopped at {end} (did not finish within {cap:.0f} s); log: {last}"}
    if result_file.exists():
        return json.loads(result_file.read_text(encoding="utf-8"))
    code = process.returncode
    how = f"crashed ({signal.Signals(-code).name})" if code < 0 else f"exited with code {code} without a result"
    return {"status": "failed", "error": f"its process {how}; log: {last}"}


def cpu_seconds() -> float:
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_part(ctx: Context, name: str) -> None:
    estimate = ESTIMATES[name][1 if ctx.smoke else 0]
    if ctx.args.parts and name not in ctx.args.parts:
        ctx.results[name] = {"status": "skipped", "reason": "not selected (--parts)"}
        return
    forced = (ctx.args.fail_part or "").partition(":")[0] == name
    if name in GPU_ONLY and not ctx.cuda and not forced:
        ctx.results[name] = {"status": "skipped", "reason": "no CUDA"}
        return
    if ctx.remaining() < estimate:
        ctx.results[name] = {"status": "skipped", "reason": f"budget (needs ~{estimate} s, "
                                                            f"{max(0.0, ctx.remaining()):.0f} s left)"}
        return
    ctx.current = name
    ctx.results[name] = {"status": "running", "started_at_s": time.monotonic() - START}
    write_outputs(ctx)
    started, cpu = time.monotonic(), cpu_seconds()
    result = run_isolated(ctx, name) if name in ISOLATED else run_inline(ctx, name)
    result["seconds"] = time.monotonic() - started
    result["cpu_seconds"] = cpu_seconds() - cpu  # this process and its finished subprocesses
    ctx.results[name] = result
    ctx.current = None
    print(f"[{time.monotonic() - START:6.0f} s] {name}: {status_text(result)}"
          + (f" ({result['seconds']:.1f} s) {result.get('summary', '')}" if result["status"] == "ok" else ""),
          flush=True)
    write_outputs(ctx)


def start_watchdog(ctx: Context, grace: float = 15.0) -> threading.Timer:
    """Last resort, ``grace`` s after the budget (every subprocess already has the budget as its limit):
    kill what runs, write the outputs with the running part failed and the rest skipped, exit 1."""
    def fire() -> None:
        if ctx.finished:
            return
        for process in list(ctx.children):
            kill_group(process)
        for name in PARTS:
            if name == ctx.current:
                ctx.results[name] = {"status": "failed", "error": f"stopped at the budget's end "
                                                                  f"({ctx.args.budget_s:.0f} s)"}
            elif ctx.results.get(name, {}).get("status") in (None, "running"):
                ctx.results[name] = {"status": "skipped", "reason": "budget"}
        try:
            write_outputs(ctx, final=True)
        finally:
            print(f"gpu_check: budget of {ctx.args.budget_s:.0f} s reached; results in {ctx.out}", flush=True)
            os._exit(1)

    timer = threading.Timer(max(0.0, ctx.deadline + grace - time.monotonic()), fire)
    timer.daemon = True
    timer.start()
    return timer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--budget-s", type=float, default=420.0, help="hard overall time limit (default 420)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: CUDA when present, else the CPU")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (1/8 widths, 24-64 px), for CI")
    parser.add_argument("--parts", default=None, help=f"comma-separated subset of: {', '.join(PARTS)}")
    parser.add_argument("--work", default=None,
                        help="keep the runs, checkpoints and logs in this folder (default: a temporary one, removed)")
    parser.add_argument("--fail-part", default=os.environ.get(FAIL_ENV), help=argparse.SUPPRESS)
    parser.add_argument("--part-child", default=None, help=argparse.SUPPRESS)  # run one part, write its JSON
    parser.add_argument("--part-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.started = now_iso()
    if not args.budget_s > 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s}")
    if args.parts:
        args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        unknown = sorted(set(args.parts) - set(PARTS))
        if unknown:
            parser.error(f"--parts: unknown {', '.join(unknown)}; known: {', '.join(PARTS)}")
    if args.fail_part:
        part, _, how = args.fail_part.partition(":")
        if part not in PARTS or how not in ("", "crash", "hang") or (how and part not in ISOLATED):
            parser.error(f"--fail-part: expected PART, or PART:crash / PART:hang for one of "
                         f"{', '.join(sorted(ISOLATED))}; got {args.fail_part!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was requested but no CUDA device is available"
                     + ("" if torch.version.cuda else f" (torch {torch.__version__} is a CPU build)"))
    return args


def child_main(args: argparse.Namespace, device: torch.device) -> int:
    """One isolated part: run it, write ``<work>/part-NAME.json``; SIGTERM stops its subprocesses too."""
    work = Path(args.work)
    ctx = Context(args=args, device=device, out=Path(args.out).resolve(), work=work,
                  deadline=START + (args.part_seconds or args.budget_s))

    def stop(signum: int, frame: Any) -> None:
        for process in list(ctx.children):
            kill_group(process)
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)
    result = run_inline(ctx, args.part_child)
    atomic_write(work / f"part-{args.part_child}.json", json.dumps(json_safe(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cpu" and args.smoke:
        # One thread here and in every subprocess: toy sizes gain nothing from more, and OpenMP
        # threads spinning on a shared, loaded CPU make each step up to 100x slower.
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.part_child:
        return child_main(args, device)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args=args, device=device, out=out, work=work, deadline=START + args.budget_s)
    watchdog = start_watchdog(ctx)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # -> the cleanup below
    print(f"gpu_check: device {device}{' (smoke)' if args.smoke else ''}, budget {args.budget_s:.0f} s, "
          f"out {out}", flush=True)
    try:
        for name in PARTS:
            run_part(ctx, name)
        doc = write_outputs(ctx, final=True)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM: our process groups go too
        for process in list(ctx.children):
            kill_group(process)
        if ctx.current:
            ctx.results[ctx.current] = {"status": "failed", "error": "interrupted"}
        write_outputs(ctx, final=True)
        raise
    finally:
        ctx.finished = True
        watchdog.cancel()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    for goal in doc["goals"]:
        print(f"goal: {goal['goal']} ({goal['threshold']}): {goal['verdict']} - {goal['measured']}", flush=True)
    print(f"gpu_check: {time.monotonic() - START:.0f} s; {out / 'gpu_check.md'}", flush=True)
    return 1 if any(p.get("status") == "failed" for p in doc["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
