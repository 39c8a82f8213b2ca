"""The trivial predictors' Dice as text and as a level on the plots: pure reading of ``trivial.json``.

A Dice is only as good as its distance from predicting one label everywhere (``nas.train.trivial``
computes it, with the models' own Dice code). Runs made before the file existed have none: every
function here then returns nothing, and the page shows nothing about it.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from nas.results.records import TrialRecord
from nas.results.trial_result import CLASS_PREFIX

from reports.fmt import esc

SPLIT_NAMES = {"val": "validation", "test": "test"}
TRIVIAL_COLOR = "#555555"


def split_block(trivial: Mapping[str, Any] | None, split: str = "val") -> Mapping[str, Any] | None:
    """One split's block of ``trivial.json`` (``{"splits": {"val": {...}}}``), or None."""
    block = ((trivial or {}).get("splits") or {}).get(split)
    return block if isinstance(block, Mapping) and isinstance(block.get("dice"), (int, float)) else None


def _scores(block: Mapping[str, Any], digits: int) -> str:
    """``all-foreground Dice 0.87, all-background 0.00``: each constant, best first (K classes: mean class Dice)."""
    constants = dict(block.get("constants") or {})
    order = sorted(constants, key=lambda name: -constants[name])
    kind = "Dice" if int(block.get("num_classes") or 2) == 2 else "mean class Dice"
    return ", ".join(f"{name} {kind} {constants[name]:.{digits}f}" if i == 0 else f"{name} {constants[name]:.{digits}f}"
                     for i, name in enumerate(order))


def trivial_line(block: Mapping[str, Any], digits: int = 2) -> str:
    """``trivial predictors on validation: all-foreground Dice 0.87, all-background 0.00``."""
    return f"trivial predictors on {SPLIT_NAMES.get(str(block.get('split')), block.get('split'))}: {_scores(block, digits)}"


def trivial_level(block: Mapping[str, Any] | None, quality: str) -> tuple[str, float] | None:
    """``(legend label, Dice)`` of the line a plot of ``quality`` draws: the best constant on ``dice``,
    the class predicted everywhere on ``dice:<class>``; None for other measures or without a block."""
    if not block:
        return None
    if quality == "dice":
        return f"{block['best']} (trivial)", float(block["dice"])
    if quality.startswith(CLASS_PREFIX):
        name = quality[len(CLASS_PREFIX):]
        value = (block.get("per_class") or {}).get(name)
        return (f"all-{name} (trivial)", float(value)) if isinstance(value, (int, float)) else None
    return None


def trivial_summary(trivial: Mapping[str, Any] | None, best_dice: float | None) -> str:
    """The report's summary paragraph: the validation line and how far the best model is above it."""
    block = split_block(trivial, "val")
    if block is None:
        return ""
    margin = ""
    if best_dice is not None:
        margin = (f" The best search trial scores {best_dice:.3f}, {best_dice - float(block['dice']):+.3f} over "
                  f"{esc(block['best'])}.")
    test = split_block(trivial, "test")
    also = f" On the test split: {esc(_scores(test, 3))}." if test else ""
    return (f"<p><b>Trivial predictors on validation:</b> {esc(_scores(block, 3))}. What predicting one label "
            "everywhere scores with the same Dice code on the same images, drawn as the dashed line on the Dice "
            f"plots: a model is only worth its distance above it.{margin}{also}</p>")


def below_trivial(records: Iterable[TrialRecord], trivial: Mapping[str, Any] | None) -> list[TrialRecord]:
    """The finished records whose validation Dice is not above the best trivial predictor's (none without
    ``trivial.json``): not deployed, drawn apart, counted on the page."""
    block = split_block(trivial, "val")
    if block is None:
        return []
    return [r for r in records if r.finished and r.dice is not None and r.dice <= float(block["dice"])]


def below_trivial_note(records: Iterable[TrialRecord], trivial: Mapping[str, Any] | None) -> str:
    """The page's line about the models no better than a trivial predictor ("" when there is none)."""
    below = below_trivial(records, trivial)
    block = split_block(trivial, "val")
    if not below or block is None:
        return ""
    numbers = ", ".join(str(r.number) for r in sorted(below, key=lambda r: r.number))
    return (f'<p class="note"><b>{len(below)} trained model(s) no better than a trivial predictor</b> '
            f"({esc(block['best'])}, validation Dice {float(block['dice']):.3f}): trial(s) {numbers}. They are "
            "not deployed to best/ and are drawn as grey triangles at the bottom of the Dice plots, outside "
            "their scale.</p>")


def ending_note(ending: Mapping[str, Any] | None) -> str:
    """The page's line when the search ended on its time budget (``--timeout``); "" otherwise."""
    if not ending or ending.get("stopped") != "timeout" or not isinstance(ending.get("timeout"), (int, float)):
        return ""
    counts = (f" with {int(ending['finished'])}/{int(ending['trials'])} trials finished"
              if isinstance(ending.get("finished"), int) and isinstance(ending.get("trials"), int) else "")
    return (f'<p class="note"><b>The search ended on its time budget:</b> --timeout {float(ending["timeout"]):g} s '
            f"reached{counts}; the same command resumes it.</p>")
