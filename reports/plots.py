"""Interactive figures as plain plotly.js JSON (traces + layout), built without the plotly Python API.

Plain dicts keep 1,000-trial pages fast to build; the page's script fills each point's hover text
from one shared ``hover`` table (keyed by trial number) so it is stored once, not once per plot.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from nas.results.family_records import family_name
from nas.results.outcome import TrialState
from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind

from reports.figures import DOMINATED_COLOR, FAMILY_COLOR, FAMILY_LABEL, FRONT_COLOR, axis_info, family_line
from reports.fmt import KINDS, arch_summary, esc, fixed, human, small_dice
from reports.hypervolume import REFERENCE, HypervolumePoint
from reports.trivial import TRIVIAL_COLOR, trivial_level
from nas.results.pareto import DICE_LATENCY, DICE_MACS, DICE_PARAMS, ParetoFront, pareto_front

PRUNED_COLOR = "#7f7f7f"
# plot id -> (objectives, x attribute, log x axis)
FRONT_PLOTS = {"plot-macs": (DICE_MACS, "macs", True), "plot-latency": (DICE_LATENCY, "latency_ms", False),
               "plot-params": (DICE_PARAMS, "params", True)}
HOVER = "%{text}<extra></extra>"


def hover_text(record: TrialRecord) -> str:
    """Architecture, costs and metrics of one trial; user-supplied text is escaped."""
    member = family_name(record)
    lines = [f"<b>trial {record.number}</b> ({KINDS[record.kind][0]}, {esc(record.state)})"
             + (f" · {esc(member)}" if member else ""), esc(arch_summary(record))]
    if record.dice is not None:
        small = small_dice(record)
        miou = record.measure("miou") if record.result.quality.num_classes not in (None, 2) else None
        lines.append(f"Dice {fixed(record.dice, 3)}" + (f" · mIoU {miou:.3f}" if miou is not None else "")
                     + (f" · small-object Dice {small:.3f}" if small is not None else ""))
    lines.append(f"MACs {human(record.macs)} · FLOPs {human(record.flops)} · params {human(record.measure('params'))}")
    if record.latency_ms is not None:
        lines.append(f"latency {fixed(record.latency_ms, 2)} ms on {esc(record.latency_device or '?')}")
    if record.seconds is not None:
        lines.append(f"trial time {fixed(record.seconds, 1)} s")
    return "<br>".join(lines)


def _layout(x_title: str, y_title: str, *, log_x: bool = False, title: str = "") -> dict[str, Any]:
    xaxis: dict[str, Any] = {"title": {"text": x_title}, "exponentformat": "SI", "gridcolor": "#e5e5e5"}
    if log_x:
        xaxis["type"] = "log"
    return {"title": {"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left"}, "xaxis": xaxis,
            "yaxis": {"title": {"text": y_title}, "gridcolor": "#e5e5e5"}, "height": 380,
            "margin": {"l": 60, "r": 10, "t": 40, "b": 50}, "hovermode": "closest", "plot_bgcolor": "white",
            "legend": {"font": {"size": 11}}, "clickmode": "event"}


def _finite(value: Any) -> bool:
    return value is not None and not math.isnan(float(value))


def front_plot(front: ParetoFront, x: str, *, log_x: bool, trivial: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Markers per (front | dominated) x kind, plus the front's attainment step line; the y axis is the
    front's quality objective (Dice, or e.g. ``dice_small``, ``hd95``, ``dice:<class>``). ``trivial``
    (the validation block of ``trivial.json``) adds the constant predictor's Dice as a dashed line."""
    y = next(o.name for o in front.objectives if o.name != x)
    level = trivial_level(trivial, y)
    # models no better than the trivial predictor: drawn apart, below the axis they would stretch
    below = {r.number for r in front.finished if y == "dice" and level and r.dice is not None and r.dice <= level[1]}
    traces = []
    for group, color, opacity, size, label in ((front.dominated, DOMINATED_COLOR, 0.45, 7, "dominated"),
                                               (front.front, FRONT_COLOR, 1.0, 10, "Pareto front")):
        for name, (kind_label, symbol, _) in KINDS.items():
            sub = [r for r in group if r.kind == name and r.number not in below]
            if not sub:
                continue
            traces.append({
                "type": "scatter", "mode": "markers", "name": f"{label}" + ("" if name == RecordKind.SEARCH else f", {kind_label}"),
                "x": [r.measure(x) for r in sub], "y": [r.measure(y) for r in sub], "customdata": [r.number for r in sub],
                "marker": {"color": color, "opacity": opacity, "symbol": symbol,
                           "size": size + (5 if symbol == "star" else 0), "line": {"width": 0}},
                "hovertemplate": HOVER,
            })
    family = family_line(front, x, y)
    if family:
        traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{FAMILY_LABEL} ({len(family)})",
                       "x": [p[0] for p in family], "y": [p[1] for p in family], "customdata": [p[2] for p in family],
                       "line": {"color": FAMILY_COLOR, "width": 1.5, "dash": "dash"},
                       "marker": {"symbol": "square-open", "size": 11, "color": FAMILY_COLOR},
                       "hovertemplate": HOVER})
    xs = sorted(v for r in front.finished if _finite(v := r.measure(x)))
    if level and xs:
        traces.append({"type": "scatter", "mode": "lines", "name": f"{level[0]} {level[1]:.3f}",
                       "x": [xs[0], xs[-1]], "y": [level[1], level[1]],
                       "line": {"color": TRIVIAL_COLOR, "width": 1.2, "dash": "dash"},
                       "hovertemplate": f"{esc(level[0])}: {level[1]:.3f}<extra></extra>"})
    line = sorted((r.measure(x), r.measure(y)) for r in front.front if r.number not in below)
    if line:
        traces.insert(0, {"type": "scatter", "mode": "lines", "name": "front", "showlegend": False,
                          "x": [p[0] for p in line], "y": [p[1] for p in line], "hoverinfo": "skip",
                          "line": {"shape": "hv", "color": FRONT_COLOR, "width": 1}})
    label, unit, _ = axis_info(x)
    quality = axis_info(y)[0]
    title = f"Dice vs {label}" if y == "dice" else f"{quality} vs {label} (the search's objectives)"
    layout = _layout(f"{label} ({unit})" if unit and not log_x else label, quality, log_x=log_x, title=title)
    if below and level:
        _draw_below(traces, layout, [r for r in front.finished if r.number in below],
                    [r.dice for r in front.finished if r.number not in below and _finite(r.dice)] + [level[1]], x)
    return {"traces": traces, "layout": layout}


def _draw_below(traces: list[dict[str, Any]], layout: dict[str, Any], below: list[TrialRecord],
                shown: list[float], x: str) -> None:
    """The Dice axis spans the models above the trivial level (and the level); the ones at or below it
    are grey triangles on the axis' floor, their own Dice in the hover text."""
    low, high = min(shown), max(shown)
    pad = max(0.01, 0.08 * (high - low))
    layout["yaxis"]["range"] = [low - 2 * pad, min(1.0 + pad, high + pad)]
    traces.append({"type": "scatter", "mode": "markers", "name": f"no better than trivial ({len(below)})",
                   "x": [r.measure(x) for r in below], "y": [low - 1.5 * pad] * len(below),
                   "customdata": [r.number for r in below], "hovertemplate": HOVER,
                   "marker": {"color": PRUNED_COLOR, "symbol": "triangle-down", "size": 9, "line": {"width": 0}}})


def front_plots(records: list[TrialRecord], objectives: tuple = (),
                trivial: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Plot id -> figure for each front that has at least one finished point; ``objectives`` of a search
    whose quality objective is not Dice add ``plot-objective``: that measure vs its first cost.
    ``trivial``: the validation block of ``trivial.json`` (a dashed line on the Dice plots), or None."""
    out = {}
    if objectives and objectives[0].name != "dice":
        x = objectives[1].name
        front = pareto_front(records, (objectives[0], objectives[1]))
        if front.finished:
            out["plot-objective"] = front_plot(front, x, log_x=axis_info(x)[2], trivial=trivial)
    for plot_id, (objectives, x, log_x) in FRONT_PLOTS.items():
        front = pareto_front(records, objectives)
        if front.finished:
            out[plot_id] = front_plot(front, x, log_x=log_x, trivial=trivial)
    return out


def hypervolume_plot(points: list[HypervolumePoint]) -> dict[str, Any]:
    trace = {"type": "scatter", "mode": "lines+markers", "name": "hypervolume", "line": {"shape": "hv"},
             "x": [p.seconds for p in points], "y": [p.hypervolume for p in points],
             "customdata": [p.number for p in points], "marker": {"size": 5, "color": FRONT_COLOR},
             "hovertemplate": "%{text}<br>cumulative %{x:.0f} s · HV %{y:.4f}<extra></extra>"}
    ref = f"reference: Dice {REFERENCE[0]:g}, 10^{REFERENCE[1]:g} MACs"
    layout = _layout("Cumulative trial time (device seconds)", "Hypervolume (Dice × decades of MACs)",
                     title=f"Hypervolume of the Dice vs log10 MACs front ({ref})")
    layout["showlegend"] = False
    return {"traces": [trace], "layout": layout}


def curves_plot(records: Iterable[TrialRecord], highlight: frozenset[int]) -> dict[str, Any]:
    """Per-epoch validation Dice: one trace per group, curves separated by nulls; pruned curves end in an x."""
    groups: dict[str, list[TrialRecord]] = {"other": [], "pruned": [], "front": []}
    for r in records:
        if r.epoch_dice:
            groups["front" if r.number in highlight else "pruned" if r.state != TrialState.COMPLETE else "other"].append(r)
    styles = {"other": (DOMINATED_COLOR, 0.35, "finished"), "pruned": (PRUNED_COLOR, 0.6, "stopped early"),
              "front": (FRONT_COLOR, 0.95, "Pareto front (Dice vs MACs)")}
    traces = []
    for name, rows in groups.items():
        if not rows:
            continue
        color, opacity, label = styles[name]
        xs: list[Any] = []
        ys: list[Any] = []
        ids: list[Any] = []
        for r in rows:
            xs += [*range(1, len(r.epoch_dice) + 1), None]
            ys += [*map(float, r.epoch_dice), None]
            ids += [r.number] * len(r.epoch_dice) + [None]
        traces.append({"type": "scatter", "mode": "lines", "name": f"{label} ({len(rows)})", "x": xs, "y": ys,
                       "customdata": ids, "opacity": opacity, "connectgaps": False,
                       "line": {"color": color, "width": 1.6 if name == "front" else 1}, "hovertemplate": HOVER})
        if name == "pruned":
            traces.append({"type": "scatter", "mode": "markers", "name": "where it stopped", "showlegend": False,
                           "x": [len(r.epoch_dice) for r in rows], "y": [float(r.epoch_dice[-1]) for r in rows],
                           "customdata": [r.number for r in rows], "hovertemplate": HOVER,
                           "marker": {"symbol": "x", "color": color, "size": 8}})
    layout = _layout("Epoch", "Validation Dice", title="Validation Dice per epoch")
    layout["xaxis"]["dtick"] = 1
    return {"traces": traces, "layout": layout}
