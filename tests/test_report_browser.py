"""The report in a real browser (headless Chromium): no console errors, plots drawn, clicks select rows.

Skipped when no Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""
from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.results.records import TrialRecord
from reports import render_report

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (.ci/run installs Debian's chromium)")
FRONT_RED = (214, 39, 40)  # #d62728, the Pareto markers


def records() -> list[TrialRecord]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(40):
        if i % 13 == 5:
            out.append(TrialRecord.from_metrics(i, "FAIL", message="RuntimeError: boom", seconds=2.0))
            continue
        macs = int(10 ** rng.uniform(6, 9))
        metrics = {"parent_trial": 1} if i in (30, 31) else {"kind": "preset"} if i == 32 else {}
        out.append(TrialRecord.from_metrics(
            i, "COMPLETE", metrics, dice=float(rng.uniform(0.4, 0.9)), macs=macs, flops=2 * macs,
            param_count=macs // 300, latency_ms=float(macs / 1e8 + rng.uniform(0.5, 1)), latency_device="cpu",
            seconds=float(rng.uniform(5, 20)), best_epoch=3, params={"depth": int(rng.integers(3, 6))},
            spec={"encoder_widths": [8, 16, 32], "decoder_widths": [8, 16]}, checkpoint=f"trials/trial_{i:04d}",
            epoch_dice=tuple(float(v) for v in np.sort(rng.uniform(0.2, 0.9, 5)))))
    return out


def overlay_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.indices((64, 256)).sum(0).astype(np.uint8) * 3).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    recs = records()
    return render_report(recs, folder / "report.html", title="browser test", config={"space": "resunet"},
                         importance={"evaluator": "test", "n_trials": 3, "targets": {"Dice": {"depth": 1.0}}},
                         overlays={r.number: {"png": overlay_png(), "images": ["a"], "dice": [0.5]} for r in recs},
                         environment={"python": "3"})


def chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
               *extra, page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def console_lines(stderr: str) -> list[str]:
    """Chromium logs every console message (errors, warnings, uncaught exceptions) as ``INFO:CONSOLE``."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_no_console_errors_and_screenshot_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    result = chromium(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1400")
    assert console_lines(result.stderr) == []
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape[:2] == (1400, 1280)
    colours = np.unique(picture.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "blank or near-blank screenshot"
    red = np.all(picture == FRONT_RED, axis=2).sum()
    assert red > 50, "no Pareto markers drawn in the visible plots"


def test_plots_rendered_and_click_selects_the_row(report, tmp_path):
    page = report.read_text("utf-8")
    # after the plots are drawn, emit a click on the point of trial 7 as plotly would
    click = ("<script>setTimeout(function () { document.getElementById('plot-macs')"
             ".emit('plotly_click', {points: [{customdata: 7}]}); }, 0);</script>")
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.replace("</body>", click + "</body>"), encoding="utf-8")
    result = chromium(clicked, tmp_path / "profile", "--dump-dom")
    assert console_lines(result.stderr) == []
    dom = result.stdout
    assert 'data-plots-ready="5"' in dom  # fronts x3, hypervolume, learning curves
    assert dom.count('class="scatterlayer') >= 5
    finished = sum(r.state == "COMPLETE" for r in records())
    # every finished trial is a marker in each of the three fronts, plus hypervolume markers
    assert len(re.findall(r'<path class="point[ "]', dom)) >= 3 * finished
    row = re.search(r'<tr id="trial-7"[^>]*>', dom).group(0)
    assert "selected" in row
    assert len(re.findall(r'<tr [^>]*class="[^"]*selected', dom)) == 1
    assert 'src="data:image/png;base64,' in dom  # overlays of the exported models
