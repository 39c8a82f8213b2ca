"""Runs written before the house refactor (issue 12) still load: study, report, checkpoints.

tests/fixtures/legacy_run_v0 was written by commit 11206c3 (see its README.md): six trials of a tiny
synthetic search, two finished and four pruned by --max-macs. Only public entry points are used
(``study_records``, the ``nas-report`` console script, ``nas.load_checkpoint``), and records are
read tolerantly (a state may be a string or an enum), so these tests hold while the record types
change. Each test works on a copy: the fixture is never written.
"""
from __future__ import annotations

import csv
import enum
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy_run_v0"
NAS_REPORT = Path(sys.executable).with_name("nas-report")


@pytest.fixture
def legacy_run(tmp_path: Path) -> Path:
    run = tmp_path / "legacy_run"
    shutil.copytree(FIXTURE, run)
    return run


def old_rows() -> dict[int, dict[str, str]]:
    """trials.csv as the old code wrote it, by trial number."""
    with open(FIXTURE / "trials.csv", newline="") as handle:
        return {int(row["number"]): row for row in csv.DictReader(handle)}


def state_name(state) -> str:
    """"COMPLETE" whether the state is that string, an enum named COMPLETE, or one valued "complete"."""
    if isinstance(state, enum.Enum):
        state = state.name
    return str(state).rsplit(".", 1)[-1].upper()


def number_or_none(text: str) -> float | None:
    return float(text) if text != "" else None


def load_records(run: Path) -> dict[int, object]:
    from nas.engine.optuna_adapter.study import study_records

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="resunet", storage=f"sqlite:///{run / 'study.db'}")
    return {record.number: record for record in study_records(study)}


def test_the_fixture_is_small_and_complete():
    sizes = {p.relative_to(FIXTURE).as_posix(): p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()}
    assert sum(sizes.values()) < 1_000_000, sizes
    assert {"study.db", "trials.csv", "trials/trial_0001/model.safetensors", "reference_input.npy",
            "reference_logits.npy"} <= set(sizes)


def test_todays_code_reads_the_old_study(legacy_run):
    records, rows = load_records(legacy_run), old_rows()
    assert sorted(records) == sorted(rows) == [0, 1, 2, 3, 4, 5]
    for number, row in rows.items():
        record = records[number]
        assert state_name(record.state) == row["state"], number
        assert record.dice == number_or_none(row["dice"]), number
        assert record.macs == int(row["macs"]), number  # pruned trials keep the costs that ruled them out
        assert dict(record.params) == json.loads(row["params"]), number  # sampled + fixed dimensions
    assert [n for n, r in records.items() if state_name(r.state) == "COMPLETE"] == [1, 5]
    saved = json.loads((FIXTURE / "trials" / "trial_0001" / "spec.json").read_text())
    assert dict(records[1].spec) == saved["spec"]  # the study alone rebuilds the architecture


def test_nas_report_rebuilds_the_old_run(legacy_run):
    assert NAS_REPORT.exists(), f"{NAS_REPORT}: install the project (pip install -e .)"
    result = subprocess.run([str(NAS_REPORT), "--run", str(legacy_run), "--overlay-images", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6 trial(s), 2 finished" in result.stdout
    assert "warning" not in result.stderr and "unavailable" not in result.stderr, result.stderr
    html = (legacy_run / "report.html").read_text()
    assert "trial_0001" in html or "trial 1" in html.lower()
    with open(legacy_run / "trials.csv", newline="") as handle:
        rebuilt = {int(row["number"]): row for row in csv.DictReader(handle)}
    for number, row in old_rows().items():
        new = rebuilt[number]
        assert state_name(new["state"]) == row["state"], number
        assert number_or_none(new["dice"]) == number_or_none(row["dice"]), number
        assert int(new["macs"]) == int(row["macs"]), number
        assert new["checkpoint"] == row["checkpoint"], number
    assert (legacy_run / "best" / "trial_0001" / "model.safetensors").read_bytes() == \
        (FIXTURE / "best" / "trial_0001" / "model.safetensors").read_bytes()  # nas-report never touches best/


@pytest.mark.parametrize("folder", ["trials/trial_0001", "best/trial_0001"])
def test_old_checkpoint_loads_and_predicts_the_same(legacy_run, folder):
    import nas

    model, spec = nas.load_checkpoint(legacy_run / folder)
    model.eval()
    x = np.load(FIXTURE / "reference_input.npy")  # (2, 1, 30, 38): not a multiple of the stride, pads
    expected = np.load(FIXTURE / "reference_logits.npy")  # the old code's forward of the same weights
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).numpy()
    assert logits.shape == expected.shape == (2, 1, 30, 38)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    info = nas.read_checkpoint_info(legacy_run / folder)
    assert info.normalization.mean == pytest.approx((0.3278208471,))


# --- studies other tools read: objectives carry their names -----------------------------------------

@pytest.mark.parametrize("names", ["dice,macs", "dice,latency,memory"])
def test_a_new_study_names_its_objectives(tmp_path, names):
    from nas.engine.objectives import Objectives
    from nas.engine.optuna_adapter.study import open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(storage, "resunet", 0, {"space": "resunet"}, Objectives.parse(names))
    assert optuna.load_study(study_name="resunet", storage=storage).metric_names == names.split(",")


def test_an_old_study_gets_its_names_when_opened(legacy_run):
    from nas.engine.optuna_adapter.study import CONFIG_ATTR, open_study

    storage = f"sqlite:///{legacy_run / 'study.db'}"
    old = optuna.load_study(study_name="resunet", storage=storage)
    assert old.metric_names is None  # what optuna-dashboard showed as "Objective 0", "Objective 1"
    open_study(storage, "resunet", 0, dict(old.user_attrs[CONFIG_ATTR]))
    assert optuna.load_study(study_name="resunet", storage=storage).metric_names == ["dice", "macs"]
