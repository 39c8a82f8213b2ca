"""Results as plain data: the typed trial record, the trials table, Pareto fronts. No torch, no Optuna."""
