"""Per-channel intensity normalization: computed once on the training images, stored in every checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean/std, computed on the training split; stored with checkpoints."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"Normalization needs one mean and one std per channel: {self.mean}, {self.std}")

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]))

    def apply(self, images: Any, spatial_dims: int = 2) -> torch.Tensor:
        """``(B, C, *S)`` (or ``(C, *S)``) in [0, 1] -> zero mean, unit std per channel; S has
        ``spatial_dims`` axes (3 for volumes). ``images`` is a tensor (its float dtype and device kept)
        or a numpy array (read as float32, as the models' weights are); the result is a tensor."""
        if not isinstance(images, torch.Tensor):
            images = torch.as_tensor(images, dtype=torch.float32)
        elif not images.is_floating_point():
            images = images.to(torch.float32)
        if images.dim() < 1 + spatial_dims:
            raise ValueError(f"images of shape {tuple(images.shape)}: expected (B, C, *S) or (C, *S) with "
                             f"{spatial_dims} spatial axes")
        channels = images.shape[-1 - spatial_dims]
        if channels != len(self.mean):
            raise ValueError(f"images have {channels} channel(s), normalization has {len(self.mean)}")
        shape = (-1,) + (1,) * spatial_dims
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(shape)
        return (images - mean) / std


def compute_normalization(images: list[torch.Tensor]) -> Normalization:
    """Per-channel mean and std over every pixel of ``images`` (two passes, float64; std >= 1e-6)."""
    count = sum(image[0].numel() for image in images)
    axes = tuple(range(1, images[0].dim()))
    shape = (-1,) + (1,) * len(axes)
    total = sum(image.double().sum(dim=axes) for image in images)
    mean = total / count
    squares = sum(((image.double() - mean.view(shape)) ** 2).sum(dim=axes) for image in images)
    std = (squares / count).sqrt().clamp_min(_STD_FLOOR)
    return Normalization(mean=tuple(mean.tolist()), std=tuple(std.tolist()))
