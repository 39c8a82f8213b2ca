"""What the benchmark concludes: finalist-over-family pairs, issue 14's goals, the Markdown rows."""
from __future__ import annotations

import statistics
from typing import Any

from .arms import DATASETS


def dominating_pairs(summary: dict[str, Any]) -> list[str]:
    """Finalist-stage pairs where a searched finalist has a higher final Dice than a family member at no
    more MACs, their 95 % intervals not overlapping."""
    done = [e for e in summary.get("entrants") or [] if e.get("ci") and (e.get("costs") or {}).get("macs")]
    return [f"{f['label']} ({f['dice']:.3f}, {f['costs']['macs'] / 1e6:.1f} MMAC) over {b['label']} "
            f"({b['dice']:.3f}, {b['costs']['macs'] / 1e6:.1f} MMAC)"
            for f in done if f["kind"] == "finalist" for b in done
            if b["kind"] == "baseline" and b.get("family") and f["costs"]["macs"] <= b["costs"]["macs"]
            and f["ci"][0] > b["ci"][1]]


def half_cost_match(summary: dict[str, Any]) -> str | None:
    """Issue 25's live test on one finalist stage: the best family member (highest final test Dice) and
    the cheapest searched finalist not worse than it (nas-finalize's match: the paired 95 % interval of
    the Dice difference not below -margin) at no more than half its MACs. None: the stage has no such
    finalist (or no family member)."""
    members = [e for e in summary.get("entrants") or [] if e.get("kind") == "baseline" and e.get("family")
               and e.get("dice") is not None]
    if not members:
        return None
    best = max(members, key=lambda e: e["dice"])
    verdict = next((v for v in summary.get("verdicts") or [] if v["baseline"] == best["label"]), None)
    if verdict is None or not verdict["finalist"] or (verdict["savings"] or {}).get("macs", 0.0) < 2.0:
        return None
    return verdict["text"]


GOALS = {"front": "the searched front dominates the family on >= 2 of 3 datasets",
         "random": "the engine needs <= 1/4 of random search's compute to reach the family",
         "moasha": "the engine needs no more compute than MOASHA to reach the family"}


def goals(datasets: dict[str, dict[str, Any]], wanted: int = len(DATASETS)) -> dict[str, str]:
    """Each goal of issue 14 as met / not met / not measured, with the numbers behind it. A dataset not
    run, or run without the finalist stage, counts as unknown, never as a miss or a hit."""
    hv = [n for n, d in datasets.items() if d["searched_beats_family_every_seed"]]
    met = [n for n in hv if datasets[n]["finalist_pairs"]]
    unknown = wanted - len(datasets) + sum(datasets[n]["finalist_pairs"] is None for n in hv)
    verdict = "met" if len(met) >= 2 else ("not met" if len(met) + unknown < 2 else "not measured")
    out = {GOALS["front"]: f"{verdict}: the searched front's hypervolume above the family's in every seed on "
                           f"{', '.join(hv) or 'none'}, and also a searched finalist above a family member at no more "
                           f"MACs, 95 % intervals apart, on {', '.join(met) or 'none'}; {len(datasets)} of {wanted} "
                           f"datasets run, the finalist stage "
                           f"{'run on each' if all(d['finalist_pairs'] is not None for d in datasets.values()) else 'missing on some (--finalize)'}"}
    for rival, factor in (("random", 0.25), ("moasha", 1.0)):
        lines, verdicts = [], []
        for name, data in datasets.items():
            mine, theirs = data["reach"]["engine searched"], data["reach"].get(rival)
            if theirs is None or mine["seconds"] is None:
                verdicts.append("not measured" if theirs is None else "not met")
                lines.append(f"{name}: {rival} not run" if theirs is None else f"{name}: the engine did not reach it")
                continue
            bound = theirs["seconds"] if theirs["seconds"] is not None else max(theirs["spent_when_not_reached"])
            ok = mine["seconds"] <= factor * bound  # a rival that never reached needed more than it spent
            verdicts.append("met" if ok else ("not met" if theirs["seconds"] is not None else "not measured"))
            said = f"{bound:.0f} s" if theirs["seconds"] is not None else f"not reached in {bound:.0f} s"
            lines.append(f"{name}: {mine['seconds']:.0f} s vs {rival} {said} (medians)")
        verdict = "not met" if "not met" in verdicts else ("met" if set(verdicts) == {"met"} else "not measured")
        out[GOALS[rival]] = f"{verdict} ({'; '.join(lines) or 'no dataset run'})"
    out["make search still ~5 min with the defaults"] = "not measured here"
    return out


LIVE_GOAL = ("issue 25: in >= 3 of 5 seeds a searched finalist not worse than the best family member "
             "at no more than half its MACs")


def live_goal(row: dict[str, Any], wanted: int = 3) -> str:
    """Issue 25's live goal on one dataset's seeds (their finalist stages), with each seed's verdict."""
    staged = [s for s in row["seeds"] if "finalize" in s]
    if not staged:
        return "not measured (no finalist stage: --finalize)"
    hits = [s["seed"] for s in staged if s["finalize"].get("half_cost_match")]
    verdict = "met" if len(hits) >= wanted else ("not met" if len(hits) + len(row["seeds"]) - len(staged) < wanted
                                                   else "not measured")
    return (f"{verdict} on {row['dataset']}: {len(hits)} of {len(staged)} seeds staged"
            + (f" (seeds {', '.join(map(str, hits))})" if hits else ""))



def _reach(entry: dict[str, Any]) -> str:
    said = "not reached" if entry["seconds"] is None else f"{entry['seconds']:.0f} s, {entry['epochs']:.0f} epochs"
    return f"{said} ({entry['reached']}/{entry['seeds']} seeds reached)"


def markdown(row: dict[str, Any]) -> list[str]:
    summary = row["summary"]
    lines = [f"**{row['dataset']}** ({len(row['seeds'])} seed(s), {row['budget_s']:g} s per arm; reference "
             f"{row['reference_note']}: ({row['reference'][0]:g}, {row['reference'][1]:g}))", "",
             "| arm | hypervolume (validation) mean ± std | its front on test: mean ± std (per seed) | models on it (mean) "
             "| compute to reach the family (median) |", "|---|---|---|---:|---|"]
    tested = summary.get("test_hypervolume") or {}
    for arm, (mean, std) in summary["hypervolume"].items():
        models = statistics.fmean(s["trials"][arm] for s in row["seeds"])
        reach = summary["reach"].get(arm)
        test = (f"{tested[arm][0]:.4f} ± {tested[arm][1]:.4f} ("
                + ", ".join(f"{s['test_hypervolume'][arm]:.3f}" for s in row["seeds"]) + ")") if arm in tested else "-"
        lines.append(f"| {arm} | {mean:.4f} ± {std:.4f} | {test} | {models:.1f} | "
                     f"{_reach(reach) if reach else '(the target)' if arm == 'family' else '-'} |")
    lines += ["", "engine searched: (a) without its family warm-start trials' points (their compute counted); family: "
                  "(a)'s warm-start trials plus the members its budget left queued, trained after it from their planned "
                  "specs; compute: the trials' wall seconds and trained epochs summed in trial order."]
    lines += [f"\nseed {s['seed']} finalist stage ({s['finalize']['seconds']:.0f} s): "
              + " ".join(f"Verdict: {v}." for v in s["finalize"]["verdicts"])
              + f" Half-cost match of the best family member: {s['finalize'].get('half_cost_match') or 'none'}."
              for s in row["seeds"] if "finalize" in s]
    return lines


