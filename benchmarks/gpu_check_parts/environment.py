"""Part 1, environment: versions, the card, its memory and the dense peak the MFU uses."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
from typing import Any

import torch

from .base import GIB, Context, card_peaks, one_line

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


