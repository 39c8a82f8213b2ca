"""Issue 26: EXIF-oriented images and masks, nas-profile at a size that does not fit, a storage that fails mid-run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.data.loading import DataError, _read_image, load_data

ORIENTATION = 0x0112  # EXIF tag; 6: "turn 90 degrees clockwise to show"


def _save(array: np.ndarray, path: Path, orientation: int | None) -> None:
    image = Image.fromarray(array)
    exif = image.getexif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes()) if orientation is not None else image.save(path)


def _exif_data(root: Path, *, image_suffix: str = ".png", mask_orientation: int | None = 6) -> tuple[np.ndarray, np.ndarray]:
    """images/ + masks/ of 4 identical 24x16 pairs, the image stored with orientation 6; returns what a viewer shows."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.zeros((16, 24), np.uint8)
    image[:4, :] = 255  # a bright band along the stored top edge
    mask = np.zeros((16, 24), np.uint8)
    mask[:4, :6] = 255  # the foreground in the stored top-left corner
    for i in range(4):
        _save(image, root / "images" / f"im{i}{image_suffix}", 6)
        _save(mask, root / "masks" / f"im{i}.png", mask_orientation)
    stored = np.asarray(Image.open(root / "images" / f"im0{image_suffix}").convert("L"))  # decoded, not turned
    return np.rot90(stored, -1) / 255.0, np.rot90(mask, -1) > 0


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_exif_rotated_pair_is_read_as_a_viewer_shows_it(tmp_path, suffix):
    shown_image, shown_mask = _exif_data(tmp_path / "data", image_suffix=suffix)
    assert shown_image.shape == (24, 16)  # turned: 24 rows of 16 px
    data = load_data(str(tmp_path / "data"), image_size=32, seed=0)
    for image, mask in zip(data.train_images + data.val_images, data.train_masks + data.val_masks):
        assert tuple(image.shape) == (1, 24, 16) and tuple(mask.shape) == (1, 24, 16)
        np.testing.assert_allclose(image[0].numpy(), shown_image, atol=1e-6)
        assert (mask[0].numpy() > 0).tolist() == shown_mask.tolist()
        assert mask[0, :, -4:].sum() > 0 and mask[0, :, :-4].sum() == 0  # the band is now on the right edge


def test_an_exif_rotated_image_with_an_unrotated_mask_is_refused(tmp_path):
    _exif_data(tmp_path / "data", mask_orientation=None)
    with pytest.raises(DataError) as caught:
        load_data(str(tmp_path / "data"), image_size=32, seed=0)
    message = str(caught.value)
    assert "\n" not in message and "is 24x16 but image" in message and "is 16x24" in message
    assert "EXIF orientation" in message


def test_nas_predict_reads_its_inputs_the_same_way(tmp_path):
    shown_image, _ = _exif_data(tmp_path / "data")
    array = _read_image(tmp_path / "data" / "images" / "im0.png")  # nas-predict's reader
    np.testing.assert_allclose(array[..., 0], shown_image, atol=1e-6)


def _profile(capsys, *args):
    from nas.cli import profile

    try:
        code = profile.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_nas_profile_skips_the_real_forward_that_would_not_fit(capsys, monkeypatch):
    import nas.costs.inference_memory as counting
    import nas.costs.measure as measure

    monkeypatch.setattr(counting, "available_memory", lambda device="cpu": 2**20)  # 1 MiB free
    monkeypatch.setattr(measure, "measure_costs", lambda *a, **k: pytest.fail("the real forward ran"))
    code, out, err = _profile(capsys, "--preset", "unet-16", "--image-size", "64")
    assert code == 0 and err == ""
    latency = [line for line in out.splitlines() if line.startswith("latency:")]
    assert len(latency) == 1 and "not measured: the inference forward needs about" in latency[0]
    assert "GiB available on cpu" in latency[0]
    assert "inference memory:" in out and "MACs:     188,350,464" in out and "training-step memory:" in out
    code, out, _ = _profile(capsys, "--preset", "unet-16", "--image-size", "64", "--json")
    import json

    result = json.loads(out)
    assert code == 0 and result["latency_ms"] is None and result["latency_skipped"].startswith("not measured")
    assert result["inference_memory_mb"] > 0 and result["macs"] == 188_350_464


def test_nas_profile_runs_the_real_forward_when_it_fits(capsys):
    code, out, _ = _profile(capsys, "--preset", "unet-16", "--image-size", "32", "--repeats", "1", "--warmup", "0")
    assert code == 0 and " ms  (median of 1 forwards" in out and "inference memory:" in out


def test_inference_memory_is_counted_without_allocating_and_scales_with_the_pixels():
    from nas.costs.inference_memory import inference_memory
    from search_spaces import get_space, presets

    preset = presets.get_preset("unet-16")
    model = get_space(preset.space).build_model(preset.spec, 1, 1)
    small = inference_memory(model, (1, 1, 64, 64))["inference_activation_bytes"]
    huge = inference_memory(model, (1, 1, 8192, 8192))["inference_activation_bytes"]  # 28 GiB, counted on meta
    assert small >= 2 * 64 * 64 * 4  # at least the input and the output
    assert huge == pytest.approx(small * (8192 // 64) ** 2, rel=0.01)
