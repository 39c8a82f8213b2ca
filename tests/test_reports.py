"""Pareto maths on hand-made records, and the self-contained HTML report."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from nas.records import TrialRecord
from reports import (
    DICE_MACS,
    Objective,
    ParetoFront,
    dominates,
    figure_pareto,
    pareto_front,
    render_report,
    save_static_figures,
)

MAX_MIN = ("maximize", "minimize")


def rec(number, dice=None, macs=None, state="COMPLETE", **kw) -> TrialRecord:
    return TrialRecord(number=number, state=state, dice=dice, macs=macs, **kw)


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
        rec(4, 0.99, 10, state="FAIL", fail_reason="OOM"),
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

    start = time.perf_counter()
    result = pareto_front(records, DICE_MACS)
    assert time.perf_counter() - start < 2.0  # typically ~0.05 s; loose for slow CI
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
        rec(3, None, None, state="FAIL", fail_reason="<script>alert(1)</script>",
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
    lowered = page.lower()
    for needle in ('src="http', "src='http", 'href="http', "href='http", "<script", "url(http", "@import"):
        assert needle not in lowered
    assert "<?xml" not in page and "<!doctype svg" not in lowered


def test_render_report_content(tmp_path):
    out = render_report(study(), tmp_path / "report.html", title="Demo <study>", config=CONFIG,
                        conventions={"input_size": "1x64x64"})
    assert out == tmp_path / "report.html"
    page = out.read_text(encoding="utf-8")
    assert page.count("<svg") == 3  # MACs front, latency front, Dice per epoch
    assert "Demo &lt;study&gt;" in page
    for key in CONFIG:
        assert f"<th>{key}</th>" in page
    assert "COMPLETE 4" in page and "FAIL 1" in page and "RUNNING 1" in page
    assert "Dice: foreground class, per image, mean over validation images (best epoch)" in page
    assert "FLOPs = 2 × MACs" in page and "1x64x64" in page
    assert "median batch-1 forward on cpu (test)" in page
    assert "Validation Dice per epoch" in page
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
    assert_self_contained(page)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_render_report_is_deterministic(tmp_path):
    a = render_report(study(), tmp_path / "a.html", title="t", config=CONFIG).read_bytes()
    b = render_report(study(), tmp_path / "b.html", title="t", config=CONFIG).read_bytes()
    assert a == b


def test_empty_study(tmp_path):
    page = render_report([], tmp_path / "r.html", title="empty", config={}).read_text(encoding="utf-8")
    assert "No finished trials yet" in page and "<svg" not in page
    failed_only = [rec(0, state="FAIL", fail_reason="boom"), rec(1, state="RUNNING")]
    page = render_report(failed_only, tmp_path / "r.html", title="t", config=CONFIG).read_text(encoding="utf-8")
    assert "No finished trials yet" in page and "<svg" not in page
    assert "boom" in row(page, 0) and "RUNNING" in row(page, 1)
    assert_self_contained(page)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_no_latency_anywhere(tmp_path):
    records = [TrialRecord(**{**r.__dict__, "latency_ms": None, "latency_device": None}) for r in study()]
    page = render_report(records, tmp_path / "r.html", title="t", config={"device": "cpu"}).read_text("utf-8")
    assert page.count("<svg") == 2  # MACs front + epochs; latency skipped with a note
    assert "plot skipped" in page
    assert "(no latency measured)" in page
    assert "—" in row(page, 0)


def test_overwrites_atomically(tmp_path):
    path = tmp_path / "sub" / "r.html"
    render_report([], path, title="first", config={})
    render_report(study(), path, title="second", config={})
    assert "second" in path.read_text("utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["r.html"]


def test_thousand_records(tmp_path):
    rng = np.random.default_rng(7)
    records = []
    for i in range(1000):
        if i % 25 == 0:
            records.append(rec(i, state="FAIL", fail_reason=f"error {i}"))
            continue
        macs = int(10 ** rng.uniform(7, 10))
        records.append(rec(i, float(rng.uniform(0.3, 0.9)), macs, flops=2 * macs,
                           param_count=int(macs / 100), latency_ms=float(macs / 1e8 * rng.uniform(0.8, 1.2)),
                           latency_device="cpu", seconds=float(rng.uniform(5, 50)),
                           params={"depth": int(rng.integers(2, 6))},
                           epoch_dice=tuple(float(v) for v in rng.uniform(0.2, 0.9, size=5))))
    page = render_report(records, tmp_path / "big.html", title="big", config=CONFIG).read_text("utf-8")
    assert page.count('<tr id="trial-') == 1000
    assert page.count("<svg") == 3
    assert_self_contained(page)


def test_figure_and_static_export(tmp_path):
    front = pareto_front(study(), DICE_MACS)
    fig = figure_pareto(front, "macs")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "MACs" in ax.get_xlabel()
    labels = {t.get_text() for t in ax.texts}
    assert {"0", "1", "2", "5"} <= labels
    paths = save_static_figures(front, tmp_path / "figs")
    assert [p.name for p in paths] == ["pareto_macs.png", "pareto_latency.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["pareto_latency.png", "pareto_macs.png"]
    # empty input still yields both figures (with a note), so callers can rely on the files
    assert len(save_static_figures([], tmp_path / "empty")) == 2


def test_reports_package_imports_no_heavy_deps():
    code = ("import sys, reports; bad = [m for m in ('torch', 'optuna', 'matplotlib.pyplot') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
