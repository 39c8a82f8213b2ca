"""Part 7, export_latency: nas-export to ONNX, then batch-1 latency of PyTorch and ONNX Runtime."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .base import Context, one_line, project
from .commands import cli_command, run_command
from .measure import build, standard_spec

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


