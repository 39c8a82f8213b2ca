"""The search engine: one trial policy, objectives, early stopping, the job, locking, workers, baselines,
and the thin study adapters (``optuna_adapter``, ``ray_adapter``): the only places that import Optuna or Ray."""
