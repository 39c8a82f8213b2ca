"""Running the parts: budget, isolation of a part in a child process, forced failures (tests), the watchdog."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .base import FAIL_ENV, PARTS, ROOT, START, Context, PartFailed, Skip, one_line
from .commands import kill_group, tail
from .e2e_search import part_e2e_search
from .environment import part_environment
from .export_latency import part_export_latency
from .measure import free_cuda
from .memory import part_memory
from .oom import part_oom
from .report import status_text, write_outputs
from .searches import part_ray, part_workers
from .throughput import part_throughput

SCRIPT = Path(__file__).resolve().parents[1] / "gpu_check.py"  # rerun with --part-child NAME

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
    command = [sys.executable, str(SCRIPT), *ctx.args.argv, "--work", str(ctx.work),
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


