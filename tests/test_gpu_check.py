"""benchmarks/gpu_check.py on the CPU at toy sizes, as CI runs it: every part reports (ok with
numbers, or skipped with a reason), a crashing part does not stop the others, the budget holds."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PARTS = ["environment", "throughput", "memory", "oom", "workers", "ray", "export_latency", "e2e_search"]


def run_check(out: Path, *args: object, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float, dict]:
    started = time.monotonic()
    process = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(out),
                              *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    report = out / "gpu_check.json"
    assert report.exists(), process.stdout + process.stderr
    return process, seconds, json.loads(report.read_text())


@pytest.mark.slow
def test_cpu_smoke_runs_every_part_and_survives_a_crashing_part(tmp_path):
    # oom is GPU-only; forcing it makes its process die of SIGSEGV in the middle of the run
    process, seconds, doc = run_check(tmp_path, "--budget-s", 400, "--fail-part", "oom:crash")
    parts = doc["parts"]
    assert list(parts) == PARTS
    assert process.returncode == 1, process.stdout[-2000:] + process.stderr[-2000:]  # one part failed
    assert doc["complete"] and doc["device"] == "cpu" and doc["smoke"]
    assert seconds < 400

    for name, part in parts.items():
        assert part["status"] in ("ok", "skipped", "failed"), (name, part)
        if part["status"] == "skipped":
            assert part["reason"], name
        if name not in ("oom", "ray"):
            assert part["status"] == "ok", (name, part)
            assert part["seconds"] > 0
    assert parts["oom"]["status"] == "failed" and "crashed (SIGSEGV)" in parts["oom"]["error"]
    assert parts["ray"]["status"] == "skipped"
    assert parts["ray"]["reason"] in ("no CUDA", "ray is not installed (pip install .[ray])")

    env = parts["environment"]
    assert env["cuda_available"] is False and env["torch"] and "no CUDA" in env["summary"]

    variants = {v["variant"]: v for v in parts["throughput"]["variants"]}
    assert variants["fp16 AMP + GradScaler"]["status"] == "skipped: no CUDA"
    for name in ("fp32", "bf16 AMP", "channels_last", "channels_last + bf16 AMP"):
        row = variants[name]
        assert row["status"] == "ok", row
        assert row["trainer_images_per_s"] > 0 and row["plain_images_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["trainer_images_per_s"] / row["plain_images_per_s"])
        assert row["mfu_trainer"] is None  # no peak for a CPU: not invented
    assert parts["throughput"]["forward_macs"] > 0

    memory = parts["memory"]
    assert len(memory["rows"]) == 4  # 2 sizes x checkpointing off/on (the CPU recipe is fp32 already)
    for row in memory["rows"]:
        assert row["status"] == "ok" and row["step_seconds"] > 0 and row["estimate_bytes"] > 0
        assert row["peak_bytes"] is None  # the CUDA allocator's peak; none on a CPU
    assert memory["grad_checkpointing_max_grad_diff"] < 1e-5  # checkpointing recomputes, it does not change grads
    assert memory["checkpointing_time_overhead"] is not None

    workers = parts["workers"]
    assert len(workers["worker_pids"]) == 2 and workers["max_concurrent_trials"] >= 1
    assert sum(t["state"] == "COMPLETE" for t in workers["trials"]) >= 2

    rows = {r["runtime"]: r for r in parts["export_latency"]["rows"]}
    assert rows["PyTorch eager fp32 (cpu)"]["ms"] > 0
    assert rows["PyTorch eager fp16 (cuda)"]["status"] == "skipped: no CUDA"
    assert rows["ONNX Runtime CPU EP"]["status"] == "ok" and rows["ONNX Runtime CPU EP"]["ms"] > 0
    assert rows["ONNX Runtime CPU EP"]["max_abs_diff_vs_torch"] < 1e-3
    assert rows["ONNX Runtime CUDA EP"]["status"].startswith("skipped")

    e2e = parts["e2e_search"]
    assert e2e["checkpoints"] and all(c["finite"] for c in e2e["checkpoints"])
    assert all(c["max_abs_diff_onnx"] < 1e-3 for c in e2e["checkpoints"] if c.get("max_abs_diff_onnx") is not None)

    assert [g["verdict"] for g in doc["goals"]] == ["not measured (no GPU)"] * 4
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| throughput | ok |" in markdown and "| oom | failed: its process crashed (SIGSEGV)" in markdown
    assert "## Goals" in markdown and "## Training throughput" in markdown and "## Batch-1 latency" in markdown


@pytest.mark.slow
def test_budget_stops_a_hanging_part_and_skips_the_rest(tmp_path):
    budget = 15
    process, seconds, doc = run_check(tmp_path, "--budget-s", budget, "--parts", "memory,export_latency",
                                      "--fail-part", "memory:hang", timeout=120)
    parts = doc["parts"]
    # The budget is the script's own clock; the wall time adds the interpreter's start and the report's
    # writing, seconds each on a loaded machine. A budget that did not hold would run the hanging part
    # until the 120 s timeout: the bound tells the two apart without depending on the machine's load.
    assert seconds < budget + 45, seconds
    assert doc["elapsed_s"] <= budget
    memory, export = parts["memory"], parts["export_latency"]
    # started and stopped at the budget's end, or (on a very slow machine) not started at all
    assert (memory["status"] == "failed" and "budget" in memory["error"]) or \
        (memory["status"] == "skipped" and memory["reason"].startswith("budget")), memory
    assert export["status"] == "skipped" and export["reason"].startswith("budget"), export
    for name in set(PARTS) - {"memory", "export_latency"}:
        assert parts[name] == {"status": "skipped", "reason": "not selected (--parts)"}
    assert process.returncode == (1 if memory["status"] == "failed" else 0)
