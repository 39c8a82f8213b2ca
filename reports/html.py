"""One self-contained HTML page per study: config, conventions, Pareto plots and the trial table.

The page embeds its figures as inline SVG and has no scripts or external URLs, so it can be
mailed, archived or opened offline. Figures are built on ``matplotlib.figure.Figure`` directly
(never pyplot), so rendering neither needs a display nor changes the caller's backend.
"""
from __future__ import annotations

import html
import io
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import quote, urlsplit

from nas.io import atomic_write_bytes, atomic_write_text
from nas.records import TrialRecord

from .pareto import DICE_LATENCY, DICE_MACS, ParetoFront, pareto_front

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATE_ORDER = ("COMPLETE", "RUNNING", "WAITING", "PRUNED", "FAIL")
FRONT_COLOR, DOMINATED_COLOR = "#d62728", "#1f77b4"
# attribute -> (axis label, unit symbol, is a count that gets k/M/G prefixes and a log axis)
AXES = {
    "dice": ("Validation Dice", "", False),
    "macs": ("MACs", "MAC", True),
    "flops": ("FLOPs", "FLOP", True),
    "param_count": ("Parameters", "", True),
    "latency_ms": ("Latency", "ms", False),
    "seconds": ("Trial time", "s", False),
}
CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.pareto{background:#fff3f3}.mark{color:#d62728;font-weight:bold;white-space:nowrap}
.fail{color:#a00;white-space:pre-wrap;max-width:28em;font-size:12px}.arch{font-size:12px;max-width:30em}
.box{border:1px solid #bbb;background:#fafafa;padding:.3em 1em;margin:1em 0}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0;flex:1 1 460px}
svg{max-width:100%;height:auto}.note,.empty{font-style:italic;color:#555}
"""


def _scale(values: Iterable[float]) -> tuple[float, str]:
    """Divisor and SI prefix so the largest value reads as a small number (1.2 G, 340 M, 12 k)."""
    top = max((abs(v) for v in values), default=0.0)
    for divisor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if top >= divisor:
            return divisor, prefix
    return 1.0, ""


def _human(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    divisor, prefix = _scale([value])
    text = f"{value / divisor:.3g}" if divisor > 1 else f"{value:g}"
    return f"{text} {prefix}{unit}".rstrip()


def _fixed(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.{digits}f}"


def _axis_label(name: str, values: list[float]) -> tuple[str, float]:
    label, unit, count = AXES.get(name, (name, "", False))
    divisor, prefix = _scale(values) if count else (1.0, "")
    full_unit = f"{prefix}{unit}" if count else unit
    return (f"{label} ({full_unit})" if full_unit else label), divisor


def _point(record: TrialRecord, name: str) -> float | None:
    value = getattr(record, name)
    return None if value is None or math.isnan(float(value)) else float(value)


def figure_pareto(front: ParetoFront, x: str, y: str | None = None, *, title: str | None = None,
                  annotate_limit: int = 200, figsize: tuple[float, float] = (6.4, 4.2)) -> Figure:
    """Scatter of finished trials: front highlighted and joined by its attainment step line.

    Front points always carry their trial number; dominated ones only while there are at most
    ``annotate_limit`` points, past that the labels would only be ink.
    """
    from matplotlib.figure import Figure

    y = y or next(o.name for o in front.objectives if o.name != x)
    directions = {o.name: o.direction for o in front.objectives}
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    groups = []
    for records in (front.front, front.dominated):
        pts = [(r.number, _point(r, x), _point(r, y)) for r in records]
        groups.append([p for p in pts if p[1] is not None and p[2] is not None])
    xs_all = [p[1] for g in groups for p in g]
    xlabel, divisor = _axis_label(x, xs_all)
    ylabel, ydiv = _axis_label(y, [p[2] for g in groups for p in g])
    ax.set_title(title or f"{AXES.get(y, (y,))[0]} vs {AXES.get(x, (x,))[0]}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if not xs_all:
        ax.text(0.5, 0.5, "No finished trials yet", transform=ax.transAxes, ha="center", va="center")
        return fig
    if AXES.get(x, ("", "", False))[2] and min(xs_all) > 0:
        from matplotlib.ticker import LogFormatter

        ax.set_xscale("log")
        # plain numbers ("20", "300"): the default mathtext labels overlap on short ranges
        ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    n_points = sum(len(g) for g in groups)
    styles = ((FRONT_COLOR, 1.0, 28, f"Pareto front ({len(groups[0])})", True),
              (DOMINATED_COLOR, 0.3, 14, f"dominated ({len(groups[1])})", n_points <= annotate_limit))
    for group, (color, alpha, size, label, annotate) in zip(groups, styles):
        if not group:
            continue
        xs = [p[1] / divisor for p in group]
        ys = [p[2] / ydiv for p in group]
        ax.scatter(xs, ys, s=size, color=color, alpha=alpha, label=label, zorder=3 if annotate else 2,
                   edgecolors="none")
        if annotate:
            for (number, _, _), px, py in zip(group, xs, ys):
                ax.annotate(str(number), (px, py), xytext=(3, 3), textcoords="offset points",
                            fontsize=6, color=color, alpha=max(alpha, 0.6))
    if groups[0] and set(directions) == {x, y}:
        line = sorted((p[1] / divisor, p[2] / ydiv) for p in groups[0])
        where = "post" if directions[x] == "minimize" else "pre"
        ax.step([p[0] for p in line], [p[1] for p in line], where=where, color=FRONT_COLOR, lw=1, zorder=2)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


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


def _svg(fig: Figure, salt: str) -> str:
    """Inline SVG text; fixed hash salt and no date keep the page byte-for-byte reproducible.

    Each figure gets its own salt so element ids never collide between SVGs in one page.
    """
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"resunet-nas-{salt}", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)


def save_static_figures(source: ParetoFront | Iterable[TrialRecord], folder, *, dpi: int = 150) -> list[Path]:
    """Write ``pareto_macs.png`` and ``pareto_latency.png`` (atomically) into ``folder``.

    Takes a front or plain records: each plot needs its own 2-objective front (Dice vs its x),
    so both are recomputed from all records.
    """
    records = list(source.records if isinstance(source, ParetoFront) else source)
    paths = []
    for name, objectives in (("pareto_macs.png", DICE_MACS), ("pareto_latency.png", DICE_LATENCY)):
        fig = figure_pareto(pareto_front(records, objectives), objectives[1].name)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        paths.append(atomic_write_bytes(Path(folder) / name, buffer.getvalue()))
    return paths


def _esc(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True, default=str)
    return html.escape(str(value), quote=True)


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def _state_counts(records: list[TrialRecord]) -> str:
    counts = Counter(r.state for r in records)
    states = [s for s in STATE_ORDER if s in counts] + sorted(set(counts) - set(STATE_ORDER))
    detail = " · ".join(f"{_esc(s)} {counts[s]}" for s in states)
    return f"<p><b>Trials:</b> {len(records)}{' — ' + detail if detail else ''}</p>"


def _conventions(records: list[TrialRecord], config: Mapping[str, Any], conventions: Mapping[str, Any]) -> str:
    devices = sorted({r.latency_device for r in records if r.latency_device})
    device = ", ".join(devices) or conventions.get("latency_device") or conventions.get("device") \
        or "(no latency measured)"
    size = conventions.get("input_size") or config.get("image_size")
    fixed = [
        "Dice: foreground class, per image, mean over validation images (best epoch)",
        "MACs: multiply-accumulates of convs/transposed convs/linear per forward pass at batch 1 "
        f"at the stated input size{f' ({size})' if size else ''}; FLOPs = 2 × MACs",
        f"Latency: median batch-1 forward on {device}",
    ]
    items = [f"<li>{_esc(t)}</li>" for t in fixed]
    items += [f"<li><b>{_esc(k)}:</b> {_esc(v)}</li>" for k, v in conventions.items()]
    return f'<section class="box"><h2>Conventions</h2><ul>{"".join(items)}</ul></section>'


def _checkpoint_cell(path: str | None) -> str:
    """Relative folders become links; anything with a scheme or absolute root stays plain text."""
    if not path:
        return ""
    if urlsplit(path).scheme or urlsplit(path).netloc or path.startswith(("/", "\\")):
        return _esc(path)
    href = quote(path.replace("\\", "/"), safe="/._-~")
    return f'<a href="{_esc(href)}">{_esc(path)}</a>'


def _param_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trial_table(records: list[TrialRecord], macs_front: frozenset[int], lat_front: frozenset[int]) -> str:
    if not records:
        return '<p class="empty">No trials recorded.</p>'
    head = ("#", "state", "Dice", "MACs", "FLOPs", "params", "latency ms", "seconds",
            "architecture", "Pareto", "fail reason", "checkpoint")
    rows = []
    for r in records:
        marks = [m for m, s in (("★ MACs", macs_front), ("★ latency", lat_front)) if r.number in s]
        flops = r.flops if r.flops is not None else (2 * r.macs if r.macs is not None else None)
        arch = ", ".join(f"{k}={_param_text(v)}" for k, v in r.params.items())
        cells = (
            f'<td class="num">{r.number}</td>', f"<td>{_esc(r.state)}</td>",
            f'<td class="num">{_fixed(r.dice, 3)}</td>', f'<td class="num">{_human(r.macs)}</td>',
            f'<td class="num">{_human(flops)}</td>', f'<td class="num">{_human(r.param_count)}</td>',
            f'<td class="num">{_fixed(r.latency_ms, 2)}</td>', f'<td class="num">{_fixed(r.seconds, 1)}</td>',
            f'<td class="arch">{_esc(arch)}</td>', f'<td class="mark">{" ".join(marks)}</td>',
            f'<td class="fail">{_esc(r.fail_reason or "")}</td>', f"<td>{_checkpoint_cell(r.checkpoint)}</td>",
        )
        cls = ' class="pareto"' if marks else ""
        rows.append(f'<tr id="trial-{r.number}"{cls}>{"".join(cells)}</tr>')
    header = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return f'<table class="trials"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _figures(macs: ParetoFront, lat: ParetoFront) -> str:
    if not macs.finished:
        return '<p class="empty">No finished trials yet</p>'
    parts = [f"<figure>{_svg(figure_pareto(macs, 'macs'), 'macs')}</figure>"]
    if lat.finished:
        parts.append(f"<figure>{_svg(figure_pareto(lat, 'latency_ms'), 'latency')}</figure>")
    else:
        parts.append('<p class="note">No latency measured for any finished trial; Dice vs latency plot skipped.</p>')
    missing = len([r for r in macs.finished if r.latency_ms is None])
    note = (f'<p class="note">{missing} finished trial(s) without a latency are not in the latency plot.</p>'
            if lat.finished and missing else "")
    html_parts = f'<div class="plots">{"".join(parts)}</div>{note}'
    if any(r.epoch_dice for r in macs.finished):
        curves = figure_epoch_dice(macs.finished, macs.numbers)
        html_parts += f'<h2>Validation Dice per epoch</h2><figure>{_svg(curves, "epochs")}</figure>'
    return html_parts


def render_report(records: list[TrialRecord], path, *, title: str, config: dict,
                  conventions: dict | None = None) -> Path:
    """Write the study page to ``path`` atomically and return it; works for empty studies too."""
    records = sorted(records, key=lambda r: r.number)
    conventions = dict(conventions or {})
    macs = pareto_front(records, DICE_MACS)
    lat = pareto_front(records, DICE_LATENCY)
    body = "".join((
        f"<h1>{_esc(title)}</h1>",
        "<h2>Run configuration</h2>", _kv_table(config), _state_counts(records),
        _conventions(records, config, conventions),
        "<h2>Pareto fronts</h2>", _figures(macs, lat),
        "<h2>Trials</h2>", _trial_table(records, macs.numbers, lat.numbers),
    ))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
    return atomic_write_text(path, page)
