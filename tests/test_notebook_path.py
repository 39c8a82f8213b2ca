"""Issue 26, "the notebook path works as written": the README's ```python blocks run on a real run,
``Normalization.apply`` takes numpy arrays and tensors, the threshold is on the checkpoint info, and
``nas.load_run`` gives the numbers ``trials.csv`` holds (re-timed latency, front, point kind) with the
full effective settings."""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.data.normalization import Normalization
from nas.run.search import SearchResult

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_RUN = "runs/resunet-synthetic"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_readme_python_blocks_run_on_a_real_run(tiny_run, tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 3 and any("nas.load_checkpoint" in b for b in blocks)
    monkeypatch.chdir(tmp_path)  # nothing the blocks write lands in the source tree
    finished = nas.open_run(tiny_run).records
    # the search block would train 8 trials at 64 px: its config is built and checked for real, the
    # search itself answers with the tiny run's result
    monkeypatch.setattr(nas, "run_search", lambda config: SearchResult(
        "completed", tiny_run, tuple(r for r in finished if r.number == 1), len(finished)))
    namespace: dict = {}
    for block in blocks:
        code = block.replace(DEFAULT_RUN, str(tiny_run)).replace("runs/notebook", str(tiny_run))
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102: the README's own examples
    probabilities, masks = namespace["probabilities"], namespace["masks"]
    assert probabilities.shape == (2, 1, 64, 64) and masks.dtype == torch.bool
    assert not probabilities.requires_grad  # computed under torch.inference_mode()
    assert namespace["info"].threshold == pytest.approx(namespace["info"].metrics["threshold"])
    assert namespace["frame"].attrs["config"]["image_size"] == 32


def test_normalization_takes_numpy_and_tensors():
    norm = Normalization(mean=(0.5,), std=(0.25,))
    array = np.full((2, 1, 4, 4), 0.75)  # float64, as numpy makes it
    from_numpy = norm.apply(array)
    assert isinstance(from_numpy, torch.Tensor) and from_numpy.dtype == torch.float32
    assert torch.allclose(from_numpy, torch.ones(2, 1, 4, 4))
    assert norm.apply(np.full((1, 4, 4), 0.75, dtype=np.float32)).shape == (1, 4, 4)  # (C, H, W)
    tensor = torch.full((1, 1, 4, 4), 0.75, dtype=torch.float64)
    assert norm.apply(tensor).dtype == torch.float64  # a tensor keeps its float dtype
    assert norm.apply(torch.ones(1, 1, 2, 2, dtype=torch.uint8)).dtype == torch.float32
    with pytest.raises(ValueError, match="channel"):
        norm.apply(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="spatial"):
        norm.apply(np.zeros(4))


def test_the_threshold_is_on_the_checkpoint_info(tiny_run):
    folder = sorted((tiny_run / "best").glob("trial_*"))[0]
    info = nas.read_checkpoint_info(folder)
    assert 0 < info.threshold < 1 and info.threshold == info.metrics["threshold"]


def _same(cell: str, value) -> bool:
    import pandas

    if cell == "":
        return bool(pandas.isna(value))
    if isinstance(value, (float, np.floating)):
        return math.isclose(float(cell), float(value), rel_tol=1e-12, abs_tol=1e-12)
    return cell == str(value)


def test_load_run_gives_the_numbers_of_trials_csv(tiny_run):
    frame = nas.load_run(tiny_run)
    with open(tiny_run / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(frame) == len(rows) == 2
    for column in rows[0]:
        for i, row in enumerate(rows):
            assert _same(row[column], frame[column].iloc[i]), (column, row[column], frame[column].iloc[i])
    # the re-timed latency (latency.json), not the search-time one, as trials.csv and the report show
    records = {r.number: r for r in nas.open_run(tiny_run).records}
    from nas.run.latency_pass import read_latency

    timed = read_latency(tiny_run)["models"]
    for i, number in enumerate(frame["number"]):
        entry = timed[records[int(number)].checkpoint]
        assert frame["latency_ms"].iloc[i] == entry["latency_ms"] != records[int(number)].latency_ms
    # the front of the search's objectives (what best/ is chosen from) and the point kind
    best = {int(p.name.rsplit("_", 1)[1]) for p in (tiny_run / "best").glob("trial_*")}
    assert {int(n) for n, on in zip(frame["number"], frame["on_front"]) if on} == best
    assert list(frame["point"]) == ["search", "search"]
    # the full effective settings, defaults included, not only what differs from them
    config = frame.attrs["config"]
    assert (config["objectives"], config["sampler"], config["latency_engine"]) == ("dice,macs", "tpe", "torch")
    assert config["early_stop"] == "off" and config["image_size"] == 32 and config["epochs"] == 1
    assert config["recipe"]["lr"] == nas.SearchConfig().lr and config["recipe"]["val_fraction"] == 0.25
    assert config["budget"] == {"trials": 2, "timeout": None, "stopped": None}


def test_effective_settings_fill_the_defaults_of_an_old_run(tmp_path):
    from nas.run.open import effective_settings
    from nas.run.settings import RunSettings

    stored = RunSettings.from_dict({"epochs": 10, "recipe": {"lr": 0.01}})
    settings = effective_settings(stored, tmp_path)  # no search_end.json
    assert settings["early_stop"] == "on" and settings["early_stop_rungs"] == [1, 3, 9]
    assert settings["recipe"]["lr"] == 0.01 and settings["recipe"]["amp"] is True
    assert settings["budget"] == {"trials": None, "timeout": None, "stopped": None}


def test_point_kind_names_family_members():
    from nas.results.records import TrialRecord
    from nas.run.open import point_kind

    assert point_kind(TrialRecord.from_metrics(0, "COMPLETE", {"family": "family-unet-m0"})) == "family"


def test_the_model_card_use_block_runs(tiny_run, monkeypatch):
    folder = sorted((tiny_run / "best").glob("trial_*"))[0]
    card = (folder / "README.md").read_text(encoding="utf-8")
    block = re.findall(r"^```python\n(.*?)^```", card, flags=re.S | re.M)[0]
    assert "torch.inference_mode()" in block and "info.threshold" in block
    monkeypatch.chdir(folder.parent)  # the card names its own folder
    namespace = {"images": np.random.rand(1, 1, 48, 40)}
    exec(compile(block, str(folder / "README.md"), "exec"), namespace)  # noqa: S102: the card's own example
    assert namespace["masks"].shape == (1, 1, 48, 40) and namespace["masks"].dtype == torch.bool
