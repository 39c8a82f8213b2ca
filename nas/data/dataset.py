"""``SegmentationData``: the splits of one dataset in memory, and what its labels mean.

Its own module so the label-map reader (``nas.data.labels``) and the synthetic tasks can build one
without importing the folder loader; ``nas.data.loading`` re-exports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nas.data.normalization import Normalization


@dataclass
class SegmentationData:
    """Train/val (and optional test) splits in memory at full resolution (sizes may differ).

    Images are ``(C, H, W)`` or, for volumes, ``(C, D, H, W)``. FOV lists are empty when the data
    has no field-of-view masks, else one ``(1, *S)`` {0, 1} mask per image: loss and metrics count
    only inside it.
    """

    name: str  # "synthetic" or the folder's name
    source: str  # what the user passed ("synthetic" or the path)
    train_images: list[torch.Tensor]  # each (C, H, W) float32 in [0, 1]
    train_masks: list[torch.Tensor]  # each (1, H, W) float32 in {0, 1}
    val_images: list[torch.Tensor]
    val_masks: list[torch.Tensor]
    val_names: list[str]  # stems (synthetic: "synthetic_0007")
    in_channels: int
    normalization: Normalization
    train_names: list[str] = field(default_factory=list)  # stems, for error messages and reports
    train_fovs: list[torch.Tensor] = field(default_factory=list)  # each (1, *S) in {0, 1}, or empty
    val_fovs: list[torch.Tensor] = field(default_factory=list)
    test_images: list[torch.Tensor] = field(default_factory=list)  # empty: the data has no test split
    test_masks: list[torch.Tensor] = field(default_factory=list)
    test_names: list[str] = field(default_factory=list)
    test_fovs: list[torch.Tensor] = field(default_factory=list)
    test_note: str = ""  # where the test split came from, or why there is none (the run header says it)
    held_out: float = 0.0  # the test fraction that carved the test split from the folder (0.0: none carved)
    # Classes, background (label 0) included: 2 = binary masks in {0, 1}; K >= 3 = masks holding the
    # label values 0..K-1 as floats (same (1, *S) shape). Index = label value (docs/multiclass.md).
    num_classes: int = 2
    class_names: tuple[str, ...] = ("background", "foreground")
    class_colours: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 255, 255))

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.train_images[0].dim() - 1 if self.train_images else 2

    def split(self, name: str) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """``(images, masks, fovs)`` of ``"val"`` or ``"test"`` (fovs empty when there are none)."""
        if name == "val":
            return self.val_images, self.val_masks, self.val_fovs
        if name == "test":
            return self.test_images, self.test_masks, self.test_fovs
        raise ValueError(f"unknown split {name!r}; use val or test")
