"""Reports over trial records: Pareto fronts and hypervolume (pure data), figures and the HTML page.

Reads only ``nas.records.TrialRecord`` and plain dicts/PNG bytes; never imports optuna or torch.
matplotlib is imported lazily, only when a static figure is drawn; plotly only for its bundled JS.
"""
from .figures import figure_epoch_dice, figure_pareto, save_static_figures
from .html import render_report
from .hypervolume import REFERENCE, HypervolumePoint, hypervolume_2d, hypervolume_over_compute
from .pareto import DICE_LATENCY, DICE_MACS, DICE_PARAMS, Objective, ParetoFront, dominates, pareto_front

__all__ = [
    "DICE_LATENCY",
    "DICE_MACS",
    "DICE_PARAMS",
    "REFERENCE",
    "HypervolumePoint",
    "Objective",
    "ParetoFront",
    "dominates",
    "figure_epoch_dice",
    "figure_pareto",
    "hypervolume_2d",
    "hypervolume_over_compute",
    "pareto_front",
    "render_report",
    "save_static_figures",
]
