"""Pareto maths on hand-made records, and the self-contained HTML report."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from nas.results.records import TrialRecord
from reports import (
    DICE_MACS,
    REFERENCE,
    Objective,
    ParetoFront,
    dominates,
    figure_pareto,
    hypervolume_2d,
    hypervolume_over_compute,
    pareto_front,
    render_report,
    save_static_figures,
)

MAX_MIN = ("maximize", "minimize")


def rec(number, dice=None, macs=None, state="COMPLETE", metrics=None, **kw) -> TrialRecord:
    return TrialRecord.from_metrics(number, state, metrics, dice=dice, macs=macs, **kw)


def numbers(records) -> list[int]:
    return [r.number for r in records]


# ----------------------------------------------------------------------------- dominates


def test_dominates_mixed_directions():
    assert dominates((0.9, 100), (0.8, 200), MAX_MIN)
    assert dominates((0.9, 100), (0.9, 200), MAX_MIN)  # equal dice, fewer MACs
    assert not dominates((0.9, 300), (0.8, 200), MAX_MIN)  # trade-off
    assert not dominates((0.8, 200), (0.9, 100), MAX_MIN)
    assert not dominates((0.9, 100), (0.9, 100), MAX_MIN)  # equal: neither dominates
    assert dominates((1.0,), (2.0,), ("minimize",))
    assert not dominates((math.nan, 1), (0.5, 2), MAX_MIN)
    assert not dominates((0.5, 2), (math.nan, 3), MAX_MIN)


def test_dominates_rejects_bad_input():
    with pytest.raises(ValueError):
        dominates((1, 2), (1,), MAX_MIN)
    with pytest.raises(ValueError):
        dominates((1,), (2,), ("max",))
    with pytest.raises(ValueError):
        Objective("dice", "up")
    with pytest.raises(ValueError):
        Objective("not_a_field", "maximize")


# ----------------------------------------------------------------------------- pareto_front


def test_known_front_sorted_by_second_objective():
    records = [
        rec(0, 0.70, 100),  # front (cheapest)
        rec(1, 0.80, 300),  # front
        rec(2, 0.75, 400),  # dominated by 1
        rec(3, 0.90, 900),  # front (best dice)
        rec(4, 0.60, 150),  # dominated by 0
        rec(5, 0.85, 500),  # front
    ]
    result = pareto_front(records[::-1], DICE_MACS)
    assert isinstance(result, ParetoFront)
    assert result.objectives == DICE_MACS
    assert numbers(result.front) == [0, 1, 5, 3]
    assert numbers(result.dominated) == [2, 4]
    assert result.unfinished == ()
    assert result.numbers == {0, 1, 3, 5}
    macs = [r.macs for r in result.front]
    assert macs == sorted(macs)


def test_exact_ties_both_stay_on_front():
    records = [rec(0, 0.8, 200), rec(1, 0.8, 200), rec(2, 0.7, 200), rec(3, 0.8, 300)]
    result = pareto_front(records, DICE_MACS)
    assert numbers(result.front) == [0, 1]
    assert numbers(result.dominated) == [2, 3]


def test_missing_values_and_failed_go_to_unfinished():
    records = [
        rec(0, 0.8, 200),
        rec(1, None, 100),
        rec(2, math.nan, 100),
        rec(3, 0.99, None),
        rec(4, 0.99, 10, state="FAIL", message="OOM"),
        rec(5, 0.99, 10, state="RUNNING"),
        rec(6, 0.99, 10, state="PRUNED"),
    ]
    result = pareto_front(records, DICE_MACS)
    assert numbers(result.front) == [0]
    assert result.dominated == ()
    assert numbers(result.unfinished) == [1, 2, 3, 4, 5, 6]
    # latency missing only matters when latency is an objective
    lat = pareto_front(records, (Objective("dice", "maximize"), Objective("latency_ms", "minimize")))
    assert lat.front == () and len(lat.unfinished) == len(records)


def test_three_objectives():
    objectives = (Objective("dice", "maximize"), Objective("macs", "minimize"),
                  Objective("latency_ms", "minimize"))
    records = [
        rec(0, 0.8, 100, latency_ms=5.0),
        rec(1, 0.8, 100, latency_ms=3.0),  # dominates 0
        rec(2, 0.9, 200, latency_ms=9.0),  # front: best dice
        rec(3, 0.7, 150, latency_ms=1.0),  # front: fastest (would be dominated on dice/macs alone)
        rec(4, 0.7, 150, latency_ms=2.0),  # dominated by 3
    ]
    result = pareto_front(records, objectives)
    assert numbers(result.front) == [1, 3, 2]  # by macs ascending
    assert numbers(result.dominated) == [0, 4]
    assert numbers(pareto_front(records, DICE_MACS).front) == [0, 1, 2]  # 0 and 1 tie on two axes


def test_single_objective_and_empty():
    result = pareto_front([rec(0, 0.5, 1), rec(1, 0.9, 1), rec(2, 0.9, 5)], (Objective("dice", "maximize"),))
    assert numbers(result.front) == [1, 2]
    empty = pareto_front([], DICE_MACS)
    assert empty.front == empty.dominated == empty.unfinished == ()
    with pytest.raises(ValueError):
        pareto_front([rec(0, 0.5, 1)], ())


def test_bruteforce_cross_check_300_random():
    rng = np.random.default_rng(1234)
    objectives = (Objective("dice", "maximize"), Objective("macs", "minimize"),
                  Objective("latency_ms", "minimize"))
    records = []
    for i in range(300):
        # coarse grids force plenty of ties and partial ties
        records.append(rec(i, float(rng.integers(0, 20)) / 20, int(rng.integers(1, 30)) * 1_000_000,
                           latency_ms=float(rng.integers(1, 10)),
                           state="FAIL" if rng.random() < 0.05 else "COMPLETE"))
    for objs in (objectives, objectives[:2]):
        directions = [o.direction for o in objs]
        done = [r for r in records if r.state == "COMPLETE"]
        vec = {r.number: [getattr(r, o.name) for o in objs] for r in done}
        expected = {a for a in vec if not any(dominates(vec[b], vec[a], directions) for b in vec if b != a)}
        result = pareto_front(records, objs)
        assert set(numbers(result.front)) == expected
        assert set(numbers(result.dominated)) == set(vec) - expected
        assert len(result.unfinished) == len(records) - len(done)
        keys = [(r.macs, r.number) for r in result.front]
        assert [k[0] for k in keys] == sorted(k[0] for k in keys)


def test_two_thousand_records_is_fast():
    rng = np.random.default_rng(0)
    records = [rec(i, float(rng.random()), int(rng.integers(1, 10**9))) for i in range(2000)]
    import time

    start = time.process_time()  # CPU time: what another process on the machine takes does not count
    result = pareto_front(records, DICE_MACS)
    assert time.process_time() - start < 2.0  # typically ~0.05 s
    assert len(result.front) + len(result.dominated) == 2000


# ----------------------------------------------------------------------------- HTML report

CONFIG = {"space": "resunet", "data": "synthetic", "trials": 6, "epochs": 3, "image_size": 64,
          "seed": 0, "device": "cpu", "study": "demo", "storage": "sqlite:///study.db"}


def study() -> list[TrialRecord]:
    common = dict(latency_device="cpu (test)", seconds=12.5, best_epoch=2)
    return [
        rec(0, 0.70, 120_000_000, flops=240_000_000, param_count=45_000, latency_ms=3.2,
            params={"depth": 3, "width": 8, "lr": 0.001}, epoch_dice=(0.3, 0.6, 0.7),
            checkpoint="trials/0000", **common),
        rec(1, 0.82, 900_000_000, flops=1_800_000_000, param_count=1_200_000, latency_ms=8.1,
            params={"depth": 4, "width": 16}, epoch_dice=(0.5, 0.8, 0.82),
            checkpoint="trials/0001", **common),
        rec(2, 0.65, 950_000_000, flops=1_900_000_000, param_count=1_300_000, latency_ms=9.0,
            params={"depth": 4, "width": 16}, epoch_dice=(0.4, 0.6, 0.65), **common),
        rec(3, None, None, state="FAIL", message="<script>alert(1)</script>",
            params={"depth": 5, "width": 64}),
        rec(4, None, None, state="RUNNING", params={"depth": 2}),
        rec(5, 0.90, 2_500_000_000, flops=5_000_000_000, param_count=9_000_000, latency_ms=20.0,
            params={"depth": 5, "width": 32}, epoch_dice=(0.6, 0.9, 0.88), **common),
    ]


def row(page: str, number: int) -> str:
    match = re.search(rf'<tr id="trial-{number}"[^>]*>.*?</tr>', page, flags=re.S)
    assert match, f"no row for trial {number}"
    return match.group(0)


def assert_self_contained(page: str) -> None:
    """Inline scripts only: no external script, stylesheet, font or image in the page's own markup.

    The embedded plotly.js bundle is left out of the scan: it contains URL strings for features the
    page never uses (map tiles, the logo link); the browser test checks nothing is fetched.
    """
    assert page.count("<script>/**\n* plotly.js v") <= 1
    lowered = re.sub(r"<script>/\*\*\n\* plotly\.js v.*?</script>", "", page, flags=re.S).lower()
    for needle in ('src="http', "src='http", 'href="http', "href='http", "<script src", "<link",
                   "url(http", "@import", "cdn.plot.ly"):
        assert needle not in lowered, needle
    assert "<?xml" not in page and "<!doctype svg" not in lowered


def payload(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, flags=re.S)
    assert match, "no report data"
    return json.loads(match.group(1))


def traces(page: str, plot_id: str) -> list[dict]:
    return payload(page)["plots"][plot_id]["traces"]


def marker_numbers(page: str, plot_id: str) -> set[int]:
    return {n for t in traces(page, plot_id) if t["mode"] == "markers" for n in t["customdata"]}


def test_render_report_content(tmp_path):
    out = render_report(study(), tmp_path / "report.html", title="Demo <study>", config=CONFIG,
                        conventions={"input_size": "1x64x64"})
    assert out == tmp_path / "report.html"
    page = out.read_text(encoding="utf-8")
    for plot in ("plot-macs", "plot-latency", "plot-params", "plot-hv", "plot-curves"):
        assert f'<div class="plot" id="{plot}"></div>' in page
    assert page.count("* plotly.js v") == 1  # the bundle is embedded once, not per plot
    assert "Demo &lt;study&gt;" in page
    for key in CONFIG:
        assert f"<th>{key}</th>" in page
    assert "COMPLETE 4" in page and "FAIL 1" in page and "RUNNING 1" in page
    assert "Dice: foreground class, per image, mean over validation images (best epoch)" in page
    assert "FLOPs = 2 × MACs" in page and "1x64x64" in page
    assert "median batch-1 forward on cpu (test)" in page
    for n in range(6):
        assert f'<td class="num">{n}</td>' in row(page, n)
    front = pareto_front(study(), DICE_MACS).numbers
    assert front == {0, 1, 5}
    for n in range(6):
        assert ("★ MACs" in row(page, n)) == (n in front)
    assert "0.820" in row(page, 1) and "900 M" in row(page, 1) and "1.8 G" in row(page, 1)
    assert "depth=4, width=16" in row(page, 1) and "1.2 M" in row(page, 1)
    assert '<a href="trials/0001">' in row(page, 1)
    assert "<a " not in row(page, 2)
    # the malicious fail reason is escaped, never live markup
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in row(page, 3)
    # interactive fronts: every finished trial is a point, the front trace holds exactly the front
    data = payload(page)
    assert marker_numbers(page, "plot-macs") == {0, 1, 2, 5}
    front_trace = next(t for t in traces(page, "plot-macs") if t["name"] == "Pareto front")
    assert sorted(front_trace["customdata"]) == [0, 1, 5]
    assert data["plots"]["plot-macs"]["layout"]["xaxis"]["type"] == "log"
    assert data["plots"]["plot-params"]["layout"]["xaxis"]["type"] == "log"
    assert "type" not in data["plots"]["plot-latency"]["layout"]["xaxis"]
    hover = data["hover"]["1"]
    assert "trial 1" in hover and "Dice 0.820" in hover and "MACs 900 M" in hover and "depth=4" in hover
    assert "latency 8.10 ms on cpu (test)" in hover
    assert "plotly_click" in page and "scrollIntoView" in page
    # learning curves: one line per finished trial with epochs, separated by nulls
    curves = traces(page, "plot-curves")
    assert sum(t["y"].count(None) for t in curves if t["mode"] == "lines") == 4
    assert_self_contained(page)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_render_report_is_deterministic(tmp_path):
    a = render_report(study(), tmp_path / "a.html", title="t", config=CONFIG).read_bytes()
    b = render_report(study(), tmp_path / "b.html", title="t", config=CONFIG).read_bytes()
    assert a == b


def test_empty_study(tmp_path):
    page = render_report([], tmp_path / "r.html", title="empty", config={}).read_text(encoding="utf-8")
    assert "No finished trials yet" in page and "<script" not in page
    assert "No trials recorded." in page
    failed_only = [rec(0, state="FAIL", message="boom"), rec(1, state="RUNNING")]
    page = render_report(failed_only, tmp_path / "r.html", title="t", config=CONFIG).read_text(encoding="utf-8")
    assert "No finished trials yet" in page and "<script" not in page
    assert "boom" in row(page, 0) and "RUNNING" in row(page, 1)
    assert "No exported models" in page
    assert_self_contained(page)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_no_latency_anywhere(tmp_path):
    records = [r.updated(latency_ms=None, latency_device=None) for r in study()]
    page = render_report(records, tmp_path / "r.html", title="t", config={"device": "cpu"}).read_text("utf-8")
    assert 'id="plot-latency"' not in page and 'id="plot-macs"' in page
    assert "plot-latency" not in payload(page)["plots"]
    assert "plot skipped" in page
    assert "(no latency measured)" in page
    assert "—" in row(page, 0)


def test_overwrites_atomically(tmp_path):
    path = tmp_path / "sub" / "r.html"
    render_report([], path, title="first", config={})
    render_report(study(), path, title="second", config={})
    assert "second" in path.read_text("utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["r.html"]


def big_study(n: int = 1000, seed: int = 7) -> list[TrialRecord]:
    """``n`` trials with every field a real search fills, quality metrics included."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        if i % 25 == 0:
            records.append(rec(i, state="FAIL", message=f"error {i}", seconds=1.0))
            continue
        macs = int(10 ** rng.uniform(7, 10))
        strata = {k: {"count": int(rng.integers(0, 50)), "detected": float(rng.random()), "dice": float(rng.random())}
                  for k in ("small", "medium", "large")}
        quality_block = {"val": {"dice": 0.5, "iou": 0.4, "precision": 0.6, "sensitivity": 0.5, "specificity": 0.99,
                                 "hd95": 3.5, "size_strata": strata}}
        records.append(rec(i, float(rng.uniform(0.3, 0.9)), macs, flops=2 * macs,
                           param_count=int(macs / 100), latency_ms=float(macs / 1e8 * rng.uniform(0.8, 1.2)),
                           latency_device="cpu", seconds=float(rng.uniform(5, 50)), best_epoch=3,
                           params={"depth": int(rng.integers(2, 6)), "base_width": int(rng.integers(8, 33))},
                           spec={"encoder_widths": [8, 16, 32], "decoder_widths": [8, 16], "block": "basic"},
                           checkpoint=f"trials/trial_{i:04d}",
                           metrics={"quality": quality_block, "train_device": "cpu"},
                           epoch_dice=tuple(float(v) for v in rng.uniform(0.2, 0.9, size=10))))
    return records


def test_thousand_records(tmp_path):
    import time

    records = big_study()
    start = time.process_time()  # CPU time: the same on a busy machine as on a quiet one
    path = render_report(records, tmp_path / "big.html", title="big", config=CONFIG)
    seconds = time.process_time() - start
    page = path.read_text("utf-8")
    assert page.count('<tr id="trial-') == 1000
    assert len(payload(page)["hover"]) == 1000
    assert marker_numbers(page, "plot-macs") == {r.number for r in records if r.state == "COMPLETE"}
    assert seconds < 10, seconds
    assert path.stat().st_size < 12e6  # plotly.js is ~4.8 MB of it
    assert_self_contained(page)


def test_figure_and_static_export(tmp_path):
    front = pareto_front(study(), DICE_MACS)
    fig = figure_pareto(front, "macs")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "MACs" in ax.get_xlabel()
    labels = {t.get_text() for t in ax.texts}
    assert {"0", "1", "2", "5"} <= labels
    paths = save_static_figures(front, tmp_path / "figs")
    names = [f"pareto_{x}.{ext}" for x in ("macs", "latency", "params") for ext in ("png", "svg")]
    assert [p.name for p in paths] == names
    for p in paths:
        data = p.read_bytes()
        if p.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert b"<svg" in data and b"Validation Dice" in data
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(names)
    # empty input still yields every figure (with a note), so callers can rely on the files
    assert len(save_static_figures([], tmp_path / "empty")) == 6


def test_reports_package_imports_no_heavy_deps():
    code = ("import sys, reports; bad = [m for m in ('torch', 'optuna', 'matplotlib.pyplot') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- hypervolume


def test_hypervolume_2d_hand_cases():
    ref = (0.0, 10.0)
    assert hypervolume_2d([], ref) == 0.0
    assert hypervolume_2d([(0.5, 8.0)], ref) == pytest.approx(0.5 * 2.0)
    # staircase: (0.5 @ 6) and (0.8 @ 8): 0.5*(10-6) + (0.8-0.5)*(10-8)
    assert hypervolume_2d([(0.5, 6.0), (0.8, 8.0)], ref) == pytest.approx(2.0 + 0.6)
    # a dominated point and a duplicate add nothing; order does not matter
    assert hypervolume_2d([(0.8, 8.0), (0.4, 9.0), (0.5, 6.0), (0.5, 6.0)], ref) == pytest.approx(2.6)
    # points no better than the reference on an axis are outside; NaN ignored
    assert hypervolume_2d([(0.9, 10.0), (0.0, 5.0), (math.nan, 1.0), (0.2, 11.0)], ref) == 0.0
    assert hypervolume_2d([(1.0, 0.0)], REFERENCE) == pytest.approx(REFERENCE[1])


def test_hypervolume_2d_matches_a_grid_count():
    rng = np.random.default_rng(3)
    points = [(float(d), float(c)) for d, c in zip(rng.random(12), rng.uniform(1, 9, 12))]
    ref = (0.0, 10.0)
    ds, cs = np.meshgrid(np.linspace(0, 1, 801)[:-1] + 1 / 1600, np.linspace(0, 10, 801)[:-1] + 1 / 160)
    covered = np.zeros_like(ds, dtype=bool)
    for d, c in points:
        covered |= (ds <= d) & (cs >= c)
    assert hypervolume_2d(points, ref) == pytest.approx(covered.mean() * 10.0, abs=0.03)


def test_hypervolume_over_compute():
    records = [
        rec(0, 0.5, 10**6, seconds=10.0),  # log10 = 6
        rec(1, state="FAIL", seconds=5.0),  # costs time, adds no point
        rec(2, 0.4, 10**8, seconds=20.0),  # dominated: HV unchanged
        rec(3, 0.8, 10**8, seconds=30.0),
        rec(4, 0.99, 10**6, seconds=1.0, metrics={"kind": "preset"}),  # not a search trial
        rec(5, 0.99, 10**6, seconds=1.0, metrics={"parent_trial": 3}),  # compressed: not a search trial
    ]
    points = hypervolume_over_compute(records[::-1], reference=(0.0, 11.0))
    assert [p.number for p in points] == [0, 2, 3]
    assert [p.seconds for p in points] == [10.0, 35.0, 65.0]
    assert points[0].hypervolume == pytest.approx(0.5 * 5)
    assert points[1].hypervolume == points[0].hypervolume
    assert points[2].hypervolume == pytest.approx(0.5 * 5 + 0.3 * 3)
    assert all(a.hypervolume <= b.hypervolume for a, b in zip(points, points[1:]))


# ----------------------------------------------------------------------------- kinds, quality, cards


def test_compressed_and_preset_points_are_marked(tmp_path):
    records = study() + [
        rec(10, 0.80, 300_000_000, param_count=100_000, latency_ms=2.0, metrics={"parent_trial": 1}),
        rec(11, 0.60, 50_000_000, param_count=30_000, latency_ms=1.0, metrics={"kind": "compressed"}),
        rec(12, 0.75, 4_000_000_000, param_count=31_000_000, latency_ms=50.0, metrics={"kind": "preset"},
            spec={"encoder_widths": [64, 128, 256, 512, 1024], "decoder_widths": [64, 128, 256, 512]}),
    ]
    page = render_report(records, tmp_path / "r.html", title="t", config=CONFIG).read_text("utf-8")
    symbols = {}
    for t in traces(page, "plot-macs"):
        if t["mode"] == "markers":
            for n in t["customdata"]:
                symbols[n] = t["marker"]["symbol"]
    assert symbols[10] == symbols[11] == "diamond" and symbols[12] == "star" and symbols[0] == "circle"
    names = {t["name"] for t in traces(page, "plot-macs")}
    assert "Pareto front, compressed" in names and "dominated, baseline preset" in names
    assert "<td>compressed</td>" in row(page, 10) and "<td>baseline preset</td>" in row(page, 12)
    assert "compressed points 2" in page and "baseline preset points 1" in page
    assert "(compressed, COMPLETE)" in payload(page)["hover"]["10"]
    assert "encoder 64-128-256-512-1024" in payload(page)["hover"]["12"]
    # neither compressed models nor presets count as search compute
    assert [n for n in traces(page, "plot-hv")[0]["customdata"]] == [0, 1, 2, 5]


QUALITY = {"val": {"dice": 0.71, "iou": 0.55, "precision": 0.8, "sensitivity": 0.66, "specificity": 0.995,
                   "hd95": 4.25, "size_strata": {"small": {"count": 17, "detected": 0.47, "dice": 0.312},
                                                 "medium": {"count": 5, "detected": 1.0, "dice": 0.77},
                                                 "large": {"count": 0, "detected": None, "dice": None}}},
           "test": {"dice": 0.69, "size_strata": {}}}


def test_quality_rendered_when_present_and_not_measured_otherwise(tmp_path):
    records = study()
    records[1] = records[1].updated(metrics={"quality": QUALITY})
    page = render_report(records, tmp_path / "r.html", title="t", config=CONFIG).read_text("utf-8")
    assert "<th>trial 1 (val)</th>" in page and "<th>trial 1 (test)</th>" in page
    assert "small objects (&lt; 8 px)" in page
    for text in (">17<", ">47<", ">0.312<", ">0.770<", ">4.25<", ">0.995<"):
        assert text in page, text
    assert "0.312" in row(page, 1)  # small-object Dice column of the trial table
    assert "small-object Dice 0.312" in payload(page)["hover"]["1"]
    card = re.search(r'<div class="card" id="card-1">.*?</div></div>', page, flags=re.S).group(0)
    assert "test dice" in card and "0.6900" in card
    # a card without quality says so
    assert "not measured" in re.search(r'<div class="card" id="card-0">.*?</table>\s*<h4>Metrics.*?</table>',
                                       page, flags=re.S).group(0)
    plain = render_report(study(), tmp_path / "p.html", title="t", config=CONFIG).read_text("utf-8")
    assert "Size-stratified Dice: not measured" in plain


def test_importance_states(tmp_path):
    importance = {"evaluator": "PED-ANOVA (test)", "n_trials": 4, "note": None,
                  "targets": {"Dice": {"depth": 0.75, "width": 0.25}, "log10 MACs": {"depth": 0.1, "width": 0.9}}}
    page = render_report(study(), tmp_path / "r.html", title="t", config=CONFIG,
                         importance=importance).read_text("utf-8")
    section = page[page.index("<h2>Parameter importance"):page.index("<h2>Size-stratified")]
    assert "PED-ANOVA (test) on 4 finished trials" in section
    assert "<th>Dice</th><th>log10 MACs</th>" in section
    assert re.search(r"<th>depth</th><td>.*?0\.750</td><td>.*?0\.100</td>", section)
    assert section.index("<th>depth</th>") < section.index("<th>width</th>")  # ordered by the Dice importance
    note = {"targets": {}, "note": "not enough trials (1 finished, need 2 with varied parameters)"}
    page = render_report(study(), tmp_path / "r.html", title="t", config=CONFIG, importance=note).read_text("utf-8")
    assert "Parameter importance: not enough trials (1 finished" in page
    page = render_report(study(), tmp_path / "r.html", title="t", config=CONFIG).read_text("utf-8")
    assert "Parameter importance: not computed" in page


def test_model_cards_and_overlays(tmp_path):
    import base64

    png = b"\x89PNG\r\n\x1a\n" + b"fake-but-opaque-bytes"
    overlays = {0: {"png": png, "images": ["img_a", "img_b"], "dice": [0.5, 0.25]},
                1: {"error": "trial_0001: weights missing"}}
    env = {"python": "3.11.7", "torch": "2.13.0", "optuna": "5.0.0", "device (latency)": "cpu (test)"}
    config = {**CONFIG, "batch_size": 8, "data": "/data/my images"}
    records = study()
    records[0] = records[0].updated(spec={"encoder_widths": [8, 16], "decoder_widths": [8], "skip_attention": "se"})
    page = render_report(records, tmp_path / "r.html", title="t", config=config, overlays=overlays,
                         environment=env, exported={0: "best/trial_0000", 1: "best/trial_0001"}).read_text("utf-8")
    cards = re.findall(r'<div class="card" id="card-(\d+)">', page)
    assert cards == ["0", "1"]  # front trial 5 has no exported folder: no card
    card0 = page[page.index('id="card-0"'):page.index('id="card-1"')]
    assert "<code>best/trial_0000</code>" in card0
    assert "<th>encoder_widths</th><td>8 → 16</td>" in card0 and "<th>skip_attention</th><td>se</td>" in card0
    assert "120 MMAC" in card0 and "240 MFLOP" in card0 and "3.20 ms on cpu (test)" in card0
    assert "0.7000 (best epoch 2)" in card0
    assert ("nas-search --space resunet --data &#x27;/data/my images&#x27; --trials 6 --epochs 3 --image-size 64 "
            "--batch-size 8 --seed 0 --device cpu") in card0
    assert "nas.load_checkpoint(&quot;best/trial_0000&quot;)" in card0
    assert "<th>torch</th><td>2.13.0</td>" in card0 and "<th>optuna</th><td>5.0.0</td>" in card0
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in card0
    assert "img_a: Dice 0.500; img_b: Dice 0.250" in card0
    card1 = page[page.index('id="card-1"'):page.index("<h2>Trials")]
    assert "Predictions: trial_0001: weights missing" in card1 and "data:image/png" not in card1
    assert_self_contained(page)


def test_script_closing_text_in_data_cannot_break_the_page(tmp_path):
    records = study()
    records[0] = records[0].updated(params={"note": "</script><script>alert(2)</script>"},
                                    epoch_dice=(0.1, math.nan, 0.3))
    page = render_report(records, tmp_path / "r.html", title="t", config=CONFIG).read_text("utf-8")
    assert "<script>alert(2)" not in page
    assert "alert(2)" in payload(page)["hover"]["0"]  # kept as (escaped) text
    curve = next(t for t in traces(page, "plot-curves") if 0 in t["customdata"])
    assert None in curve["y"]  # NaN became a gap, not invalid JSON
