"""NAS workbench for ResUNet segmentation: data, training, costs, study, checkpoints.

Every name below is imported lazily, so ``import nas.results.records`` (used by the reports) stays
light and does not pull in torch. From a notebook: ``nas.run_search(nas.SearchConfig(...))``, then ``nas.load_run(out)`` (a DataFrame).
``nas.__version__`` is the installed package's version (``pyproject.toml``'s when run from a source tree).
"""
import importlib as _importlib
from typing import Any as _Any

_LAZY = {
    "CheckpointError": "nas.deploy.checkpoint", "load_checkpoint": "nas.deploy.checkpoint",
    "read_checkpoint_info": "nas.deploy.checkpoint", "save_checkpoint": "nas.deploy.checkpoint",
    "run_search": "nas.run.search", "SearchConfig": "nas.run.search", "SearchError": "nas.run.search",
    "SearchResult": "nas.run.search", "load_run": "nas.run.open", "open_run": "nas.run.open",
    "RunError": "nas.run.open",
}
__all__ = list(_LAZY)
_DISTRIBUTION = "resunet-nas"
_version: str | None = None


def _find_version() -> str:
    """The installed distribution's version, else ``pyproject.toml``'s beside the package, else ``0+unknown``."""
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:
        pass
    try:
        import tomllib

        project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
        if project.get("name") == _DISTRIBUTION and isinstance(project.get("version"), str):
            return project["version"]
    except (ImportError, OSError, ValueError, KeyError, TypeError):  # no tomllib (3.10), no or another pyproject
        pass
    return "0+unknown"


def __getattr__(name: str) -> _Any:
    global _version
    if name == "__version__":
        if _version is None:
            _version = _find_version()
        return _version
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (the lazy ones too, before their first use), the subpackages imported so far
    and the usual module dunders; no private helpers."""
    public = (name for name in globals() if not name.startswith("_"))
    return sorted({*__all__, *public, "__version__", "__all__", "__doc__", "__file__", "__name__", "__path__"})
