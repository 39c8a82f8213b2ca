"""Part 3, memory: peak memory of a training step with and without gradient checkpointing, against the estimate."""
from __future__ import annotations

import time
from typing import Any

import torch

from .base import GIB, Context, project
from .measure import amp_dtype, build, free_cuda, make_step, standard_spec, sync

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


