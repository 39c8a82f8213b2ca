"""Static matplotlib figures of the fronts (PNG/SVG beside the HTML, for papers and slides).

Built on ``matplotlib.figure.Figure`` directly (never pyplot), so drawing neither needs a display
nor changes the caller's backend; matplotlib is imported only when a figure is drawn.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from nas.io import atomic_write_bytes
from nas.results.family_records import family_records
from nas.results.records import TrialRecord
from nas.results.trial_result import CLASS_PREFIX, RecordKind

from reports.fmt import KINDS, scale
from reports.trivial import TRIVIAL_COLOR, split_block, trivial_level
from nas.results.pareto import DICE_LATENCY, DICE_MACS, DICE_PARAMS, Objective, ParetoFront, pareto_front

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FRONT_COLOR, DOMINATED_COLOR, FAMILY_COLOR = "#d62728", "#1f77b4", "#2ca02c"
FAMILY_LABEL = "family front"  # the baseline family's own non-dominated points (nas.results.family_records)
# attribute -> (axis label, unit symbol, is a count that gets k/M/G prefixes and a log axis)
AXES = {
    "dice": ("Validation Dice", "", False),
    "macs": ("MACs", "MAC", True),
    "flops": ("FLOPs", "FLOP", True),
    "params": ("Parameters", "", True),
    "latency_ms": ("Latency", "ms", False),
    "seconds": ("Trial time", "s", False),
    # quality objectives (docs/multiclass.md), read with TrialRecord.measure
    "miou": ("Validation mIoU", "", False),
    "dice_small": ("Small-object Dice (validation, objects < 8 px)", "", False),
    "hd95": ("HD95 (validation, px; lower is better)", "", False),
}


def axis_info(name: str) -> tuple[str, str, bool]:
    """``(label, unit, count)`` of a measure; ``dice:<class>`` is that class's validation Dice."""
    if name.startswith(CLASS_PREFIX) and name not in AXES:
        return (f"Validation Dice of class {name[len(CLASS_PREFIX):]}", "", False)
    return AXES.get(name, (name, "", False))
# file stem -> (objectives, x attribute)
STATIC_FRONTS = {"pareto_macs": (DICE_MACS, "macs"), "pareto_latency": (DICE_LATENCY, "latency_ms"),
                 "pareto_params": (DICE_PARAMS, "params")}


def axis_label(name: str, values: list[float]) -> tuple[str, float]:
    label, unit, count = axis_info(name)
    divisor, prefix = scale(values) if count else (1.0, "")
    full_unit = f"{prefix}{unit}" if count else unit
    return (f"{label} ({full_unit})" if full_unit else label), divisor


def _point(record: TrialRecord, name: str) -> float | None:
    value = record.measure(name)  # dice:<class> is not an attribute
    return None if value is None or math.isnan(float(value)) else float(value)


def figure_pareto(front: ParetoFront, x: str, y: str | None = None, *, title: str | None = None,
                  annotate_limit: int = 200, figsize: tuple[float, float] = (6.4, 4.2),
                  trivial: Mapping[str, Any] | None = None) -> Figure:
    """Scatter of finished trials: front highlighted and joined by its attainment step line.

    Front points always carry their trial number; dominated ones only while there are at most
    ``annotate_limit`` points. Compressed models and presets get their own marker. ``trivial`` (a
    split block of ``trivial.json``) adds the constant predictor's Dice as a dashed horizontal line.
    """
    from matplotlib.figure import Figure

    y = y or next(o.name for o in front.objectives if o.name != x)
    directions = {o.name: o.direction for o in front.objectives}
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    level = trivial_level(trivial, y)
    # models no better than the trivial predictor: drawn apart on the axis' floor, never stretching it
    floor = level[1] if level and y == "dice" else None
    below = [(r, _point(r, x)) for r in front.finished if floor is not None and r.dice is not None and r.dice <= floor]
    groups = []
    for records in (front.front, front.dominated):
        pts = [(r, _point(r, x), _point(r, y)) for r in records if floor is None or r.dice is None or r.dice > floor]
        groups.append([p for p in pts if p[1] is not None and p[2] is not None])
    xs_all = [p[1] for g in groups for p in g] + [p[1] for p in below if p[1] is not None]
    xlabel, divisor = axis_label(x, xs_all)
    ylabel, ydiv = axis_label(y, [p[2] for g in groups for p in g])
    ax.set_title(title or f"{axis_info(y)[0]} vs {axis_info(x)[0]}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if not xs_all:
        ax.text(0.5, 0.5, "No finished trials yet", transform=ax.transAxes, ha="center", va="center")
        return fig
    if axis_info(x)[2] and min(xs_all) > 0:
        from matplotlib.ticker import LogFormatter

        ax.set_xscale("log")
        # plain numbers ("20", "300"): the default mathtext labels overlap on short ranges
        ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    n_points = sum(len(g) for g in groups)
    styles = ((FRONT_COLOR, 1.0, 28, "Pareto front", True),
              (DOMINATED_COLOR, 0.3, 14, "dominated", n_points <= annotate_limit))
    for group, (color, alpha, size, label, annotate) in zip(groups, styles):
        for name, (kind_label, _, marker) in KINDS.items():
            sub = [p for p in group if p[0].kind == name]
            if not sub:
                continue
            xs = [p[1] / divisor for p in sub]
            ys = [p[2] / ydiv for p in sub]
            text = label if name == RecordKind.SEARCH else f"{label}, {kind_label}"
            ax.scatter(xs, ys, s=size * (2 if marker == "*" else 1), color=color, alpha=alpha, marker=marker,
                       label=f"{text} ({len(sub)})", zorder=3 if annotate else 2, edgecolors="none")
            if annotate:
                for (record, _, _), px, py in zip(sub, xs, ys):
                    ax.annotate(str(record.number), (px, py), xytext=(3, 3), textcoords="offset points",
                                fontsize=6, color=color, alpha=max(alpha, 0.6))
    if groups[0] and set(directions) == {x, y}:
        line = sorted((p[1] / divisor, p[2] / ydiv) for p in groups[0])
        where = "post" if directions[x] == "minimize" else "pre"
        ax.step([p[0] for p in line], [p[1] for p in line], where=where, color=FRONT_COLOR, lw=1, zorder=2)
    family = family_line(front, x, y)
    if family:
        ax.plot([p[0] / divisor for p in family], [p[1] / ydiv for p in family], color=FAMILY_COLOR, lw=1.2,
                ls="--", marker="s", markersize=4, markerfacecolor="none", zorder=4,
                label=f"{FAMILY_LABEL} ({len(family)})")
    if below:
        _draw_below(ax, below, divisor, [p[2] / ydiv for p in groups[0] + groups[1]] + [floor / ydiv])
    if level:
        ax.axhline(level[1] / ydiv, color=TRIVIAL_COLOR, lw=1, ls="--", zorder=1, label=f"{level[0]} {level[1]:.3f}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _draw_below(ax: Any, below: list[tuple[TrialRecord, float | None]], divisor: float, shown: list[float]) -> None:
    """Grey triangles on the floor of a Dice axis that spans only the models above the trivial level."""
    low, high = min(shown), max(shown)
    pad = max(0.01, 0.08 * (high - low))
    ax.set_ylim(low - 2 * pad, min(1.0 + pad, high + pad))
    xs = [p[1] / divisor for p in below if p[1] is not None]
    ax.scatter(xs, [low - 1.5 * pad] * len(xs), s=24, color="#7f7f7f", marker="v", zorder=3, edgecolors="none",
               label=f"no better than trivial ({len(below)})")


def family_line(front: ParetoFront, x: str, y: str = "dice") -> list[tuple[float, float, int]]:
    """(x, y, number) of the baseline family's non-dominated points (Dice vs ``x``), sorted by ``x``:
    the family's own front, drawn as a line next to the search's."""
    objectives = tuple(o for o in front.objectives if o.name in (x, y))
    if len(objectives) != 2:
        return []
    members = pareto_front(family_records(front.records), objectives).front
    points = [(_point(r, x), _point(r, y), r.number) for r in members]
    return sorted(p for p in points if p[0] is not None and p[1] is not None)


def figure_epoch_dice(records: Iterable[TrialRecord], highlight: Iterable[int] = (),
                      figsize: tuple[float, float] = (6.4, 3.6)) -> Figure:
    """One validation-Dice curve per trial; ``highlight`` (front) trials drawn on top in colour."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    highlight = set(highlight)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    lines: dict[bool, list] = {True: [], False: []}
    for r in records:
        if r.epoch_dice:
            lines[r.number in highlight].append([(i + 1, float(d)) for i, d in enumerate(r.epoch_dice)])
    for front, color, alpha, lw in ((False, DOMINATED_COLOR, 0.25, 0.8), (True, FRONT_COLOR, 0.9, 1.3)):
        if lines[front]:
            ax.add_collection(LineCollection(lines[front], colors=color, alpha=alpha, linewidths=lw,
                                             zorder=3 if front else 2))
    ax.autoscale()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Validation Dice")
    ax.set_title("Validation Dice per epoch", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend([Line2D([], [], color=FRONT_COLOR), Line2D([], [], color=DOMINATED_COLOR, alpha=0.4)],
              [f"Pareto front ({len(lines[True])})", f"other ({len(lines[False])})"], fontsize=8,
              loc="lower right")
    return fig


def svg_text(fig: Figure, salt: str) -> str:
    """SVG text; a fixed hash salt and no date keep the file byte-for-byte reproducible."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"resunet-nas-{salt}", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return re.sub(r"<metadata>.*?</metadata>\s*", "", buffer.getvalue(), flags=re.S)


def save_static_figures(source: ParetoFront | Iterable[TrialRecord], folder, *, dpi: int = 150,
                        formats: tuple[str, ...] = ("png", "svg"), objectives: Sequence[Objective] = (),
                        trivial: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``pareto_{macs,latency,params}.{png,svg}`` (atomically) into ``folder``, and
    ``pareto_objectives.{png,svg}`` when the search's ``objectives`` rank by another quality measure
    than Dice (that measure vs the first cost). ``trivial``: the run's ``trivial.json`` (its validation
    block is drawn as a dashed line), or None.

    Each plot needs its own 2-objective front (Dice vs its x), so all are recomputed from the records.
    """
    records = list(source.records if isinstance(source, ParetoFront) else source)
    paths = []
    fronts = dict(STATIC_FRONTS)
    if len(objectives) >= 2 and objectives[0].name != "dice":
        fronts["pareto_objectives"] = ((objectives[0], objectives[1]), objectives[1].name)
    for stem, (chosen, x) in fronts.items():
        fig = figure_pareto(pareto_front(records, chosen), x, trivial=split_block(trivial, "val"))
        for fmt in formats:
            if fmt == "svg":
                data = svg_text(fig, stem).encode("utf-8")
            else:
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, dpi=dpi, metadata={"Software": None})
                data = buffer.getvalue()
            paths.append(atomic_write_bytes(Path(folder) / f"{stem}.{fmt}", data))
    return paths
