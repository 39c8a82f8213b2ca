"""The search's stages around the trials, kept out of the engine so it holds only what every trial needs:
the baseline family planned (``family_planning``), the presets and family trained as baselines
(``baseline_training``) and the finalists retrained with seeds (``finalist_training``). Plain Python on
the engine's trial runner; a run directory applies them (``nas.run.family_run``, ``nas.run.finalist_run``)."""
