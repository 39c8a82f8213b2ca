"""The tabulated benchmark of the search space (docs/benchmark.md): table, loaders, surrogate, replay."""
