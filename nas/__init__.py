"""NAS workbench for ResUNet segmentation: data, training, costs, study, checkpoints.

Every name below is imported lazily, so ``import nas.results.records`` (used by the reports) stays
light and does not pull in torch. From a notebook: ``nas.run_search(nas.SearchConfig(...))``, then ``nas.load_run(out)`` (a DataFrame).
"""
import importlib
from typing import Any

_LAZY = {
    "CheckpointError": "nas.deploy.checkpoint", "load_checkpoint": "nas.deploy.checkpoint",
    "read_checkpoint_info": "nas.deploy.checkpoint", "save_checkpoint": "nas.deploy.checkpoint",
    "run_search": "nas.run.search", "SearchConfig": "nas.run.search", "SearchError": "nas.run.search",
    "SearchResult": "nas.run.search", "load_run": "nas.run.open", "open_run": "nas.run.open",
    "RunError": "nas.run.open",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
