"""Checkpoints: reload gives identical outputs; every kind of broken folder is refused clearly."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from nas import CheckpointError, load_checkpoint, read_checkpoint_info, save_checkpoint
from nas.data.loading import Normalization
from search_spaces.resunet import ResUNetSpec, build_model

SPEC = ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 12), skip_attention="se",
                   bridge_dilation=2)
NORM = Normalization(mean=(0.4,), std=(0.2,))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(SPEC, 1, 1)
    # move BN statistics away from their defaults so a lost buffer would show
    model.train()
    model(torch.randn(4, 1, 32, 32))
    model.eval()
    folder = save_checkpoint(tmp_path / "ckpt", model, SPEC, space="resunet", in_channels=1,
                             out_channels=1, normalization=NORM, metrics={"dice": 0.5})
    return folder, model


def test_reload_gives_identical_outputs(saved):
    folder, model = saved
    x = torch.randn(2, 1, 40, 36)
    reloaded, spec = load_checkpoint(folder)
    assert spec == SPEC
    assert not reloaded.training
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
    info = read_checkpoint_info(folder)
    assert info.normalization == NORM and info.metrics["dice"] == 0.5
    assert len(info.metrics["weights_sha256"]) == 64
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "model.safetensors", "spec.json"]
    assert not list(folder.parent.glob(".*tmp*"))


def test_saving_over_an_existing_checkpoint_replaces_it(saved):
    folder, model = saved
    other = build_model(SPEC, 1, 1)
    save_checkpoint(folder, other, SPEC, space="resunet", in_channels=1, out_channels=1,
                    normalization=NORM, metrics={"dice": 0.7})
    assert read_checkpoint_info(folder).metrics["dice"] == 0.7
    assert load_checkpoint(folder)[0].head.weight.equal(other.head.weight)


def _rewrite_spec(folder, **changes):
    path = folder / "spec.json"
    header = json.loads(path.read_text())
    header.update(changes)
    path.write_text(json.dumps(header))


@pytest.mark.parametrize("breakage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]),
     r"100 bytes, but the architecture.s \d+ tensors take [\d,]+ \(truncated"),  # by its size, before hashing
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-8]),
     "hash does not match"),
    (lambda f: (f / "model.safetensors").unlink(), "missing"),
    (lambda f: (f / "spec.json").unlink(), "missing"),
    (lambda f: (f / "spec.json").write_text("{not json"), "not readable JSON"),
    (lambda f: _rewrite_spec(f, format_version=99), "newer"),
    (lambda f: _rewrite_spec(f, space="nope"), "unknown search space"),
    (lambda f: _rewrite_spec(f, spec={**SPEC.to_dict(), "schema_version": 99}), "newer"),
    (lambda f: _rewrite_spec(f, spec={**SPEC.to_dict(), "decoder_widths": [8, 16]}),
     "decoder_widths \\[8, 16\\], but the weights were saved with"),  # the weights' header records the spec
])
def test_broken_checkpoints_are_refused(saved, breakage, message):
    folder, _ = saved
    breakage(folder)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(folder)
    assert "\n" not in str(caught.value)


def test_a_pickle_is_never_unpickled(saved, tmp_path):
    folder, model = saved
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (marker.write_text, ("executed",))

    (folder / "model.safetensors").write_bytes(pickle.dumps({"state": Exploit()}))
    (folder / "metrics.json").write_text("{}")  # no hash to hide behind
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(folder)
    assert not marker.exists()
