"""Issue 26, "models no better than a trivial predictor": such a model is not deployed to best/, is drawn
apart in the report without stretching the Dice axis, and is counted by the search; a search that ended on
its time budget says so, and every Reproduce command carries the budget (--timeout)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import nas
from nas.run.outputs import write_run_outputs
from nas.run.run_files import below_trivial, read_trivial
from reports.cards import reproduce_command
from reports.trivial import ending_note


def with_floor(tiny_run: Path, tmp_path: Path, dice: float) -> Path:
    """A copy of the tiny run whose trivial predictor scores ``dice`` on validation."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    trivial = json.loads((run / "trivial.json").read_text())
    trivial["splits"]["val"]["constants"]["all-foreground"] = dice
    trivial["splits"]["val"]["dice"] = dice
    (run / "trivial.json").write_text(json.dumps(trivial))
    return run


def rewrite(run: Path, *, export: bool = True):
    opened = nas.open_run(run)
    return opened, write_run_outputs(opened.records, run, title="t", settings=opened.settings, overlays=False,
                                     export=export, latency_pass=False)  # the tiny run's latency.json is reused


def payload(run: Path) -> dict:
    html = (run / "report.html").read_text(encoding="utf-8")
    return json.loads(html.split('id="report-data">', 1)[1].split("</script>", 1)[0])


def test_a_front_model_below_the_trivial_dice_is_not_deployed(tiny_run, tmp_path):
    run = with_floor(tiny_run, tmp_path, 0.5)  # above both trials (0.19, 0.45)
    assert (run / "best" / "trial_0001").is_dir()
    opened, front = rewrite(run)
    assert [r.number for r in front.front] == [1]  # still the front: it is drawn, not deployed
    assert not list((run / "best").glob("trial_*"))
    assert below_trivial(opened.records, read_trivial(run)) == {0, 1}
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "2 trained model(s) no better than a trivial predictor</b> (all-foreground, validation Dice 0.500)" in html
    assert "best/trial_0001" not in html
    from nas.run.search import _deployed

    assert _deployed(run, front.front[0]) == "not deployed: validation Dice not above the trivial predictor's"


def test_the_dice_axis_is_not_stretched_by_them(tiny_run, tmp_path):
    run = with_floor(tiny_run, tmp_path, 0.3)  # trial 0 (0.19) below it, trial 1 (0.45) above
    rewrite(run, export=False)
    plot = payload(run)["plots"]["plot-macs"]
    low, high = plot["layout"]["yaxis"]["range"]
    assert 0.25 < low < 0.3 and 0.452 < high < 0.5  # spans the level and the model above it, not 0.19
    below = [t for t in plot["traces"] if t["name"].startswith("no better than trivial")]
    assert len(below) == 1 and below[0]["customdata"] == [0] and low < below[0]["y"][0] < 0.3
    assert all(0 not in t.get("customdata", []) for t in plot["traces"] if t is not below[0])
    assert "no better than trivial (1)" in (run / "pareto_macs.svg").read_text()
    # without a trivial level nothing moves (an old run)
    (run / "trivial.json").unlink()
    rewrite(run, export=False)
    plot = payload(run)["plots"]["plot-macs"]
    assert "range" not in plot["layout"]["yaxis"] and not any("trivial" in t["name"] for t in plot["traces"])


def test_the_search_counts_them_on_the_console_and_in_status(tiny_run, tmp_path):
    from nas.run.search import _record_ending

    run = with_floor(tiny_run, tmp_path, 0.5)
    records = nas.open_run(run).records
    line = _record_ending(run, nas.SearchConfig(trials=2), records, 2, None)
    assert line == ("2 of 2 trained model(s) no better than the trivial predictor (all-foreground, validation "
                    "Dice 0.500): trial(s) 0, 1; not deployed to best/")
    assert json.loads((run / "status.json").read_text())["below_trivial"] == 2
    assert json.loads((run / "search_end.json").read_text())["below_trivial"] == 2
    assert _record_ending(tiny_run / "nowhere", nas.SearchConfig(trials=2), [], 0, None) == ""  # unwritable: quiet


def test_the_tiny_search_said_none_were_below(tiny_run):
    assert json.loads((tiny_run / "status.json").read_text())["below_trivial"] == 0
    assert json.loads((tiny_run / "search_end.json").read_text()) == {
        "trials": 2, "timeout": None, "stopped": None, "finished": 2, "below_trivial": 0}


def test_a_search_ended_by_its_time_budget_says_so_and_reproduces_with_it(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "search_end.json").write_text(json.dumps(
        {"trials": 20, "timeout": 90.0, "stopped": "timeout", "finished": 2, "below_trivial": 0}))
    rewrite(run, export=False)  # what nas-report does
    html = (run / "report.html").read_text(encoding="utf-8")
    assert ("<b>The search ended on its time budget:</b> --timeout 90 s reached with 2/20 trials finished; "
            "the same command resumes it.") in html
    commands = [part.split("</pre>", 1)[0] for part in html.split("<h4>Reproduce</h4><pre>")[1:]]
    assert commands and all("--timeout 90.0" in c and "--trials" in c for c in commands)
    frame = nas.load_run(run)
    assert frame.attrs["config"]["budget"] == {"trials": 20, "timeout": 90.0, "stopped": "timeout"}


@pytest.mark.parametrize("ending", [None, {}, {"stopped": None, "timeout": 5}, {"stopped": "timeout"},
                                    {"stopped": "timeout", "timeout": "90"}, {"stopped": "failures", "timeout": 9}])
def test_no_budget_line_without_a_time_budget_ending(ending):
    assert ending_note(ending) == ""


def test_reproduce_carries_the_budget():
    assert "--trials 20 --timeout 3600" in reproduce_command({"trials": 20, "timeout": 3600})
    assert "--timeout" not in reproduce_command({"trials": 20, "timeout": None})


def test_a_hostile_search_end_file_is_ignored(tmp_path):
    from nas.run.run_files import search_end

    deep = "[" * 500 + "]" * 500
    for text in ("[1, 2]", "{", "x" * 10, '{"a": ' + deep + "}"):
        (tmp_path / "search_end.json").write_text(text)
        assert isinstance(search_end(tmp_path), dict)
    (tmp_path / "search_end.json").write_text("[1]")
    assert search_end(tmp_path) == {} and ending_note(search_end(tmp_path)) == ""


@pytest.mark.parametrize("field, value", [("timeout", True), ("timeout", -1), ("timeout", 1e300),
                                          ("timeout", "60"), ("trials", 2.5), ("trials", -3),
                                          ("stopped", "<script>"), ("stopped", 7)])
def test_a_wrong_search_end_field_is_left_out(tmp_path, field, value):
    from nas.run.run_files import search_end

    (tmp_path / "search_end.json").write_text(json.dumps({field: value, "finished": 2}))
    assert search_end(tmp_path) == {"finished": 2}
    assert "--timeout" not in reproduce_command({"trials": 2, **search_end(tmp_path)})
