"""The Optuna adapter: open/resume a study, drive trials through the trial policy, read records back."""
