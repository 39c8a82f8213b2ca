"""What several parts measure with: the model under test, its profile, one training step as the trainer does it."""
from __future__ import annotations

import dataclasses
import gc
import json
from contextlib import nullcontext
from typing import Any

import torch

from .base import Context, atomic_write, project
from .commands import cli_command, run_command


def free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def standard_spec(ctx: Context):
    """``resunet-standard``'s spec; with --smoke the same design at 1/8 of the width (8-16-32 + 64).

    Not 1/16: on torch 2.13.0+cpu a channels_last backward through the 4 -> 8 stride-2 1x1 shortcut
    conv corrupts the heap (``Conv2d(4, 8, 1, stride=2)``, 32 px, batch 4: SIGSEGV / "double free").
    """
    spec = project().get_preset("resunet-standard").spec
    if ctx.smoke:
        spec = dataclasses.replace(spec, encoder_widths=(8, 16, 32, 64), decoder_widths=(8, 16, 32))
    return spec


def build(spec, in_channels: int = 1) -> torch.nn.Module:
    return project().get_space("resunet").build_model(spec, in_channels, 1)


def profile_spec(ctx: Context, spec, size: int) -> dict[str, Any]:
    """``nas-profile --spec ... --json`` (1 gray channel, batch 1, on the CPU): MACs, FLOPs, params and
    the project's training-step memory estimate. Kept under work/, so the parts' processes share it."""
    import hashlib

    key = hashlib.sha256(f"{json.dumps(spec.to_dict(), sort_keys=True)}:{size}".encode()).hexdigest()[:16]
    cached = ctx.work / f"profile-{key}.json"
    if not cached.exists():
        path = ctx.work / f"spec-{key}.json"
        path.write_text(json.dumps(spec.to_dict()))
        result = run_command(ctx, cli_command("nas-profile", "--spec", path, "--image-size", size,
                                              "--in-channels", 1, "--batch-size", 1, "--device", "cpu",
                                              "--repeats", 1, "--warmup", 0, "--json"),
                             label=f"nas-profile-{size}", cap_s=180)
        atomic_write(cached, result.stdout.strip().splitlines()[-1])
    return json.loads(cached.read_text())


def amp_dtype() -> torch.dtype:
    """What the trainer's AMP picks on this card: bf16 where supported, else fp16 (+ GradScaler)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_step(model: torch.nn.Module, device: torch.device, cast: torch.dtype | None, scaler: bool,
              memory_format: torch.memory_format):
    """One training step as the trainer does it (Adam, Dice + focal loss, autocast, optional scaler)."""
    P = project()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    grad_scaler = torch.amp.GradScaler("cuda", enabled=scaler and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=cast)) if cast is not None else nullcontext

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast():
            logits = model(x.contiguous(memory_format=memory_format))
        loss = P.dice_focal_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        grad_scaler.scale(loss).backward()
        grad_scaler.step(optimizer)
        grad_scaler.update()
        return loss.detach()

    return step


