"""``--backend ray``: Ray Tune schedules the trials; the only package that imports Ray.

``run`` starts (or restores) the Tune experiment, ``trainable`` runs the trial policy in a Ray
worker, ``searcher`` records finished Ray trials in the Optuna study and ends the search. The CLI
imports it only for ``--backend ray``; it imports without Ray installed (``check_ray_backend`` then
says what to install).
"""
from nas.engine.ray_adapter.run import (DONE_MARKER, INSTALL_HINT, RayConnectError, check_ray_backend,
                                        probe_ray_address, run_ray_search)
from nas.engine.ray_adapter.searcher import EXPERIMENT_DIR, StudySearcher

__all__ = ["DONE_MARKER", "EXPERIMENT_DIR", "INSTALL_HINT", "RayConnectError", "StudySearcher", "check_ray_backend",
           "probe_ray_address", "run_ray_search"]
