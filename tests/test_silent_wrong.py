"""Data and settings that used to load fine and then give a silently wrong answer (issue 16).

Each test fails on the old behaviour: a NaN pixel became an all-zero image, an alpha-only mask an
empty one, a dataset without foreground trained a "Dice 1.000" model, a 1x1-pixel dataset loaded,
the depth check used --image-size while training ran at the images' size, and the constraint
check built a 2D input for a 3D model.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data.checks import data_fingerprint
from nas.data.errors import DataError
from nas.data.loading import load_data


def _folder(root: Path, n: int = 4, size: int = 16, masks=None, images=None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = images[i] if images is not None else \
            Image.fromarray((np.random.default_rng(i).random((size, size)) * 255).astype(np.uint8))
        image.save(root / "images" / f"im{i}.{'tif' if image.mode == 'F' else 'png'}")
        mask = masks[i] if masks is not None else np.pad(np.full((4, 4), 255, np.uint8), (size - 4) // 2)
        (mask if isinstance(mask, Image.Image) else Image.fromarray(mask)).save(root / "masks" / f"im{i}.png")
    return root


def _load(folder: Path):
    return load_data(str(folder), image_size=16, seed=0)


def test_a_float_tiff_with_one_nan_pixel_is_refused_naming_the_file(tmp_path):
    pixels = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    pixels[3, 5] = np.nan
    images = [Image.fromarray(pixels, mode="F")] + [Image.fromarray(np.zeros((16, 16), np.float32), mode="F")] * 3
    folder = _folder(tmp_path / "d", images=images)
    with pytest.raises(DataError, match=r"im0\.tif has 1 NaN value\(s\) \(first at index \[3, 5\]\)"):
        _load(folder)


def test_a_volume_with_an_infinite_voxel_is_refused(tmp_path):
    from nas.data.volumes import read_volume

    volume = np.random.default_rng(0).random((8, 8, 8))
    volume[1, 2, 3] = np.inf
    np.save(tmp_path / "v.npy", volume)
    with pytest.raises(DataError, match=r"v\.npy has 1 infinite value"):
        read_volume(tmp_path / "v.npy")


def test_a_mask_whose_foreground_is_only_in_its_alpha_channel_is_refused(tmp_path):
    alpha = np.pad(np.full((4, 4), 255, np.uint8), 6)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = alpha  # black everywhere; the shape is drawn in the alpha channel only
    masks = [Image.fromarray(rgba, mode="RGBA")] + [np.pad(np.full((4, 4), 255, np.uint8), 6)] * 3
    with pytest.raises(DataError, match=r"masks/im0\.png has transparency .* not only in the alpha channel"):
        _load(_folder(tmp_path / "d", masks=masks))


def test_a_mask_whose_transparent_pixels_are_its_background_loads(tmp_path):
    grey = np.pad(np.full((4, 4), 255, np.uint8), 6)
    la = np.stack([grey, grey], axis=-1)  # opaque exactly where the foreground is
    masks = [Image.fromarray(la, mode="LA")] + [grey] * 3
    data = _load(_folder(tmp_path / "d", masks=masks))
    assert sum(float(m.sum()) for m in data.train_masks + data.val_masks) == 4 * 16


def test_masks_without_any_foreground_are_refused(tmp_path):
    empty = [np.zeros((16, 16), np.uint8)] * 4
    with pytest.raises(DataError, match="no training mask in .* has a foreground pixel"):
        _load(_folder(tmp_path / "d", masks=empty))


def test_a_validation_split_without_foreground_is_refused(tmp_path):
    root = tmp_path / "d"
    _folder(root / "train")
    _folder(root / "val", n=2, masks=[np.zeros((16, 16), np.uint8)] * 2)
    with pytest.raises(DataError, match=r"the 2 validation image\(s\) of .* have no foreground pixel"):
        _load(root)


def test_a_one_pixel_dataset_is_refused(tmp_path):
    images = [Image.fromarray(np.full((1, 1), 128, np.uint8))] * 4
    masks = [np.full((1, 1), 255, np.uint8)] * 4
    with pytest.raises(DataError, match=r"im0\.png is 1x1 px; images need at least 4 px per side"):
        _load(_folder(tmp_path / "d", images=images, masks=masks))


def test_the_fingerprint_changes_with_the_masks_and_with_an_added_image(tmp_path):
    folder = _folder(tmp_path / "d")
    before = data_fingerprint(_load(folder))
    assert data_fingerprint(_load(folder)) == before  # deterministic
    inverted = 255 - np.asarray(Image.open(folder / "masks" / "im1.png"))
    Image.fromarray(inverted).save(folder / "masks" / "im1.png")
    assert data_fingerprint(_load(folder)) != before
    other = _folder(tmp_path / "e")
    base = data_fingerprint(_load(other))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(other / "images" / "im9.png")
    Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), 6)).save(other / "masks" / "im9.png")
    assert data_fingerprint(_load(other)) != base


# ----------------------------------------------------------------------------- the trial policy

def _job(data, image_size: int, constraints=None):
    from nas.costs.constraints import Constraints
    from nas.engine.job import SearchJob
    from nas.engine.trial import TrialSettings
    from nas.train.trainer import TrainConfig
    from search_spaces import get_space

    space = get_space("resunet3d" if data.spatial_dims == 3 else "resunet")
    settings = TrialSettings(image_size=image_size, train=TrainConfig(epochs=1, batch_size=2, device="cpu"))
    return SearchJob(space=space, data=data, settings=settings, out=Path("."), trials=1,
                     constraints=constraints or Constraints())


class _Port(SimpleNamespace):
    def constraint_violations(self, verdict):
        self.verdict = verdict


def test_the_depth_check_uses_the_size_training_really_runs_at(tmp_path):
    from nas.engine.policy import TrialStopped, check_feasible
    from search_spaces.resunet import ResUNetSpec

    data = _load(_folder(tmp_path / "d", size=16))  # images of 16 px, --image-size 64
    deep = ResUNetSpec(encoder_widths=(4, 4, 4, 4), decoder_widths=(4, 4, 4))  # 16 px -> 2 px: fine
    deeper = ResUNetSpec(encoder_widths=(4,) * 5, decoder_widths=(4,) * 4)  # 16 px -> 1 px
    job = _job(data, image_size=64)
    assert check_feasible(job, deep, _Port(), log=lambda text: None) == {}
    with pytest.raises(TrialStopped, match=r"depth 5 halves the 16 px training patches"):
        check_feasible(job, deeper, _Port(), log=lambda text: None)


def test_constraints_measure_a_3d_model_on_a_volume():
    from nas.costs.constraints import Constraints
    from nas.engine.policy import check_feasible
    from search_spaces.resunet import ResUNetSpec

    volumes = SimpleNamespace(train_images=[torch.zeros(1, 16, 16, 16)], in_channels=1, spatial_dims=3)
    spec = ResUNetSpec(encoder_widths=(4, 8, 8), decoder_widths=(4, 8), spatial_dims=3, norm="group")
    port = _Port()
    measured = check_feasible(_job(volumes, 16, Constraints(max_macs=10**12, max_memory_mb=10**6)), spec, port,
                              log=lambda text: None)
    assert port.verdict.feasible
    assert measured["macs"] > 0 and measured["train_memory_mb"] > 0


# ----------------------------------------------------------------------------- empty ground truth

def test_empty_vs_empty_never_makes_a_predict_nothing_model_best():
    from nas.train.metrics import foreground_mean, segmentation_quality

    empty, blob = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    blob[2:5, 2:5] = True
    truths = [empty, empty, empty, blob]  # three images with nothing to find, one with an object
    nothing = [empty] * 4
    noisy = [blob.copy(), blob.copy(), blob.copy(), blob.copy()]  # finds the object, false alarms elsewhere
    scores = {"nothing": segmentation_quality(nothing, truths), "noisy": segmentation_quality(noisy, truths)}
    assert scores["nothing"]["dice"] == 0.0  # the old mean over all images gave 0.75
    assert scores["noisy"]["dice"] == 1.0 and scores["noisy"]["precision"] == 0.25  # false alarms still cost
    assert scores["nothing"]["empty_truth_images"] == 3
    assert foreground_mean([1.0, 1.0, 1.0, 0.0], truths) == 0.0
    assert foreground_mean([0.0, 0.0, 0.0, 1.0], truths) == 1.0
    assert foreground_mean([1.0], [empty]) == 0.0  # no foreground anywhere: never 1.0


# ----------------------------------------------------------------------------- model.onnx vouched for

def test_a_swapped_model_onnx_is_refused(tmp_path, capsys):
    from conftest import call

    from nas import save_checkpoint
    from nas.cli.predict import main as predict_main
    from nas.data.normalization import Normalization
    from nas.deploy.export import export_onnx
    from search_spaces import get_space
    from search_spaces.resunet import ResUNetSpec

    space = get_space("resunet")
    folders = {}
    for name, width in (("a", 4), ("b", 8)):
        spec = ResUNetSpec(encoder_widths=(width, width, width), decoder_widths=(width, width))
        torch.manual_seed(0)
        folders[name] = save_checkpoint(tmp_path / name, space.build_model(spec, 1, 1), spec, space="resunet",
                                        in_channels=1, out_channels=1, normalization=Normalization((0.5,), (0.25,)),
                                        metrics={"input_shape": [1, 1, 16, 16]})
        export_onnx(folders[name], folders[name] / "model.onnx", input_size=16)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "in.png")
    args = ["--checkpoint", folders["a"], "--input", tmp_path / "in.png", "--onnx"]
    assert call(capsys, predict_main, *args, "--out", tmp_path / "ok")[0] == 0
    (folders["a"] / "model.onnx").write_bytes((folders["b"] / "model.onnx").read_bytes())  # another model
    code, _, err = call(capsys, predict_main, *args, "--out", tmp_path / "swapped")
    assert code == 2 and "model.onnx: content hash does not match metrics.json" in err.splitlines()[-1]
    assert not (tmp_path / "swapped").exists()


def test_a_model_that_predicts_nothing_scores_0_not_the_share_of_empty_images():
    """The trainer's Dice (the trial's objective) on a validation split of 3 empty images and 1 object."""
    from nas.data.loading import SegmentationData
    from nas.data.normalization import Normalization
    from nas.train.trainer import TrainConfig, train_model

    blob = torch.zeros(1, 16, 16)
    blob[:, 6:10, 6:10] = 1
    images = [torch.rand(1, 16, 16) for _ in range(4)]
    data = SegmentationData(name="t", source="t", train_images=images, train_masks=[blob] * 4,
                            val_images=images, val_masks=[torch.zeros(1, 16, 16)] * 3 + [blob],
                            val_names=[f"v{i}" for i in range(4)], in_channels=1,
                            normalization=Normalization((0.5,), (0.25,)))
    nothing = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        nothing.weight.zero_()
        nothing.bias.fill_(-20.0)  # predicts background everywhere, and stays so at this learning rate
    result = train_model(nothing, data, TrainConfig(epochs=1, batch_size=2, patch_size=16, lr=1e-12, device="cpu"))
    assert result.best_dice == 0.0  # the old mean over all images gave 0.75


# ----------------------------------------------------------------------------- found in the fresh look

def test_a_tiff_stack_or_an_animated_gif_is_refused_not_read_as_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((16, 16), 40 * k, np.uint8)) for k in range(3)]
    folder = _folder(tmp_path / "d")
    (folder / "images" / "im0.png").unlink()
    frames[0].save(folder / "images" / "im0.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match=r"image .*im0\.tif holds 3 frames \(a stack or an animation\)"):
        _load(folder)


def test_masks_that_are_foreground_everywhere_are_refused(tmp_path):
    full = [np.full((16, 16), 255, np.uint8)] * 4
    with pytest.raises(DataError, match=r"every pixel of the 3 train mask\(s\) .* is foreground"):
        _load(_folder(tmp_path / "d", masks=full))


def test_an_empty_fov_mask_is_refused(tmp_path):
    folder = _folder(tmp_path / "d")
    (folder / "fov").mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16), 0 if i == 2 else 255, np.uint8)).save(folder / "fov" / f"im{i}.png")
    with pytest.raises(DataError, match=r"FOV mask .*im2\.png is empty: no pixel of .*im2\.png would be"):
        _load(folder)


@pytest.mark.parametrize("dtype", [np.complex64, bool])
def test_a_complex_or_boolean_volume_is_not_an_image(tmp_path, dtype):
    from nas.data.volumes import read_volume

    np.save(tmp_path / "v.npy", np.ones((8, 8, 8), dtype))
    with pytest.raises(DataError, match=r"v\.npy holds (complex64|bool) values; expected integer or float"):
        read_volume(tmp_path / "v.npy")
