"""The Optuna adapter: open/resume a study, drive trials through the trial policy, read records back.

This module is the adapter's one surface for ``nas.run`` (contract ``optuna-facade``): it re-exports
the names a run directory needs, so the submodules can be split or renamed without touching the run.
Importing it loads Optuna, but not ``optuna.importance`` (scikit-learn, SciPy, pandas): ``importance``
loads that on first use.
"""
from nas.engine.optuna_adapter.importance import importances_from_storage, param_importances
from nas.engine.optuna_adapter.reading import StorageUnreadable, read_study, storage_problem, study_names
from nas.engine.optuna_adapter.search import search as run_optuna_search
from nas.engine.optuna_adapter.storage_fault import complete_unstored, outputs_after_failure
from nas.engine.optuna_adapter.study import (StudyConfigError, count_finished, default_storage, open_study,
                                             recover_lost_trials, run_storage, study_records)
from nas.engine.optuna_adapter.warm_start import enqueue_start, family_plan, start_name, store_family_plan

__all__ = ["StorageUnreadable", "StudyConfigError", "complete_unstored", "count_finished", "default_storage",
           "enqueue_start", "family_plan", "importances_from_storage", "open_study", "outputs_after_failure",
           "param_importances", "read_study", "recover_lost_trials", "run_optuna_search", "run_storage",
           "start_name", "storage_problem", "store_family_plan", "study_names", "study_records"]
