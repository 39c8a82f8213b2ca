"""The report's "Finalists" section: pure rendering of ``finalists/finalists.json`` (``nas.stages.finalist_training``).

What a user deploys is a finalist trained properly, so this section carries the claims: test Dice per
seed, mean +- std and its 95 % interval, the other metrics and costs, which seed ``best/`` holds, how
well the short search ranked the finalists (Kendall tau) and one verdict per baseline, and beside them
the trivial predictor (one label everywhere) on the same images: the floor every final Dice is above.
"""
from __future__ import annotations

from typing import Any, Mapping

from reports.fmt import esc, fixed, human
from reports.trivial import split_block


def _ci(entry: Mapping[str, Any]) -> str:
    ci = entry.get("ci")
    return f"[{fixed(ci[0], 3)}, {fixed(ci[1], 3)}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else "—"


def _seeds(entry: Mapping[str, Any]) -> str:
    parts = [f"{esc(s.get('seed'))}: {fixed(s.get('dice'), 3)}" for s in entry.get("seeds") or []]
    parts += [f"{esc(seed)}: failed ({esc(reason)})" for seed, reason in (entry.get("failed") or {}).items()]
    return "<br>".join(parts) or "—"


def _deployed(entry: Mapping[str, Any]) -> str:
    chosen = entry.get("chosen")
    if entry.get("kind") != "finalist" or not chosen:
        return "—"
    return (f"seed {esc(chosen.get('seed'))}, threshold {fixed(chosen.get('threshold'), 2)} "
            f"(val Dice {fixed(chosen.get('val_dice'), 3)})")


def _row(entry: Mapping[str, Any], split: str) -> str:
    metrics, costs = entry.get("metrics") or {}, entry.get("costs") or {}
    mean = (f"{fixed(entry.get('dice'), 3)} ± {fixed(entry.get('std'), 3)}" if entry.get("dice") is not None
            else "not trained yet")
    cells = [esc(entry.get("label")), esc(entry.get("kind")), fixed(entry.get("search_dice"), 3), mean, _ci(entry),
             _seeds(entry), fixed(metrics.get("iou"), 3), fixed(metrics.get("hd95"), 2), human(costs.get("macs")),
             human(costs.get("params")), fixed(costs.get("latency_ms"), 2), _deployed(entry)]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _tau(tau: Mapping[str, Any] | None) -> str:
    tau = tau or {}
    if tau.get("value") is None:
        return (f"<p>Search Dice vs final Dice: Kendall tau not computed ({esc(tau.get('n', 0))} entrant(s) with "
                "both; it needs two with different values).</p>")
    return (f"<p>Search Dice vs final Dice: <b>Kendall tau {tau['value']:+.2f}</b> over {esc(tau.get('n'))} entrants "
            "(+1: the short search ranked them exactly as the longer training did; 0: no better than chance; "
            "with few entrants, a single swapped pair moves it a lot).</p>")


def _trivial_row(block: Mapping[str, Any] | None, columns: int) -> str:
    """The best constant predictor's Dice on the finalists' split, in the final Dice column."""
    if not block:
        return ""
    cells = [f"{esc(block.get('best'))} (trivial)", "trivial", "—", fixed(block.get("dice"), 3)]
    cells += ["—"] * (columns - len(cells))
    return '<tr class="trivial">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def finalists_section(summary: Mapping[str, Any] | None, trivial: Mapping[str, Any] | None = None) -> str:
    """The whole section; a one-line note when the run has no finalist stage. ``trivial``: the run's
    ``trivial.json`` (used when the summary, older than it, carries no ``trivial`` block)."""
    if not summary:
        return ('<p class="empty">No finalist stage in this run (<code>nas-search --finalists K</code> or '
                "<code>nas-finalize --run DIR</code>): the Dice values above are validation Dice of short, "
                "single-seed trainings, selected on the same images, so optimistic.</p>")
    settings = summary.get("settings") or {}
    split = settings.get("split", "test")
    label = "test" if split == "test" else "validation (no test split: optimistic)"
    intro = (f"<p>Pareto members (spread along the front) and baselines retrained for "
             f"{esc(settings.get('final_epochs'))} epochs (search: {esc(settings.get('search_epochs'))}) with seeds "
             f"{esc(', '.join(map(str, settings.get('seeds') or [])))}. <b>Final Dice is {esc(label)} Dice</b> "
             f"({esc(settings.get('split_note') or '')}), at each model's threshold chosen on validation; the search "
             "Dice is the validation Dice the search selected on. Interval: 95 % percentile bootstrap "
             f"({esc(settings.get('bootstrap'))} replicates) over {esc(label.split(' ')[0])} images and seeds. "
             f"<code>best/</code> holds {esc(settings.get('choice', 'the chosen seed'))}.</p>")
    head = ("entrant", "kind", "search Dice (val)", f"final Dice ({label.split(' ')[0]}) mean ± std", "95 % CI",
            "Dice per seed", "IoU", "HD95 px", "MACs", "params", "latency ms", "best/ holds")
    floor = summary.get("trivial") or split_block(trivial, split)
    rows = "".join(_row(e, split) for e in summary.get("entrants") or []) + _trivial_row(floor, len(head))
    table = (f'<div class="tablewrap"><table class="finalists"><thead><tr>'
             f'{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead><tbody>{rows}</tbody></table></div>')
    verdicts = summary.get("verdicts") or []
    margin = settings.get("margin")
    said = ("<h3>Against the baselines</h3><p class=\"note\">The cheapest finalist (MACs, then latency, then "
            "parameters) whose Dice is not worse than the baseline's: the lower end of the 95 % interval of the "
            f"paired Dice difference (same images) is at least -{esc(margin)}.</p><ul>"
            + "".join(f"<li>{esc(v.get('text'))}</li>" for v in verdicts) + "</ul>") if verdicts else \
        '<p class="empty">No baseline in this run (<code>--baselines</code>): no verdict.</p>'
    if floor:
        table += (f'<p class="note">Last row: {esc(floor.get("best"))} (trivial), one label predicted everywhere, '
                  f"scores {fixed(floor.get('dice'), 3)} on the same {esc(label.split(' ')[0])} images under the same "
                  "Dice convention: a finalist is only worth its distance above it.</p>")
    return intro + table + _tau(summary.get("tau")) + said
