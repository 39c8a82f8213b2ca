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

import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # the parts' package sits next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_parts.base import START  # noqa: E402  (first: the budget's clock starts before torch)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from gpu_check_parts.base import FAIL_ENV, PARTS, Context, atomic_write, json_safe, now_iso  # noqa: E402
from gpu_check_parts.commands import kill_group  # noqa: E402
from gpu_check_parts.report import write_outputs  # noqa: E402
from gpu_check_parts.runner import ISOLATED, run_inline, run_part, start_watchdog  # noqa: E402


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
