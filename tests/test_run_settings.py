"""``RunSettings``: the search's settings typed, and the stored dict given back unchanged (old runs too)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from nas.engine.objectives import Objectives
from nas.run.settings import RunSettings

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_run_v0"


def stored_config(run: Path) -> str:
    """The study's ``search_config`` as Optuna stored it: the JSON text itself."""
    with sqlite3.connect(run / "study.db") as db:
        (text,) = db.execute("select value_json from study_user_attributes where key = 'search_config'").fetchone()
    return text


def test_the_legacy_runs_settings_load_typed_and_write_back_byte_for_byte():
    text = stored_config(LEGACY)
    settings = RunSettings.from_dict(json.loads(text))
    assert json.dumps(settings.to_dict()) == text
    assert (settings.space, settings.data, settings.epochs, settings.image_size, settings.seed) == (
        "resunet", "synthetic", 1, 32, 0)
    assert settings.restriction["fix"]["depth"] == 3 and settings.constraints["max_macs"] == 2_000_000
    assert settings.early_stop == "off" and settings.objectives is None and not settings.extra


def test_open_run_reads_the_legacy_settings(tmp_path):
    from nas.run.open import open_run

    run = tmp_path / "legacy"
    shutil.copytree(LEGACY, run)
    opened = open_run(run)
    assert opened.settings == RunSettings.from_dict(json.loads(stored_config(LEGACY)))
    assert opened.title == "nas-search: resunet on synthetic"
    shown = opened.run_settings().to_dict()
    assert list(shown)[-2:] == ["study", "storage"] and shown["study"] == "resunet"


def test_unknown_keys_and_unexpected_values_are_kept_where_they_were():
    flat = {"space": "resunet", "future_key": {"x": [1, 2]}, "epochs": "10", "objectives": "dice,no_such_cost",
            "trials": None, "objectives_": 1, "sampler": "random", "early_stop_rungs": [1, 3]}
    settings = RunSettings.from_dict(flat)
    assert json.dumps(settings.to_dict()) == json.dumps(flat)
    assert settings.epochs is None and settings.extra["epochs"] == "10"  # never coerced
    assert settings.objectives is None and settings.extra["objectives"] == "dice,no_such_cost"
    assert settings.sampler == "random" and settings.early_stop_rungs == (1, 3) and settings.trials is None
    assert RunSettings.from_dict(None).to_dict() == {} and not RunSettings().stored


def test_objectives_stay_typed():
    settings = RunSettings.from_dict({"objectives": "dice:cell,latency"})
    assert settings.objectives == Objectives(("dice:cell", "latency"))
    assert RunSettings(objectives=Objectives.parse("miou,macs")).to_dict() == {"objectives": "miou,macs"}


def test_updated_and_beneath_are_the_dict_merges_they_replace():
    flat = {"space": "resunet", "sampler": "random", "trials": 4}
    settings = RunSettings.from_dict(flat)
    added = {"objectives": Objectives(), "trials": 9, "study": "s", "storage": "sqlite:///x.db"}
    assert settings.updated(**added).to_dict() == {**flat, **{**added, "objectives": "dice,macs"}}
    assert list(settings.updated(**added).to_dict()) == list({**flat, **added})
    budget = {"trials": 2, "timeout": 90.0}
    assert list(settings.beneath(**budget).to_dict().items()) == list({**budget, **flat}.items())
    assert settings.beneath(timeout=None).to_dict() == {"timeout": None, **flat}


def test_frozen():
    settings = RunSettings.from_dict({"recipe": {"lr": 0.01}, "early_stop_rungs": [1, 3]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.recipe["lr"] = 1.0  # type: ignore[index]
    assert settings.to_dict() == {"recipe": {"lr": 0.01}, "early_stop_rungs": [1, 3]}


def test_the_plan_builds_the_settings_the_study_stores(tmp_path):
    from nas.run.search_config import SearchConfig
    from nas.run.search_plan import prepare, study_settings

    config = SearchConfig(epochs=4, image_size=32, seed=5, fix={"depth": 3}, max_macs=1e9, lr=0.002,
                          objectives="dice,latency", sampler="random", early_stop="none", baselines=(),
                          warm_start="none", out=tmp_path / "run")
    plan = prepare(config)
    assert plan.settings is plan.settings  # built once
    assert study_settings(plan) == plan.settings.to_dict()
    assert list(plan.settings.to_dict().items()) == [
        ("space", "resunet"), ("data", "synthetic"), ("epochs", 4), ("image_size", 32), ("batch_size", 8),
        ("seed", 5), ("restriction", {"fix": {"depth": 3}, "choices": {}}), ("constraints", {"max_macs": 1e9}),
        ("recipe", {"lr": 0.002}), ("objectives", "dice,latency"), ("sampler", "random"), ("early_stop", "off")]
    assert plan.settings.objectives == plan.objectives and plan.settings.sampler == "random"
