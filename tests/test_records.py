"""Typed trial results and records: exact round trips of the stored metrics, JSON, legacy outcomes, the table."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import optuna
import pytest

from nas.results.outcome import FAILURE_KIND_ATTR, STOP_REASON_ATTR, FailureKind, StopReason, TrialState
from nas.results.records import MEASURES, TrialRecord
from nas.results.table import CSV_COLUMNS, trials_csv, trials_frame, write_trials_csv
from nas.results.trial_result import RecordKind, TrialCosts, TrialResult

FIXTURES = Path(__file__).parent / "fixtures" / "metrics_v0"  # written by nas-search/nas-compress at 4525bd6


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def legacy_metrics() -> list[dict]:
    variants = fixture("compressed.json")["variants"]
    return [fixture("search_trial.json"), fixture("baseline.json"), *(v["metrics"] for v in variants)]


# ----------------------------------------------------------------------------- TrialResult


@pytest.mark.parametrize("flat", legacy_metrics(), ids=["search", "preset", "compressed"])
def test_old_metrics_json_round_trips_exactly(flat):
    result = TrialResult.from_dict(flat)
    assert result.to_dict() == flat and list(result.to_dict()) == list(flat)  # same keys, values and order
    assert json.dumps(result.to_dict()) == json.dumps(flat)
    assert result.costs.flops == 2 * result.costs.macs and result.costs.params == flat["params"]
    assert result.quality.dice == flat["dice"] and result.quality.epoch_dice == tuple(flat["epoch_dice"])
    assert isinstance(result.costs.input_shape, tuple) and result.timing.seconds == flat["seconds"]


def test_typed_sections_and_provenance_of_a_search_trial():
    flat = fixture("search_trial.json")
    result = TrialResult.from_dict(flat)
    assert result.costs.train_memory_mb == flat["train_memory_mb"] and result.costs.train_memory_batch == 4
    assert result.timing.train_device == "cpu" and result.timing.stopped_early is False
    assert result.quality.splits["val"]["size_strata"]["small"] == flat["quality"]["val"]["size_strata"]["small"]
    assert dict(result.provenance) == {"trial": 7, "weights_sha256": flat["weights_sha256"]}
    assert result.kind == RecordKind.SEARCH
    with pytest.raises(TypeError):
        result.provenance["trial"] = 8  # read-only
    with pytest.raises(AttributeError):
        result.costs.macs = 1  # frozen


def test_kind_is_read_once_from_the_stored_keys():
    assert [TrialResult.from_dict(m).kind for m in legacy_metrics()] == [
        RecordKind.SEARCH, RecordKind.PRESET, RecordKind.COMPRESSED]
    assert RecordKind.of({"parent_trial": 3}) == RecordKind.COMPRESSED  # older compressed metrics had no kind
    assert RecordKind.of({"parent_trial": None}) == RecordKind.SEARCH


def test_unexpected_types_stay_untouched_in_provenance():
    flat = {"macs": "12 M", "dice": None, "epoch_dice": [0.1, None], "quality": [1, 2], "stopped_early": 1,
            "params": True, "input_shape": (1, 1, 8, 8)}
    result = TrialResult.from_dict(flat)
    assert result.costs.macs is None and result.costs.params is None and result.timing.stopped_early is None
    assert {k: result.provenance[k] for k in ("macs", "quality", "stopped_early", "params")} == \
        {"macs": "12 M", "quality": [1, 2], "stopped_early": 1, "params": True}
    assert result.quality.epoch_dice == (0.1, None) and result.costs.input_shape == (1, 1, 8, 8)
    out = result.to_dict()
    assert out == {**flat, "input_shape": [1, 1, 8, 8]} and list(out) == list(flat)  # a None stays a key


def test_values_set_after_loading_are_written_after_the_stored_keys():
    result = TrialResult.from_dict({"trial": 2, "macs": 10})
    assert TrialResult(costs=TrialCosts(macs=10)) == TrialResult.from_dict({"macs": 10})
    assert TrialResult().to_dict() == {} and TrialResult.from_dict(None).to_dict() == {}
    changed = TrialResult(costs=TrialCosts(macs=20, flops=40), provenance=result.provenance, keys=result.keys)
    assert list(changed.to_dict().items()) == [("trial", 2), ("macs", 20), ("flops", 40)]


def test_real_metrics_of_a_tiny_training_round_trip(tmp_path):
    from nas.data.loading import load_data
    from nas.engine.trial import TrialSettings, train_and_save
    from nas.train.trainer import TrainConfig
    from search_spaces import get_space
    from search_spaces.resunet import ResUNetSpec

    data = load_data("synthetic", image_size=32, seed=0, synthetic_train=4, synthetic_val=2)
    settings = TrialSettings(image_size=32, train=TrainConfig(epochs=1, batch_size=4, patch_size=32, device="cpu"),
                             latency_warmup=0, latency_repeats=1, measure_train_memory=True)
    spec = ResUNetSpec(encoder_widths=(4, 8), decoder_widths=(4,))
    trained = train_and_save(spec, get_space("resunet"), data, settings, tmp_path / "t", extra={"trial": 0})
    stored = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert {**trained.to_dict(), "weights_sha256": stored["weights_sha256"]} == stored  # the checkpoint's metrics
    for flat in (trained.to_dict(), stored):
        assert TrialResult.from_dict(flat).to_dict() == flat
    result = TrialResult.from_dict(stored)
    assert set(result.provenance) == {"trial", "weights_sha256"}  # every other key is typed
    assert result.costs == trained.costs and result.timing.epochs_run == trained.timing.epochs_run == 1


@pytest.mark.parametrize("trained", [{"dice": 0.5, "macs": 10, "seconds": 1.0, "trial": 3},
                                     {"dice": 0.5, "macs": 10, "replay_source": "table"}])  # a stand-in's, no seconds
def test_the_policys_typed_write_side_stores_what_its_dict_updates_stored(trained):
    """``run_policy`` adds the costs measured for the constraints check (never over a trained value) and
    the trial's seconds: the same flat dict, keys and order, as the dict updates it replaced."""
    from dataclasses import replace

    measured = {"macs": 99, "train_memory_mb": 2.0, "macs_counter": "fvcore"}
    old = dict(trained)
    old.update({k: v for k, v in measured.items() if k not in old})
    old["seconds"] = 2.5
    result = TrialResult.from_dict(trained).merged(measured, replace=False)
    result = replace(result, timing=replace(result.timing, seconds=2.5))
    assert list(result.to_dict().items()) == list(old.items())
    assert result.costs.macs == 10 and result.costs.train_memory_mb == 2.0 and result.timing.seconds == 2.5
    assert TrialResult.from_dict(trained).merged({"macs": 5}).costs.macs == 5


# ----------------------------------------------------------------------------- TrialRecord


def test_record_reads_the_names_reports_use():
    flat = fixture("search_trial.json")
    record = TrialRecord.from_metrics(7, "COMPLETE", flat, params={"depth": 2}, checkpoint="trials/trial_0007")
    assert (record.dice, record.macs, record.flops, record.measure("params")) == (
        flat["dice"], flat["macs"], flat["flops"], flat["params"])
    assert (record.latency_ms, record.latency_device, record.seconds, record.best_epoch) == (
        flat["latency_ms"], flat["latency_device"], flat["seconds"], flat["best_epoch"])
    assert record.epoch_dice == tuple(flat["epoch_dice"]) and record.train_memory_mb == flat["train_memory_mb"]
    assert record.finished and record.state == "COMPLETE" and record.state is TrialState.COMPLETE
    assert record.params == {"depth": 2} and record.kind == RecordKind.SEARCH
    assert record.quality("val")["dice"] == flat["quality"]["val"]["dice"] and record.quality("test") == {}
    assert not hasattr(record, "metrics")
    assert all(isinstance(record.measure(name), (int, float)) for name in MEASURES)


def test_one_line_constructor_keywords():
    record = TrialRecord.from_metrics(3, "COMPLETE", dice=0.5, macs=100, param_count=7, epoch_dice=(0.4, 0.5))
    assert record.result.to_dict() == {"dice": 0.5, "macs": 100, "params": 7, "epoch_dice": [0.4, 0.5]}
    assert record.flops == 200  # 2 x MACs when not stored
    assert TrialRecord.from_metrics(3, "FAIL", dice=0.5).dice is None  # only a COMPLETE trial has a Dice
    assert TrialRecord.from_metrics(3, "FAIL", dice=0.5).result.quality.dice == 0.5
    with pytest.raises(TypeError, match="metrics"):
        TrialRecord.from_metrics(0, "COMPLETE", metrics_typo=1)
    with pytest.raises(ValueError):
        TrialRecord(0, "DONE")
    assert TrialRecord(0, "RUNNING").result == TrialResult() and TrialRecord(0, "RUNNING").epoch_dice == ()
    updated = record.updated(latency_ms=2.5, message="note", metrics={"kind": "preset"})
    assert (updated.latency_ms, updated.message, updated.dice, updated.number) == (2.5, "note", 0.5, 3)
    assert updated.kind == RecordKind.SEARCH  # the kind was decided when the record was made


@pytest.mark.parametrize("state, message, expected", [
    ("PRUNED", "early-stopped at epoch 2: Dice 0.31 below the rung's median", StopReason.EARLY_STOPPED),
    ("PRUNED", "stopped by the Ray scheduler at epoch 1", StopReason.SCHEDULER),
    ("PRUNED", "duplicate of trial 4", StopReason.DUPLICATE),
    ("PRUNED", "infeasible: 5.67 MMAC > --max-macs 2 MMAC", StopReason.INFEASIBLE),
    ("PRUNED", "params 812 k > --max-params 100 k", StopReason.INFEASIBLE),
    ("FAIL", "out of memory (CUDA): OutOfMemoryError: ...", FailureKind.OUT_OF_MEMORY),
    ("FAIL", "diverged: TrainingError: loss is nan", FailureKind.DIVERGED),
    ("FAIL", "stale: its process (12) ended without finishing it", FailureKind.STALE),
    ("FAIL", "interrupted (Ctrl-C); queued again on resume", FailureKind.INTERRUPTED),
    ("FAIL", "non-finite objective values (nan, 3.0)", FailureKind.NO_OBJECTIVES),
    ("FAIL", "RuntimeError: boom", FailureKind.ERROR),
    ("COMPLETE", None, None),
])
def test_legacy_messages_give_the_enums(state, message, expected):
    record = TrialRecord.from_metrics(0, state, message=message)
    assert (record.stop_reason or record.failure_kind) == expected and record.fail_reason == message
    assert record.stop_reason is None or record.failure_kind is None


def test_stored_enums_win_over_the_message_and_unknown_values_fall_back():
    record = TrialRecord.from_metrics(0, "PRUNED", message="early-stopped? no", stop_reason="duplicate")
    assert record.stop_reason == StopReason.DUPLICATE and record.failure_kind is None
    future = TrialRecord.from_metrics(0, "FAIL", message="out of memory: x", failure_kind="a_new_kind")
    assert future.failure_kind == FailureKind.OUT_OF_MEMORY


def test_record_json_round_trip():
    flat = fixture("search_trial.json")
    records = [
        TrialRecord.from_metrics(7, "COMPLETE", flat, params={"depth": 2, "lr": 1e-3}, spec={"encoder_widths": [4, 8]},
                                 checkpoint="trials/trial_0007"),
        TrialRecord.from_metrics(8, "PRUNED", {"macs": 10, "epoch_dice": [0.2]}, message="early-stopped at epoch 1",
                                 stopped_at_epoch=1),
        TrialRecord.from_metrics(9, "FAIL", message="out of memory: boom"),
        TrialRecord.from_metrics(-1, "COMPLETE", fixture("baseline.json"), kind=RecordKind.PRESET),
        TrialRecord(10, "WAITING"),
    ]
    for record in records:
        data = json.loads(json.dumps(record.to_dict(), allow_nan=False))
        back = TrialRecord.from_dict(data)
        assert back == record and back.result.to_dict() == record.result.to_dict()
    assert records[1].to_dict()["stop_reason"] == "early_stopped" and records[2].to_dict()["failure_kind"] == \
        "out_of_memory"
    assert records[3].to_dict()["kind"] == "preset" and records[0].to_dict()["state"] == "COMPLETE"


def test_to_record_reads_stored_enums_and_classifies_old_studies():
    from nas.engine.optuna_adapter.study import study_records

    depth = optuna.distributions.IntDistribution(2, 5)
    study = optuna.create_study(directions=["maximize", "minimize"])
    flat = fixture("search_trial.json")
    study.add_trial(optuna.trial.create_trial(  # as today's nas-search leaves a finished trial
        params={"depth": 2}, distributions={"depth": depth}, values=[flat["dice"], float(flat["macs"])],
        user_attrs={"metrics": flat, "spec": {"encoder_widths": [4, 8]}, "checkpoint": "trials/trial_0000",
                    "fixed_params": {"block": "basic"}, "device_seconds": 99.0}))
    study.add_trial(optuna.trial.create_trial(  # an early-stopped trial of an old study: message only
        state=optuna.trial.TrialState.PRUNED, params={"depth": 3}, distributions={"depth": depth},
        user_attrs={"fail_reason": "early-stopped at epoch 1: beaten", "stopped_at_epoch": 1,
                    "epoch_dice": [0.1], "device_seconds": 4.0, "metrics": {"macs": 5}}))
    study.add_trial(optuna.trial.create_trial(  # a new study stores the enum beside the message
        state=optuna.trial.TrialState.FAIL, params={"depth": 4}, distributions={"depth": depth},
        user_attrs={"fail_reason": "early-stopped (a misleading text)", FAILURE_KIND_ATTR: "diverged",
                    "checkpoint": "trials/trial_0002"}))
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, params={"depth": 5}, distributions={"depth": depth},
        user_attrs={"fail_reason": "no text prefix", STOP_REASON_ATTR: "scheduler", "stopped_at_epoch": 2}))
    done, early, failed, scheduled = study_records(study)
    assert done.result.to_dict() == flat and done.seconds == flat["seconds"]  # metrics win over device seconds
    assert done.params == {"block": "basic", "depth": 2} and done.checkpoint == "trials/trial_0000" and done.finished
    assert (early.stop_reason, early.stopped_at_epoch, early.epoch_dice, early.seconds, early.macs) == (
        StopReason.EARLY_STOPPED, 1, (0.1,), 4.0, 5)
    assert early.dice is None and early.checkpoint is None and early.failure_kind is None
    assert failed.failure_kind == FailureKind.DIVERGED and failed.checkpoint is None
    assert scheduled.stop_reason == StopReason.SCHEDULER and scheduled.fail_reason == "no text prefix"


def test_compressed_and_baseline_records_from_a_run_folder(tmp_path):
    from compress.index import compressed_records, index_path
    from nas.stages.baseline_training import BASELINES_DIR, baseline_records

    index_path(tmp_path).parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "compressed.json", index_path(tmp_path))
    (compressed,) = compressed_records(tmp_path, first_number=100)
    variant = fixture("compressed.json")["variants"][0]
    assert (compressed.number, compressed.kind, compressed.finished) == (100, RecordKind.COMPRESSED, True)
    assert compressed.result.to_dict() == variant["metrics"] and compressed.checkpoint == variant["checkpoint"]
    assert compressed.params == {"parent_trial": 7, "importance": "magnitude", "ratio": 0.3}
    folder = tmp_path / BASELINES_DIR / "unet-tiny"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "baseline.json", folder / "metrics.json")
    (folder / "spec.json").write_text(json.dumps({"spec": variant["spec"]}))
    (baseline,) = baseline_records(tmp_path)
    assert (baseline.number, baseline.kind, baseline.params) == (-1, RecordKind.PRESET, {"preset": "unet-tiny"})
    assert baseline.result.to_dict() == fixture("baseline.json") and baseline.spec == variant["spec"]


# ----------------------------------------------------------------------------- the trials table


def table_records() -> list[TrialRecord]:
    return [
        TrialRecord.from_metrics(1, "PRUNED", {"macs": 10, "flops": 20}, message="infeasible: too big", seconds=0.5,
                                 params={"depth": 3}),
        TrialRecord.from_metrics(0, "COMPLETE", fixture("search_trial.json"), params={"depth": 2, "note": 'a "b", c'},
                                 spec={"encoder_widths": [4, 8]}, checkpoint="trials/trial_0000"),
        TrialRecord.from_metrics(2, "FAIL", message="RuntimeError: boom"),
    ]


def test_trials_frame_has_typed_columns():
    frame = trials_frame(table_records())
    assert list(frame["number"]) == [0, 1, 2] and len(frame) == 3
    dtypes = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    assert {dtypes[c] for c in ("number", "macs", "flops", "param_count", "best_epoch", "stopped_at_epoch")} == {"Int64"}
    assert {dtypes[c] for c in ("dice", "latency_ms", "seconds", "train_memory_mb")} == {"float64"}
    assert {dtypes[c] for c in ("state", "stop_reason", "failure_kind", "kind", "params", "spec", "fail_reason",
                                "checkpoint", "latency_device")} == {"string"}
    assert list(frame["state"]) == ["COMPLETE", "PRUNED", "FAIL"]
    assert frame["stop_reason"].tolist()[1] == "infeasible" and frame["failure_kind"].tolist()[2] == "error"
    assert frame["macs"].isna().tolist() == [False, False, True] and math.isnan(frame["dice"][1])
    assert json.loads(frame["params"][0]) == {"depth": 2, "note": 'a "b", c'}
    assert json.loads(frame["spec"][0]) == {"encoder_widths": [4, 8]} and frame["spec"].isna()[1]
    assert trials_frame([]).empty and list(trials_frame([]).columns) == list(frame.columns)


def test_trials_csv_keeps_todays_columns_first(tmp_path):
    import csv

    text = trials_csv(table_records())
    rows = list(csv.DictReader(text.splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS == (
        "number", "state", "dice", "macs", "flops", "param_count", "latency_ms", "latency_device", "seconds",
        "best_epoch", "params", "fail_reason", "checkpoint", "stop_reason", "failure_kind", "kind")
    flat = fixture("search_trial.json")
    assert rows[0]["dice"] == repr(flat["dice"]) and rows[0]["macs"] == str(flat["macs"])
    assert rows[0]["latency_ms"] == repr(flat["latency_ms"]) and rows[0]["best_epoch"] == str(flat["best_epoch"])
    assert json.loads(rows[0]["params"]) == {"depth": 2, "note": 'a "b", c'}
    assert (rows[1]["dice"], rows[1]["stop_reason"], rows[1]["kind"]) == ("", "infeasible", "search")
    assert (rows[2]["params"], rows[2]["failure_kind"], rows[2]["checkpoint"]) == ("{}", "error", "")
    write_trials_csv(table_records(), tmp_path / "trials.csv")
    assert (tmp_path / "trials.csv").read_text() == text and [p.name for p in tmp_path.iterdir()] == ["trials.csv"]
