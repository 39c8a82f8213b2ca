"""The search engine: one trial policy, objectives, early stopping, the job, locking, workers, the cost strata,
and the thin study adapters (``optuna_adapter``, ``ray_adapter``): the only places that import Optuna or Ray."""
