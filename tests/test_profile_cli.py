"""``nas-profile``: its figures are nas.costs.measure' on the same spec; bad input is one line and exit 2."""
from __future__ import annotations

import json

import pytest

from nas.costs.constraints import training_step_memory
from nas.costs.measure import count_macs, count_params
from nas.cli.profile import main
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

FAST = ["--image-size", "32", "--repeats", "1", "--warmup", "0", "--device", "cpu"]


def tiny_spec() -> dict:
    """Small, so profiling it takes well under a second."""
    return ResUNetSpec(encoder_widths=(8, 16, 16), decoder_widths=(8, 16), skip_attention="se").to_dict()


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_of_a_spec_equals_nas_costs(tmp_path, capsys):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec()))
    code, out, _ = run(capsys, "--spec", str(spec_file), *FAST, "--batch-size", "2", "--json")
    assert code == 0
    result = json.loads(out)
    space = get_space("resunet")
    spec = space.spec_from_dict(tiny_spec())
    model = space.build_model(spec, 1, 1)
    assert result["input_shape"] == [2, 1, 32, 32]
    assert result["params"] == count_params(model)
    assert result["macs"] == count_macs(model, (2, 1, 32, 32)) > 0
    assert result["flops"] == 2 * result["macs"]
    assert result["train_memory_mb"] == pytest.approx(training_step_memory(model, (2, 1, 32, 32))["train_memory_mb"])
    assert result["latency_ms"] > 0 and result["latency_device"].startswith("cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]  # writes nothing


def test_text_output_says_which_is_macs_and_which_is_flops(tmp_path, capsys):
    # A checkpoint's spec.json (the spec nested, with space and in_channels) works too.
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"format": "resunet-nas-checkpoint", "space": "resunet", "in_channels": 3,
                                     "spec": tiny_spec()}))
    code, out, _ = run(capsys, "--spec", str(tmp_path), *FAST)
    assert code == 0
    model = get_space("resunet").build_model(get_space("resunet").spec_from_dict(tiny_spec()), 3, 1)
    macs = count_macs(model, (1, 3, 32, 32))
    assert "input:    (1, 3, 32, 32)" in out
    assert f"MACs:     {macs:,}" in out and f"FLOPs:    {2 * macs:,}" in out and "= 2 x MACs" in out
    assert f"params:   {count_params(model):,}" in out
    assert "latency:" in out and "cpu" in out and "training-step memory:" in out


@pytest.mark.parametrize("args, message", [
    (["--preset", "no-such-preset"], "unknown preset 'no-such-preset'"),
    (["--spec", "{dir}/absent.json"], "cannot read it"),
    (["--spec", "{dir}/broken.json"], "not valid JSON"),
    (["--spec", "{dir}/list.json"], "expected a JSON object"),
    (["--spec", "{dir}/invalid.json"], "invalid ResUNetSpec"),
    (["--spec", "{dir}/list.json", "--image-size", "0"], "argument --image-size: must be >= 1"),
    ([], "give --preset NAME or --spec FILE"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "invalid.json").write_text(json.dumps({**tiny_spec(), "encoder_widths": [-8, 16]}))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capsys, *FAST, *[a.replace("{dir}", str(tmp_path)) for a in args])
    assert code == 2 and out == ""
    assert message in err and err.strip().splitlines()[-1].startswith("nas-profile: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_presets_are_listed_and_profiled(capsys):
    presets = pytest.importorskip("search_spaces.presets")
    code, out, _ = run(capsys, "--list-presets")
    names = [p if isinstance(p, str) else p.name for p in presets.list_presets()]
    assert code == 0 and [line.split(":")[0] for line in out.splitlines()] == names
    smallest = min(names, key=lambda n: count_params(_build(presets.get_preset(n))))
    code, out, _ = run(capsys, "--preset", smallest, *FAST, "--json")
    preset = presets.get_preset(smallest)
    assert code == 0 and json.loads(out)["params"] == count_params(_build(preset))
    assert json.loads(out)["input_shape"][1] == preset.in_channels


def _build(preset):
    return get_space(preset.space).build_model(preset.spec, preset.in_channels, 1)


@pytest.mark.slow
def test_resunet_standard_reproduces_the_published_figures(capsys):
    presets = pytest.importorskip("search_spaces.presets")
    if "resunet-standard" not in [p if isinstance(p, str) else p.name for p in presets.list_presets()]:
        pytest.skip("no resunet-standard preset")
    code, out, _ = run(capsys, "--preset", "resunet-standard", "--image-size", "256", "--repeats", "1",
                       "--warmup", "0", "--device", "cpu", "--json")
    result = json.loads(out)
    assert code == 0
    assert result["params"] == pytest.approx(8.22e6, rel=1e-3)
    assert result["macs"] == pytest.approx(45.2e9, rel=2e-3) and result["flops"] == 2 * result["macs"]
