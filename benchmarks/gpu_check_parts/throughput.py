"""Part 2, throughput: the project's trainer against a plain PyTorch loop, images/s and MFU."""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any
from unittest import mock

import torch

from .base import Context, card_peaks, one_line, project
from .measure import build, free_cuda, make_step, profile_spec, standard_spec, sync

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


