"""Part 4, oom: a real CUDA out-of-memory inside a search, then memory released and the next trial trained."""
from __future__ import annotations

import json
import shutil
from typing import Any

import torch

from .base import GIB, MIB, Context, PartFailed, project
from .commands import cli_command, read_csv, run_command
from .measure import amp_dtype, build, free_cuda, make_step

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
    rows = read_csv(run / "trials.csv")
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


