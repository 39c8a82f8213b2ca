"""NAS workbench for ResUNet segmentation: data, training, costs, study, checkpoints.

``load_checkpoint`` and friends are imported lazily, so ``import nas.results.records`` (used by the
reports) stays light and does not pull in torch.
"""
from typing import Any

__all__ = ["CheckpointError", "load_checkpoint", "read_checkpoint_info", "save_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nas.deploy import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
