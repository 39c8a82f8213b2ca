"""One self-contained HTML page per study: config, conventions, interactive fronts, cards, trial table.

The page works offline: plotly.js is embedded once (from the installed plotly package), figures are
plain JSON in the page, prediction overlays are PNG data URIs; there are no external URLs. Sections
live in ``plots`` (figure JSON), ``cards`` (models, quality, importance) and ``templates`` (CSS, JS).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote, urlsplit

from nas.io import atomic_write_text
from nas.results.family_records import family_name, family_records
from nas.results.outcome import TrialState
from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind

from reports.cards import cards_section, importance_section, quality_section
from reports.finalists import finalists_section
from reports.fmt import KINDS, arch_summary, esc, fixed, human, kv_table, small_dice
from reports.hypervolume import REFERENCE, hypervolume_over_compute
from nas.results.pareto import DICE_LATENCY, DICE_MACS, DICE_PARAMS, Objective, pareto_front
from reports.plots import curves_plot, front_plots, hover_text, hypervolume_plot
from reports.templates import CSS, SCRIPT, json_script, plotly_js
from reports.trivial import below_trivial_note, ending_note, split_block, trivial_summary

AXIS_NAMES = {"dice": "Dice", "macs": "MACs", "latency_ms": "latency", "params": "params",
              "train_memory_mb": "training memory", "miou": "mIoU", "dice_small": "small-object Dice",
              "hd95": "HD95 (lower is better)"}
STATE_ORDER = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED, TrialState.FAIL)


def _kind(record: TrialRecord) -> str:
    """The point's kind; a family member names itself (``search · family-unet-m1`` for a warm-start trial)."""
    member = family_name(record)
    return KINDS[record.kind][0] + (f" · {esc(member)}" if member else "")


def _state_counts(records: list[TrialRecord]) -> str:
    counts = Counter(r.state for r in records)
    states = [s for s in STATE_ORDER if s in counts]
    detail = " · ".join(f"{esc(s)} {counts[s]}" for s in states)
    kinds = Counter(r.kind for r in records)
    extra = "".join(f" · {KINDS[k][0]} points {kinds[k]}" for k in (RecordKind.COMPRESSED, RecordKind.PRESET)
                    if kinds[k])
    family = family_records(records)
    if family:
        extra += f" · baseline family members {len(family)} (the family front's dashed line)"
    return f"<p><b>Trials:</b> {len(records)}{' — ' + detail if detail else ''}{extra}</p>"


def _conventions(records: list[TrialRecord], config: Mapping[str, Any], conventions: Mapping[str, Any]) -> str:
    devices = sorted({r.latency_device for r in records if r.latency_device})
    device = ", ".join(devices) or conventions.get("latency_device") or conventions.get("device") \
        or "(no latency measured)"
    size = conventions.get("input_size") or config.get("image_size")
    threads = (f", {config['torch_threads']} torch thread(s)"
               if config.get("torch_threads") and "thread" not in device else "")
    fixed_items = [
        "Dice: foreground class, per image, mean over validation images (best epoch), probability > 0.5: what "
        "trials are selected on; images whose ground truth is empty are left out of every mean Dice (predicting "
        "nothing must not win on them). Test Dice "
        "(held-out images, at each model's threshold chosen on validation) is what the finalists and cards claim",
        "MACs: multiply-accumulates of convs/transposed convs/linear per forward pass at batch 1 "
        f"at the stated input size{f' ({size})' if size else ''}; FLOPs = 2 × MACs; norms, activations, "
        "pooling and additions are not counted",
        f"Latency: median batch-1 forward on {device}{threads}: median of repeated forwards after warm-up "
        "runs, eval mode, torch.inference_mode, CUDA-synchronised on GPU",
        f"Hypervolume: area of the (Dice, log10 MACs) front against the reference point Dice {REFERENCE[0]:g}, "
        f"10^{REFERENCE[1]:g} MACs, in Dice × decades; device seconds sum every trial's wall clock, failed ones included",
        "Markers: circle = search trial, diamond = compressed model, star = baseline preset; red = Pareto "
        "front of that plot's two objectives",
    ]
    items = [f"<li>{esc(t)}</li>" for t in fixed_items]
    items += [f"<li><b>{esc(k)}:</b> {esc(v)}</li>" for k, v in conventions.items()]
    return f'<section class="box"><h2>Conventions</h2><ul>{"".join(items)}</ul></section>'


def _checkpoint_cell(path: str | None) -> str:
    """Relative folders become links; anything with a scheme or absolute root stays plain text."""
    if not path:
        return ""
    if urlsplit(path).scheme or urlsplit(path).netloc or path.startswith(("/", "\\")):
        return esc(path)
    href = quote(path.replace("\\", "/"), safe="/._-~")
    return f'<a href="{esc(href)}">{esc(path)}</a>'


def _trial_table(records: list[TrialRecord], fronts: Mapping[str, frozenset[int]], quality: str = "dice") -> str:
    """One row per trial; a search ranked by another quality measure (``miou``, ``hd95``, ...) gets its column."""
    if not records:
        return '<p class="empty">No trials recorded.</p>'
    extra = () if quality in ("dice", "dice_small") else (AXIS_NAMES.get(quality, quality),)
    head = ("#", "kind", "state", "Dice", *extra, "small Dice", "MACs", "FLOPs", "params", "latency ms", "seconds",
            "architecture", "Pareto", "fail reason", "checkpoint")
    rows = []
    for r in records:
        marks = [f"★ {name}" for name, numbers in fronts.items() if r.number in numbers]
        cells = (
            f'<td class="num">{r.number}</td>', f"<td>{_kind(r)}</td>", f"<td>{esc(r.state)}</td>",
            f'<td class="num">{fixed(r.dice, 3)}</td>',
            *(f'<td class="num">{fixed(r.measure(quality), 2 if quality == "hd95" else 3)}</td>' for _ in extra),
            f'<td class="num">{fixed(small_dice(r), 3)}</td>',
            f'<td class="num">{human(r.macs)}</td>', f'<td class="num">{human(r.flops)}</td>',
            f'<td class="num">{human(r.measure("params"))}</td>', f'<td class="num">{fixed(r.latency_ms, 2)}</td>',
            f'<td class="num">{fixed(r.seconds, 1)}</td>', f'<td class="arch">{esc(arch_summary(r))}</td>',
            f'<td class="mark">{" ".join(marks)}</td>', f'<td class="fail">{esc(r.fail_reason or "")}</td>',
            f"<td>{_checkpoint_cell(r.checkpoint)}</td>",
        )
        cls = ' class="pareto"' if marks else ""
        rows.append(f'<tr id="trial-{r.number}"{cls}>{"".join(cells)}</tr>')
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (f'<div class="tablewrap"><table class="trials"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _plot_divs(plots: Mapping[str, Any], ids: tuple[str, ...]) -> str:
    return "".join(f'<div class="plot" id="{i}"></div>' for i in ids if i in plots)


def render_report(records: list[TrialRecord], path, *, title: str, config: dict,
                  conventions: dict | None = None, front_objectives: Sequence[Objective] | None = None,
                  importance: Mapping[str, Any] | None = None,
                  overlays: Mapping[int, Mapping[str, Any]] | None = None,
                  environment: Mapping[str, Any] | None = None,
                  exported: Mapping[int, str] | None = None,
                  finalists: Mapping[str, Any] | None = None, trivial: Mapping[str, Any] | None = None,
                  ending: Mapping[str, Any] | None = None) -> Path:
    """Write the study page to ``path`` atomically and return it; works for empty studies too.

    ``importance``: ``{"evaluator", "n_trials", "targets": {target: {param: share}}, "note"}`` (see
    ``nas.engine.optuna_adapter.importance``). ``overlays``: trial number -> ``{"png": bytes, "images", "dice"}`` or
    ``{"error": text}``. ``exported``: trial number -> its ``best/`` folder (default: front checkpoints).
    ``finalists``: the finalist stage's summary (``finalists/finalists.json``), or None without one.
    ``trivial``: the constant predictors' Dice (``trivial.json``), or None (a run made before it).
    ``ending``: how ``nas-search`` ended (``search_end.json``: ``stopped``, ``timeout``, ``finished``, ``trials``).
    """
    records = sorted(records, key=lambda r: r.number)
    conventions = dict(conventions or {})
    macs = pareto_front(records, DICE_MACS)
    # the models deployed (best/) and carded are the front of the search's own objectives
    chosen = pareto_front(records, tuple(front_objectives)) if front_objectives else macs
    axes = " vs ".join(AXIS_NAMES.get(o.name, o.name) for o in chosen.objectives)
    fronts = {"MACs": macs.numbers, "latency": pareto_front(records, DICE_LATENCY).numbers,
              "params": pareto_front(records, DICE_PARAMS).numbers}
    plots: dict[str, Any] = front_plots(records, chosen.objectives, trivial=split_block(trivial, "val"))
    hv = hypervolume_over_compute(records)
    if hv:
        plots["plot-hv"] = hypervolume_plot(hv)
    if any(r.epoch_dice for r in records):
        plots["plot-curves"] = curves_plot(records, macs.numbers)
    finished = bool(macs.finished)
    sections = [
        f"<h1>{esc(title)}</h1>", "<h2>Run configuration</h2>", kv_table(config), _state_counts(records),
        ending_note(ending), below_trivial_note(records, trivial),
        trivial_summary(trivial, max((r.dice for r in macs.finished if r.kind == RecordKind.SEARCH
                                      and r.dice is not None), default=None)),
        _conventions(records, config, conventions), "<h2>Pareto fronts</h2>",
    ]
    if finished:
        sections.append(f'<div class="plots">{_plot_divs(plots, ("plot-objective", "plot-macs", "plot-latency", "plot-params"))}</div>'
                        '<p class="note">Hover a point for its architecture, costs and metrics; click it to '
                        "select its row in the trial table. Static copies: pareto_*.png / .svg beside this file.</p>")
        if "plot-latency" not in plots:
            sections.append('<p class="note">No latency measured for any finished trial; Dice vs latency plot skipped.</p>')
        missing = sum(r.latency_ms is None for r in macs.finished)
        if "plot-latency" in plots and missing:
            sections.append(f'<p class="note">{missing} finished trial(s) without a latency are not in the latency plot.</p>')
        sections += ["<h2>Hypervolume over compute</h2>",
                     _plot_divs(plots, ("plot-hv",)) or '<p class="empty">No finished search trial.</p>']
    else:
        sections.append('<p class="empty">No finished trials yet</p>')
    sections += ["<h2>Learning curves</h2>",
                 _plot_divs(plots, ("plot-curves",)) or '<p class="empty">No per-epoch Dice recorded.</p>',
                 "<h2>Parameter importance</h2>", importance_section(importance),
                 "<h2>Size-stratified Dice of the Pareto models</h2>", quality_section(chosen.front),
                 "<h2>Finalists (longer training, several seeds, test Dice)</h2>", finalists_section(finalists, trivial),
                 f"<h2>Exported models (Pareto front, {esc(axes)})</h2>",
                 cards_section(chosen.front, config, environment or {}, overlays, exported),
                 "<h2>Trials</h2>", _trial_table(records, fronts, chosen.objectives[0].name)]
    scripts = ""
    if plots:
        hover = {str(r.number): hover_text(r) for r in records}
        scripts = (json_script({"plots": plots, "hover": hover}) + f"<script>{plotly_js()}</script>"
                   + f"<script>{SCRIPT}</script>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{''.join(sections)}\n"
            f"{scripts}\n</body></html>\n")
    return atomic_write_text(path, page)
