"""The table builder: what it trains, in which order, and that a rerun trains nothing twice (tiny task)."""
from __future__ import annotations

from nas.bench.build import build_table, journal_rows
from nas.bench.table import FAMILY, PRESET, SAMPLE, TASKS, Task, build_order, task_plan

TINY = Task("tiny", epochs=1, image_size=32, batch_size=4, patches_per_epoch=8, presets=False, noise_every=2)


def test_a_real_task_trains_no_presets_and_its_own_noise_seeds():
    plan, _ = task_plan(TASKS["cvc"])
    order = build_order(plan, 31, noise_every=TASKS["cvc"].noise_every, presets=TASKS["cvc"].presets)
    kinds = {entry.kind for entry in order}
    assert PRESET not in kinds and {FAMILY, SAMPLE} <= kinds
    noisy = sorted({entry.arch_id for entry in order if entry.seed != 0})
    assert noisy == ["s0000", "s0015", "s0030"]
    assert plan.data.in_channels == 3  # RGB polyps: the family is planned for three channels


def test_a_resumed_build_trains_only_what_the_journal_lacks(tmp_path):
    table, journal = tmp_path / "tiny.parquet", tmp_path / "tiny.journal.jsonl"
    plan, _ = task_plan(TINY)
    order = [entry.key for entry in build_order(plan, 1, noise_every=TINY.noise_every, presets=False)]
    lines: list[str] = []
    assert build_table(TINY, 1, table, journal, workers=1, limit=2, log=lines.append) == 2
    with journal.open("a", encoding="utf-8") as out:
        out.write('{"arch_id": "cut by a kill')  # the line a kill leaves: skipped
    assert build_table(TINY, 1, table, journal, workers=1, limit=2, log=lines.append) == 2
    keys = [(row["arch_id"], row["seed"]) for row in journal_rows(journal)]
    assert keys == order[:4], lines  # the next two in build order, none of the first two again
    assert lines[3].startswith("table tiny: 2 trainings done"), lines


def test_a_table_of_another_fidelity_is_not_resumed(tmp_path, monkeypatch, capsys):
    """Rows trained at other epochs would count as done: the build refuses, one line naming what to move;
    the CLI exits 2 and writes nothing."""
    import json
    import sys
    from pathlib import Path

    import pytest

    table, journal = tmp_path / "tiny.parquet", tmp_path / "tiny.journal.jsonl"
    journal.write_text(json.dumps({"arch_id": "s0000", "seed": 0, "val_dice": [0.1, 0.2]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 training\\(s\\) of 2 epoch\\(s\\); task tiny trains 1"):
        build_table(TINY, 1, table, journal, workers=1, limit=1, log=lambda _: None)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import nasbench

    monkeypatch.setitem(TASKS, "tiny", TINY)
    monkeypatch.setattr(nasbench, "paths", lambda task: (table, journal))
    with pytest.raises(SystemExit) as exited:
        nasbench.main(["build", "--task", "tiny", "--count", "1", "--workers", "1"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "move both aside" in err
    assert not table.exists() and len(journal_rows(journal)) == 1
