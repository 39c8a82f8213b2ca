"""Report sections about single models and the study's parameters: model cards, quality, importance.

Inputs are plain data (records, dicts, PNG bytes); nothing here trains, loads or imports Optuna.
"""
from __future__ import annotations

import base64
import shlex
from typing import Any, Mapping

from nas.results.records import TrialRecord

from reports.fmt import esc, fixed, human, kv_table, small_stratum

QUALITY_KEYS = ("dice", "iou", "precision", "sensitivity", "specificity", "hd95")
STRATA = (("small", "< 8 px"), ("medium", "8–32 px"), ("large", "> 32 px"))
NOT_MEASURED = "not measured"


def _stratum_cells(block: Mapping[str, Any]) -> str:
    strata = block.get("size_strata") if isinstance(block.get("size_strata"), dict) else {}
    cells = []
    for name, _ in STRATA:
        s = strata.get(name) if isinstance(strata.get(name), dict) else {}
        detected = s.get("detected")
        cells.append(f'<td class="num">{esc(s.get("count", "—"))}</td>'
                     f'<td class="num">{fixed(detected * 100 if isinstance(detected, (int, float)) else None, 0)}</td>'
                     f'<td class="num">{fixed(s.get("dice"), 3)}</td>')
    return "".join(cells)


def quality_table(rows: list[tuple[str, Mapping[str, Any]]]) -> str:
    """One row per (label, quality block): overall metrics, then count / % detected / Dice per size stratum."""
    head = "".join(f"<th rowspan=2>{esc(k)}</th>" for k in ("", *QUALITY_KEYS))
    head += "".join(f"<th colspan=3>{n} objects ({esc(r)})</th>" for n, r in STRATA)
    sub = "<th>count</th><th>% detected</th><th>Dice</th>" * len(STRATA)
    body = "".join(
        f"<tr><th>{esc(label)}</th>"
        + "".join(f'<td class="num">{fixed(block.get(k), 2 if k == "hd95" else 3)}</td>' for k in QUALITY_KEYS)
        + _stratum_cells(block) + "</tr>"
        for label, block in rows)
    return f'<table class="quality"><thead><tr>{head}</tr><tr>{sub}</tr></thead><tbody>{body}</tbody></table>'


def quality_section(front: tuple[TrialRecord, ...]) -> str:
    """Size-stratified quality of the Pareto models (validation, and test when measured)."""
    rows = [(f"trial {r.number} ({split})", r.quality(split)) for r in front for split in ("val", "test")
            if r.quality(split)]
    intro = ("<p>Objects are the ground truth's connected components, sized by their equivalent diameter "
             "2·√(area/π): small &lt; 8 px, medium 8–32 px, large &gt; 32 px. An object is detected when at least "
             "half of its pixels are predicted; “% detected” pools the objects of all images; a stratum's Dice "
             "is measured in the neighbourhood of its objects (a few px around them) and averaged over the images "
             "that have such objects. HD95 in px. Definitions: <code>nas/train/metrics.py</code>.</p>")
    if not rows:
        return intro + f'<p class="empty">Size-stratified Dice: {NOT_MEASURED} (no trial of this run carries quality metrics).</p>'
    return intro + quality_table(rows)


def importance_section(importance: Mapping[str, Any] | None) -> str:
    """Table of importances per target with inline bars; a note when they could not be computed."""
    if importance is None:
        return '<p class="empty">Parameter importance: not computed (the report was built without the study).</p>'
    targets: Mapping[str, Mapping[str, float]] = importance.get("targets") or {}
    note = importance.get("note")
    if not targets:
        return f'<p class="empty">Parameter importance: {esc(note or "not enough trials")}.</p>'
    # ordered by the first target's (Dice) importance, then the others'
    params = sorted({p for t in targets.values() for p in t},
                    key=lambda p: tuple(-float(t.get(p) or 0.0) for t in targets.values()) + (p,))
    head = "<th>parameter</th>" + "".join(f"<th>{esc(t)}</th>" for t in targets)
    rows = []
    for p in params:
        cells = []
        for values in targets.values():
            v = values.get(p)
            bar = f'<span class="bar" style="width:{v * 8:.2f}em"></span>' if isinstance(v, (int, float)) else ""
            cells.append(f"<td>{bar}{fixed(v, 3)}</td>")
        rows.append(f"<tr><th>{esc(p)}</th>{''.join(cells)}</tr>")
    text = (f"<p>{esc(importance.get('evaluator', 'Optuna importance evaluator'))} on "
            f"{esc(importance.get('n_trials', '?'))} finished trials; importances of each target sum to 1.</p>")
    extra = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"{text}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{extra}"


def _css_colour(colour: Any) -> str:
    """A stored ``[R, G, B]`` as CSS (the bar blue when a run did not store class colours)."""
    ok = isinstance(colour, (list, tuple)) and len(colour) == 3 and all(isinstance(c, int) for c in colour)
    return f"rgb({colour[0]},{colour[1]},{colour[2]})" if ok else "#1f77b4"


def _bar(width_em: float, colour: Any) -> str:
    return f'<span class="bar" style="width:{width_em:.2f}em;background:{_css_colour(colour)}"></span>'


def class_bars(record: TrialRecord) -> str:
    """Per-class validation Dice and IoU of a K-class model as bars in the class colours ('' when binary)."""
    quality = record.result.quality
    if (quality.num_classes or 2) <= 2 or not quality.per_class:
        return ""
    names = list(quality.class_names or ())
    colours = list(quality.class_colours or ())
    rows = []
    for name, block in quality.per_class.items():
        value = names.index(name) if name in names else None
        colour = colours[value] if value is not None and value < len(colours) else None
        cells = []
        for key in ("dice", "iou"):
            score = block.get(key)
            bar = _bar(score * 8, colour) if isinstance(score, (int, float)) else ""
            cells.append(f'<td class="classbar">{bar}{fixed(score, 3)}</td>')
        label = f"{value if value is not None else '?'} {name}"
        rows.append(f"<tr><th>{_bar(0.8, colour)}{esc(label)}</th>{''.join(cells)}</tr>")
    return ('<h4>Per-class Dice and IoU (validation, argmax)</h4><table class="classes"><thead><tr><th>class</th>'
            f'<th>Dice</th><th>IoU</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="note">mIoU {fixed(quality.miou, 3)} · mean class Dice {fixed(quality.dice, 3)} '
            "(foreground classes; a class absent from validation has none).</p>")


def confusion_table(record: TrialRecord) -> str:
    """The validation confusion matrix (pixels; rows truth, columns prediction), shaded by the row share."""
    quality = record.result.quality
    matrix = quality.confusion
    if (quality.num_classes or 2) <= 2 or not matrix:
        return ""
    names = list(quality.class_names or ()) or [str(i) for i in range(len(matrix))]
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for truth, row in zip(names, matrix):
        total = sum(row) or 1
        cells = "".join(f'<td class="num" style="background:rgba(214,39,40,{0.85 * count / total:.2f})" '
                        f'title="{100 * count / total:.1f} % of the {esc(truth)} pixels">{count:,}</td>' for count in row)
        rows.append(f"<tr><th>{esc(truth)}</th>{cells}</tr>")
    return ('<h4>Confusion matrix (validation pixels)</h4><table class="confusion"><thead><tr>'
            f'<th>truth \\ prediction</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            '<p class="note">Rows: ground-truth class; columns: predicted class (argmax); shade: share of the '
            "row's pixels. The diagonal is what is right.</p>")


def reproduce_command(config: Mapping[str, Any]) -> str:
    """The ``nas-search`` command line that re-runs the search this model came from, with its budget
    (``--trials`` and, when it had one, ``--timeout``: a search cut short by it is not reproduced without)."""
    flags = (("space", "--space"), ("data", "--data"), ("trials", "--trials"), ("timeout", "--timeout"),
             ("epochs", "--epochs"), ("image_size", "--image-size"), ("batch_size", "--batch-size"),
             ("seed", "--seed"), ("device", "--device"))
    parts = ["nas-search"] + [f"{flag} {shlex.quote(str(config[key]))}" for key, flag in flags if config.get(key) is not None]
    return " ".join(parts)


def _spec_table(record: TrialRecord) -> str:
    spec = record.spec or record.params
    if not spec:
        return '<p class="empty">no spec recorded</p>'
    readable = {k: (" → ".join(map(str, v)) or "—" if isinstance(v, list) else v) for k, v in spec.items()}
    return kv_table(readable)


def _costs(record: TrialRecord) -> dict[str, str]:
    shape = record.result.costs.input_shape
    at = f" at {'×'.join(map(str, shape))}" if shape else ""
    return {
        "parameters": human(record.measure("params")),
        "MACs": human(record.macs, "MAC") + at,
        "FLOPs (2 × MACs)": human(record.flops, "FLOP"),
        "latency": _latency(record),
    }


def _latency(record: TrialRecord) -> str:
    """The end-of-search re-measurement with its spread (and a noisy flag), else the search's own number."""
    if record.latency_ms is None:
        return "not measured"
    text = f"{fixed(record.latency_ms, 2)} ms on {record.latency_device or '?'}"
    again = record.result.provenance.get("latency_remeasured")
    if isinstance(again, Mapping):
        text += (f" (re-measured after the search: median of {again.get('rounds')} interleaved rounds, "
                 f"{again.get('engine')}, spread {100 * float(again.get('spread') or 0):.0f} %"
                 + ("; noisy: re-measure on a quiet machine" if again.get("noisy") else "") + ")")
    return text


def _metrics(record: TrialRecord) -> dict[str, str]:
    classes = record.result.quality.num_classes or 2
    selection = "(selection, p > 0.5)" if classes == 2 else f"(selection: mean over the {classes - 1} foreground classes, argmax)"
    out = {f"validation Dice {selection}": f"{fixed(record.dice, 4)} (best epoch {record.best_epoch})"}
    if classes > 2:
        out["validation mIoU"] = fixed(record.result.quality.miou, 4)
    threshold = record.result.quality.threshold
    if threshold is not None:
        out["threshold (chosen on validation)"] = fixed(threshold, 2)
    at = f" at {fixed(threshold, 2)}" if threshold is not None else ""
    for split in ("test", "val"):  # test first: the held-out claim
        block = record.quality(split)
        for key in QUALITY_KEYS:
            if isinstance(block.get(key), (int, float)) and not (split == "val" and key == "dice" and threshold is None):
                out[f"{split} {key}{at}"] = fixed(block[key], 2 if key == "hd95" else 4)
    small = small_stratum(record)
    out["small-object Dice (val)"] = fixed(small.get("dice"), 4) if small is not None else NOT_MEASURED
    if record.seconds is not None:
        out["trial time"] = f"{fixed(record.seconds, 1)} s on {record.result.timing.train_device or '?'}"
    return out


def model_card(record: TrialRecord, folder: str, config: Mapping[str, Any], environment: Mapping[str, Any],
               overlay: Mapping[str, Any] | None) -> str:
    """Spec, costs, metrics, how to reproduce and reload it, the environment, and its predictions."""
    load = f'model, spec = nas.load_checkpoint("{folder}")'
    parts = [
        f'<div class="card" id="card-{record.number}"><h3>Trial {record.number} — <code>{esc(folder)}</code></h3>',
        '<div class="cols"><div><h4>Architecture</h4>', _spec_table(record), "</div>",
        "<div><h4>Costs</h4>", kv_table(_costs(record)), "<h4>Metrics</h4>", kv_table(_metrics(record)),
        "</div></div>", class_bars(record), confusion_table(record),
        f"<h4>Reproduce</h4><pre>{esc(reproduce_command(config))}</pre>",
        f"<p>Trial {record.number} of that search (same seed, same sampler). Reload without pickles:</p>"
        f"<pre>import nas\n{esc(load)}</pre>",
        "<h4>Environment</h4><p class=\"note\">Package versions of the machine that built this report; "
        "devices as recorded by the trials.</p>", kv_table(environment) if environment else '<p class="empty">not recorded</p>',
    ]
    parts.append(overlay_figure(overlay) if overlay else "")
    parts.append("</div>")
    return "".join(parts)


def overlay_figure(overlay: Mapping[str, Any]) -> str:
    """One PNG grid (rows: images; columns: image, ground truth, prediction, errors) as a data URI."""
    if overlay.get("error"):
        return f'<p class="note">Predictions: {esc(overlay["error"])}</p>'
    data = base64.b64encode(overlay["png"]).decode("ascii")
    names = overlay.get("images") or []
    dice = overlay.get("dice") or []
    caption = "; ".join(f"{esc(n)}: Dice {fixed(d, 3)}" for n, d in zip(names, dice))
    classes = overlay.get("classes") or []  # K classes: [name, [R, G, B]] per label value
    legend = ("(white: true positive, red: false positive, cyan: false negative)" if not classes else
              "(white: right class, red: wrong class or false positive, cyan: missed); classes: "
              + " ".join(f"{_bar(0.8, colour)}{esc(name)}" for name, colour in classes[1:]))
    return ("<h4>Predictions on validation images</h4>"
            f"<p class=\"note\">Columns: image · ground truth · prediction · errors {legend}.</p>"
            f'<img class="overlay" alt="predictions of trial" src="data:image/png;base64,{data}">'
            f'<p class="note">{caption}'
            + (f"; inference: {esc(overlay['inference'])}" if overlay.get("inference") else "") + "</p>")


def cards_section(front: tuple[TrialRecord, ...], config: Mapping[str, Any], environment: Mapping[str, Any],
                  overlays: Mapping[int, Mapping[str, Any]] | None, exported: Mapping[int, str] | None) -> str:
    if exported is None:
        exported = {r.number: f"best/{r.checkpoint.rstrip('/').split('/')[-1]}" for r in front if r.checkpoint}
    cards = [model_card(r, exported[r.number], config, environment, (overlays or {}).get(r.number))
             for r in front if r.number in exported]
    if not cards:
        return '<p class="empty">No exported models (no finished trial with a checkpoint on the front).</p>'
    note = "" if overlays else '<p class="note">Prediction overlays: not rendered for this report.</p>'
    return note + f'<div class="cards">{"".join(cards)}</div>'
