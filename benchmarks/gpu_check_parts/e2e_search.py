"""Part 8, e2e_search: a tiny search on the GPU whose checkpoints are reloaded where no GPU is seen."""
from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from .base import MIB, Context
from .commands import cli_command, read_csv, run_command
from .searches import small_search_flags

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
    search = run_command(ctx, cli_command("nas-search", "--out", run, *small_search_flags(ctx, wanted)),
                         label="e2e-search", cap_s=240)
    rows = read_csv(run / "trials.csv")
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


