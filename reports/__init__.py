"""Reports over trial records: Pareto fronts and hypervolume (pure data), figures and the HTML page.

Reads only ``nas.results.records.TrialRecord`` and plain dicts/PNG bytes; never imports optuna or torch.
matplotlib is imported lazily, only when a static figure is drawn; plotly only for its bundled JS.
"""
from reports.figures import figure_epoch_dice, figure_pareto, save_static_figures
from reports.html import render_report
from reports.hypervolume import REFERENCE, HypervolumePoint, hypervolume_2d, hypervolume_over_compute
from nas.results.pareto import DICE_LATENCY, DICE_MACS, DICE_PARAMS, Objective, ParetoFront, dominates, pareto_front

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
