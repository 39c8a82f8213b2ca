"""Report scale: build ``report.html`` and the static fronts for an N-trial study, print seconds and MB.

Records are synthetic but complete (spec, params, costs, 10 epochs of Dice, size-stratified quality,
4 % failures, a few compressed/preset points), i.e. what a long real search stores per trial.
With ``--browser`` it also times headless Chromium loading the page and drawing every plot.

    .venv/bin/python benchmarks/report_scale.py --trials 1000 --browser
"""
from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from nas.results.records import TrialRecord
from reports import hypervolume_over_compute, render_report, save_static_figures
from reports.templates import plotly_js


def make_records(n: int, seed: int = 0) -> list[TrialRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 25 == 0:
            out.append(TrialRecord.from_metrics(i, "FAIL", message=f"RuntimeError: trial {i}", seconds=3.0))
            continue
        depth = int(rng.integers(3, 7))
        widths = [int(rng.integers(2, 9)) * 4 * 2 ** k for k in range(depth)]
        macs = int(10 ** rng.uniform(6.5, 10))
        strata = {k: {"count": int(rng.integers(0, 60)), "detected": float(rng.random()), "dice": float(rng.random())}
                  for k in ("small", "medium", "large")}
        kind = {"parent_trial": i - 1} if i % 97 == 1 else {"kind": "preset"} if i % 331 == 2 else {}
        out.append(TrialRecord.from_metrics(
            i, "COMPLETE", dice=float(rng.uniform(0.3, 0.9)), macs=macs, flops=2 * macs,
            param_count=macs // 120, latency_ms=float(macs / 1e8 * rng.uniform(0.8, 1.2)),
            latency_device="cpu (2 threads)", seconds=float(rng.uniform(5, 60)), best_epoch=int(rng.integers(1, 11)),
            params={"depth": depth, "base_width": widths[0], "block": "basic", "skip_attention": "se"},
            spec={"encoder_widths": widths, "decoder_widths": widths[:-1], "block": "basic", "bridge_dilation": 2,
                  "skip_attention": "se", "norm": "batch", "activation": "relu", "schema_version": 2},
            epoch_dice=tuple(float(v) for v in np.sort(rng.uniform(0.1, 0.9, 10))),
            checkpoint=f"trials/trial_{i:04d}",
            metrics={**kind, "train_device": "cpu", "quality": {"val": {
                "dice": 0.6, "iou": 0.45, "precision": 0.7, "sensitivity": 0.6, "specificity": 0.99, "hd95": 4.0,
                "size_strata": strata}}}))
    return out


def browser_seconds(page: Path) -> float | None:
    browser = shutil.which("chromium")
    if browser is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        start = time.perf_counter()
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                              "--virtual-time-budget=60000", "--dump-dom", page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=300).stdout
        seconds = time.perf_counter() - start
    ready = re.search(r'data-plots-ready="(\d+)"', dom)
    markers = len(re.findall(r'<path class="point[ "]', dom))
    print(f"  chromium: plots drawn {ready.group(1) if ready else 'NONE'}, {markers} marker paths")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--browser", action="store_true", help="also time headless Chromium drawing the page")
    args = parser.parse_args()
    records = make_records(args.trials)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        start = time.perf_counter()
        hv = hypervolume_over_compute(records)
        hv_s = time.perf_counter() - start
        start = time.perf_counter()
        page = render_report(records, folder / "report.html", title="scale", config={"trials": args.trials})
        html_s = time.perf_counter() - start
        start = time.perf_counter()
        figures = save_static_figures(records, folder)
        fig_s = time.perf_counter() - start
        size = page.stat().st_size
        js = len(plotly_js().encode("utf-8"))
        print(f"{args.trials} trials: report.html {html_s:.2f} s, {size / 1e6:.2f} MB "
              f"(plotly.js {js / 1e6:.2f} MB, the rest {(size - js) / 1e6:.2f} MB); "
              f"hypervolume {hv_s * 1e3:.1f} ms ({len(hv)} points); "
              f"static figures ({len(figures)} files) {fig_s:.2f} s, "
              f"{sum(p.stat().st_size for p in figures) / 1e6:.2f} MB; total {html_s + fig_s:.2f} s")
        if args.browser:
            seconds = browser_seconds(page)
            print(f"  chromium load + draw: {seconds:.1f} s" if seconds is not None else "  chromium: not installed")


if __name__ == "__main__":
    main()
