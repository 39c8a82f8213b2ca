"""Reports over trial records: Pareto fronts (pure data) and the self-contained HTML page.

Reads only ``nas.records.TrialRecord``; never imports optuna or torch. matplotlib is imported
lazily, only when a figure is drawn.
"""
from .html import figure_epoch_dice, figure_pareto, render_report, save_static_figures
from .pareto import DICE_LATENCY, DICE_MACS, Objective, ParetoFront, dominates, pareto_front

__all__ = [
    "DICE_LATENCY",
    "DICE_MACS",
    "Objective",
    "ParetoFront",
    "dominates",
    "figure_epoch_dice",
    "figure_pareto",
    "pareto_front",
    "render_report",
    "save_static_figures",
]
