"""The check's outputs: the issue's goals as verdicts, the Markdown tables, both files written atomically."""
from __future__ import annotations

import json
import math
import time
from typing import Any

import torch

from .base import GIB, MIB, PARTS, START, Context, atomic_write, json_safe, now_iso
from .environment import cpu_name

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


