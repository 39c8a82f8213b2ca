"""Restricting a space: parsing --fix/--choices/TOML against the dimensions, and RestrictedSuggest."""
from __future__ import annotations

import json

import pytest

from search_spaces import RandomSuggest, get_space
from search_spaces.dimensions import CategoricalDimension, FloatDimension, IntDimension
from search_spaces.overrides import (OverrideError, RestrictedSuggest, RestrictionConflict, check_restriction,
                                     describe_dimensions, load_config, make_restriction,
                                     restriction_from_args)

DIMS = (
    IntDimension("depth", 3, 6, help="stages"),
    IntDimension("width", 8, 32, step=4),
    CategoricalDimension("block", ("basic", "inverted", "plain")),
    IntDimension("expansion", 2, 6, applies_when="block=inverted"),
    CategoricalDimension("aspp", (False, True)),
    CategoricalDimension("dropout", (0.0, 0.1, 0.2)),
    FloatDimension("lr", 1e-4, 1e-2, log=True),
)


def sample(suggest):
    """A space with a conditional dimension, like resunet's ``expansion``."""
    values = {d.name: d.suggest(suggest) for d in DIMS if d.name != "expansion"}
    if values["block"] == "inverted":
        values["expansion"] = DIMS[3].suggest(suggest)
    return values


class Recorder:
    """An inner ``Suggest`` that records what it was asked."""

    def __init__(self) -> None:
        self.random = RandomSuggest(0)
        self.calls: list[tuple] = []

    def suggest_int(self, name, low, high, *, step=1, log=False):
        self.calls.append(("int", name, low, high, step))
        return self.random.suggest_int(name, low, high, step=step)

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.calls.append(("float", name, low, high))
        return self.random.suggest_float(name, low, high)

    def suggest_categorical(self, name, choices):
        self.calls.append(("cat", name, tuple(choices)))
        return self.random.suggest_categorical(name, choices)


def test_values_are_parsed_by_the_dimension_type():
    r = restriction_from_args(DIMS, ["depth=4", "aspp=true", "dropout=0", "lr=0.001"], ["block=basic, inverted"])
    assert r.fixed == {"depth": 4, "aspp": True, "dropout": 0.0, "lr": 0.001}
    assert r.choices == {"block": ("basic", "inverted")}
    assert json.loads(json.dumps(r.to_dict())) == r.to_dict()


def test_a_single_choice_is_a_fix_and_duplicates_collapse():
    r = restriction_from_args(DIMS, [], ["depth=4,4", "width=8,12,8"])
    assert r.fixed == {"depth": 4} and r.choices == {"width": (8, 12)}


@pytest.mark.parametrize("fix, choices, message", [
    (["depth=0"], [], "--fix depth=0: depth must be int 3..6, got 0"),
    (["depth=7"], [], "depth must be int 3..6"),
    (["width=10"], [], "width must be int 8..32 step 4, got 10"),
    (["depth=four"], [], "depth takes an integer"),
    (["colour=red"], [], "--fix colour: unknown dimension; known dimensions: depth, width"),
    (["block=cbam"], [], "block must be one of basic, inverted, plain, got 'cbam'"),
    (["aspp=maybe"], [], "aspp must be one of False, True"),
    (["lr=1"], [], "lr must be float"),
    (["depth"], [], "--fix takes NAME=VALUE"),
    (["depth=4", "depth=5"], [], "--fix depth is given twice"),
    ([], ["block=basic,,plain"], "comma-separated"),
    ([], ["depth=3,9"], "--choices depth=3,9: depth must be int 3..6, got 9"),
    (["depth=4"], ["depth=3,4"], "depth is both fixed and given choices"),
])
def test_impossible_overrides_are_refused(fix, choices, message):
    with pytest.raises(OverrideError) as error:
        restriction_from_args(DIMS, fix, choices)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_toml_config_means_the_same_and_flags_override_it(tmp_path):
    config = tmp_path / "space.toml"
    config.write_text('[fix]\ndepth = 4\naspp = true\n\n[choices]\nblock = ["basic", "inverted"]\nwidth = "8,12"\n')
    from_file = restriction_from_args(DIMS, config=config)
    from_flags = restriction_from_args(DIMS, ["depth=4", "aspp=true"], ["block=basic,inverted", "width=8,12"])
    assert from_file == from_flags
    merged = restriction_from_args(DIMS, ["block=plain"], ["depth=3,4"], config=config)
    assert merged.fixed == {"aspp": True, "block": "plain"}
    assert merged.choices == {"depth": (3, 4), "width": (8, 12)}


@pytest.mark.parametrize("text, message", [
    ("[fixed]\ndepth = 4\n", "unknown key(s) ['fixed']"),
    ("depth = 4\n", "unknown key(s) ['depth']"),
    ("fix = 4\n", "fix must be a table"),
    ("[fix]\ncolour = 'red'\n", "[fix] colour: unknown dimension"),
    ("[fix]\ndepth = 0\n", "[fix] depth=0: depth must be int 3..6"),
    ("[choices]\nblock = []\n", "comma-separated"),
    ("[fix\n", "not valid TOML"),
])
def test_bad_config_files_are_refused(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(OverrideError, match="--config") as error:
        restriction_from_args(DIMS, config=config)
    assert message in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(OverrideError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_fixed_values_never_reach_the_sampler_and_are_recorded():
    restriction = make_restriction(DIMS, {"depth": "5", "block": "inverted", "expansion": "3"}, {})
    inner = Recorder()
    suggest = RestrictedSuggest(inner, restriction)
    values = sample(suggest)
    assert (values["depth"], values["block"], values["expansion"]) == (5, "inverted", 3)
    assert suggest.fixed == {"depth": 5, "block": "inverted", "expansion": 3}
    assert not {"depth", "block", "expansion"} & {call[1] for call in inner.calls}


def test_choices_narrow_what_the_sampler_is_offered():
    restriction = make_restriction(DIMS, {}, {"depth": "3,4,5", "width": "8,20", "block": "plain,basic",
                                              "lr": "0.001,0.01"})
    inner = Recorder()
    sample(RestrictedSuggest(inner, restriction))
    calls = {call[1]: call for call in inner.calls}
    assert calls["depth"] == ("int", "depth", 3, 5, 1)  # still a range: stays an int for the sampler
    assert calls["width"] == ("cat", "width", (8, 20))  # not a range: categorical
    assert calls["block"] == ("cat", "block", ("basic", "plain"))  # the space's order
    assert calls["lr"] == ("cat", "lr", (0.001, 0.01))


def test_a_conditional_dimension_that_never_applies_is_refused():
    restriction = make_restriction(DIMS, {"block": "basic", "expansion": "4"}, {})
    with pytest.raises(OverrideError, match="expansion: the dimension never applies"):
        check_restriction(sample, restriction, DIMS)
    check_restriction(sample, make_restriction(DIMS, {"expansion": "4"}, {}), DIMS)  # applies sometimes


def test_a_value_the_architecture_does_not_offer_is_a_conflict():
    def narrower(suggest):  # this architecture offers depth 3..4 only
        return suggest.suggest_int("depth", 3, 4)

    restriction = make_restriction(DIMS, {"depth": "6"}, {})
    with pytest.raises(RestrictionConflict, match="--fix depth=6 does not apply here"):
        narrower(RestrictedSuggest(RandomSuggest(0), restriction))
    with pytest.raises(OverrideError, match="no architecture of the space meets the restriction"):
        check_restriction(narrower, restriction, DIMS)


def test_the_resunet_space_honours_a_restriction():
    space = get_space("resunet")
    names = {d.name for d in space.dimensions}
    fix = {"depth": "4"}
    if "attention" in names:  # the full space (issue 3); the first one has skip_attention
        fix["attention"] = "se"
    restriction = restriction_from_args(space.dimensions, [f"{k}={v}" for k, v in fix.items()])
    check_restriction(space.sample_spec, restriction, space.dimensions)
    for seed in range(20):
        suggest = RestrictedSuggest(RandomSuggest(seed), restriction)
        spec = space.sample_spec(suggest)
        assert spec.depth == 4 and suggest.fixed["depth"] == 4
        assert "depth" not in suggest.inner.params
        if "attention" in fix:
            assert spec.skip_attention == "se"


def test_describe_lists_every_dimension_with_its_restriction():
    restriction = make_restriction(DIMS, {"depth": "4"}, {"block": "basic,plain"})
    lines = describe_dimensions(DIMS, restriction)
    assert len(lines) == 1 + len(DIMS)
    row = {line.split()[0]: line for line in lines[1:]}
    assert "int 3..6" in row["depth"] and "fixed: 4" in row["depth"] and "stages" in row["depth"]
    assert "restricted to basic, plain" in row["block"]
    assert "only when block=inverted" in row["expansion"]


def test_the_built_in_compact_config_fixes_the_resunet_space_and_flags_override_it(tmp_path, monkeypatch):
    """``--config compact``: a name, not a file; every sampled spec honours it and a --fix still wins."""
    monkeypatch.chdir(tmp_path)  # no file called "compact" here
    space = get_space("resunet")
    compact = restriction_from_args(space.dimensions, config="compact")
    assert compact.fixed["width_mode"] == "growth" and compact.fixed["skip_fusion"] == "concat"
    check_restriction(space.sample_spec, compact, space.dimensions)
    free = [d.name for d in space.dimensions if d.name not in compact.fixed]
    assert "depth" in free and "base_width" in free and len(free) < len(space.dimensions) - 5
    for seed in range(10):
        suggest = RestrictedSuggest(RandomSuggest(seed), compact)
        spec = space.sample_spec(suggest)
        assert spec.to_dict()["skip_fusion"] == "concat" and spec.to_dict()["dropout"] == 0.0
        assert not any(name.startswith("width_step") for name in suggest.inner.params)
    overridden = restriction_from_args(space.dimensions, ["skip_fusion=add"], config="compact")
    assert overridden.fixed["skip_fusion"] == "add" and overridden.fixed["width_mode"] == "growth"
    (tmp_path / "compact").write_text("[fix]\ndepth = 4\n")  # a file of that name is read as the file
    assert restriction_from_args(space.dimensions, config="compact").fixed == {"depth": 4}
