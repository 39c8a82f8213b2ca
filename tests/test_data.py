"""Data: the synthetic task, folder loading and its errors, training patches, the shared real datasets."""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data.loading import (
    DataError,
    Normalization,
    SegmentationData,
    check_data_source,
    load_data,
)
from nas.data.patches import iterate_train_batches
from nas.data.synthetic import SYNTHETIC_NAME, make_synthetic

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------
# helpers


def components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a 2-D boolean mask, each as an ``(n, 2)`` array of pixels (BFS)."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, pixels = deque([(y0, x0)]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        found.append(np.array(pixels))
    return found


def erode3(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion (outside counts as background): removes every structure <= 2 px wide."""
    padded = np.pad(mask, 1)
    out = np.ones_like(mask, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8))
    image.save(path) if mode is None else image.convert(mode).save(path)


def make_tree(root: Path, count: int = 8, rgb: bool = False) -> Path:
    """``count`` images whose every pixel is ``10 * (i + 1)`` (so means are known), sizes differ."""
    for i in range(count):
        height, width = 20 + i, 24 + 2 * i
        value = 10 * (i + 1)
        shape = (height, width, 3) if rgb else (height, width)
        write_png(root / "images" / f"img{i:02d}.png", np.full(shape, value))
        mask = np.zeros((height, width))
        mask[: height // 2] = 1 if i % 2 else 255  # masks as 0/1 and as 0/255
        write_png(root / "masks" / f"img{i:02d}.png", mask)
    return root


# ---------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_shapes_dtypes_ranges():
    images, masks = make_synthetic(6, 48, seed=0)
    assert images.shape == masks.shape == (6, 1, 48, 48)
    assert images.dtype == masks.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(masks).tolist()) == {0.0, 1.0}
    assert images.std() > 0.02  # not a flat image


def test_synthetic_deterministic_by_seed_and_different_across_seeds():
    first, again, other = make_synthetic(4, 64, 7), make_synthetic(4, 64, 7), make_synthetic(4, 64, 8)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_synthetic_foreground_fraction_is_sane():
    _, masks = make_synthetic(32, 64, seed=1)
    fractions = masks.mean(axis=(1, 2, 3))
    assert 0.05 <= fractions.mean() <= 0.25
    assert fractions.min() > 0.005 and fractions.max() < 0.45


def test_synthetic_has_small_blobs_and_thin_vessels():
    _, masks = make_synthetic(8, 64, seed=2)
    small, thin = 0, 0
    for mask in masks[:, 0] > 0:
        eroded = erode3(mask)
        for pixels in components(mask):
            if len(pixels) < 50:  # under ~8 px across
                small += 1
            survivors = eroded[pixels[:, 0], pixels[:, 1]].mean()
            if len(pixels) >= 40 and survivors < 0.25:  # long and at most ~2-3 px wide
                thin += 1
    assert small >= 15
    assert thin >= 4


def test_synthetic_is_not_solved_by_a_global_threshold():
    """The best single threshold per image (an oracle) must be clearly imperfect on average."""
    images, masks = make_synthetic(16, 64, seed=3)
    best = []
    for image, mask in zip(images[:, 0], masks[:, 0] > 0):
        predictions = image[None] > np.linspace(0, 1, 51)[:, None, None]  # (T, H, W)
        overlap = (predictions & mask).sum(axis=(1, 2))
        best.append((2 * overlap / (predictions.sum(axis=(1, 2)) + mask.sum())).max())
    assert 0.2 < np.mean(best) < 0.85


def test_synthetic_is_fast():
    start = time.process_time()  # this process's CPU time: the same on a busy machine as on a quiet one
    make_synthetic(96, 64, seed=0)
    assert time.process_time() - start < 3.0  # about 0.1 s


def test_load_synthetic_split():
    data = load_data(SYNTHETIC_NAME, image_size=32, seed=4, synthetic_train=6, synthetic_val=3)
    assert data.name == data.source == "synthetic" and data.in_channels == 1
    assert len(data.train_images) == len(data.train_masks) == 6
    assert len(data.val_images) == len(data.val_masks) == 3
    assert data.val_names == ["synthetic_0000", "synthetic_0001", "synthetic_0002"]
    assert data.train_images[0].shape == (1, 32, 32) and data.train_images[0].dtype == torch.float32
    assert not any(torch.equal(v, t) for v in data.val_images for t in data.train_images)
    pixels = torch.stack(data.train_images)
    assert data.normalization.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-5)
    assert data.normalization.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# folders


def test_load_grey_folder_keeps_full_resolution_and_splits_by_seed(tmp_path):
    root = make_tree(tmp_path / "grey")
    Image.fromarray(np.full((27, 38), 80, np.uint8)).save(root / "images" / "img07.jpg", quality=100)
    (root / "images" / "img07.png").unlink()  # one image is a JPEG (its mask stays a PNG)
    check_data_source(str(root))
    data = load_data(str(root), image_size=64, seed=0)
    assert data.name == "grey" and data.source == str(root) and data.in_channels == 1
    assert len(data.val_images) == 2 and len(data.train_images) == 6  # round(0.25 * 8)
    assert sorted(data.val_names + data.train_names) == [f"img{i:02d}" for i in range(8)]
    for image, mask, name in zip(data.val_images, data.val_masks, data.val_names):
        i = int(name[3:])
        assert image.shape == (1, 20 + i, 24 + 2 * i) and mask.shape == (1, 20 + i, 24 + 2 * i)
        assert image.mean().item() == pytest.approx(10 * (i + 1) / 255, abs=2 / 255)
        assert set(mask.unique().tolist()) == {0.0, 1.0}  # 0/1 and 0/255 files both become {0, 1}
        assert mask[0, : mask.shape[1] // 2].all() and not mask[0, mask.shape[1] // 2:].any()

    again = load_data(str(root), image_size=64, seed=0)
    assert again.val_names == data.val_names
    splits = {tuple(load_data(str(root), image_size=64, seed=s).val_names) for s in range(6)}
    assert len(splits) > 1

    # Normalisation is over training pixels only (images differ in size: weight by pixel count).
    pixels = torch.cat([image.flatten() for image in data.train_images]).double()
    assert data.normalization.mean[0] == pytest.approx(pixels.mean().item(), rel=1e-6)
    assert data.normalization.std[0] == pytest.approx(pixels.std(unbiased=False).item(), rel=1e-6)
    everything = torch.cat([image.flatten() for image in data.train_images + data.val_images]).double()
    assert data.normalization.mean[0] != pytest.approx(everything.mean().item(), rel=1e-3)


def test_load_colour_folder_with_rgba_palette_and_jpeg(tmp_path):
    root = make_tree(tmp_path / "colour", count=4, rgb=True)
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, "RGBA").save(root / "images" / "img00.png")
    palette = Image.fromarray(np.full((21, 26, 3), (255, 0, 0), np.uint8)).convert("P")
    palette.save(root / "images" / "img01.png")
    (root / "images" / "img02.png").unlink()
    Image.fromarray(np.full((22, 28, 3), 30, np.uint8)).save(root / "images" / "img02.jpeg")
    data = load_data(str(root), image_size=64, seed=1, val_fraction=0.5)
    assert data.in_channels == 3 and len(data.normalization.mean) == 3
    assert len(data.train_images) == len(data.val_images) == 2
    images = dict(zip(data.train_names + data.val_names, data.train_images + data.val_images))
    assert torch.allclose(images["img00"][:, 0, 0], torch.tensor([200 / 255, 0.0, 0.0]))  # alpha dropped
    assert torch.allclose(images["img01"][:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # palette expanded


def test_sixteen_bit_images_and_masks(tmp_path):
    root = make_tree(tmp_path / "wide", count=2)
    Image.fromarray(np.full((20, 24), 65535, np.uint16)).save(root / "images" / "img00.tif")
    (root / "images" / "img00.png").unlink()
    mask = np.zeros((21, 26), np.uint16)
    mask[:5] = 65535
    Image.fromarray(mask).save(root / "masks" / "img01.png")
    data = load_data(str(root), image_size=64, seed=0, val_fraction=0.5)
    images = dict(zip(data.train_names + data.val_names, data.train_images + data.val_images))
    masks = dict(zip(data.train_names + data.val_names, data.train_masks + data.val_masks))
    assert torch.all(images["img00"] == 1.0)
    assert masks["img01"][0, :5].all() and not masks["img01"][0, 5:].any()


def test_normalization_round_trip_and_apply():
    norm = Normalization(mean=(0.5, 0.25), std=(0.5, 0.25))
    assert Normalization.from_dict(norm.to_dict()) == norm
    images = torch.tensor([0.5, 0.75]).view(1, 2, 1, 1).expand(3, 2, 4, 4)
    assert torch.allclose(norm.apply(images), torch.tensor([0.0, 2.0]).view(1, 2, 1, 1).expand(3, 2, 4, 4))
    with pytest.raises(ValueError):
        norm.apply(torch.zeros(1, 3, 4, 4))


def break_tree(case: str, root: Path) -> Path:
    """Break a valid 4-image tree (img00..img03, grey, 0/255 or 0/1 masks) the way ``case`` says."""
    images, masks = root / "images", root / "masks"
    if case == "missing folder":
        return root.parent / "nowhere"
    if case == "file not folder":
        return images / "img00.png"
    if case in ("no images/", "no masks/", "empty images/"):
        emptied = {"no images/": [images], "no masks/": [masks], "empty images/": [images, masks]}[case]
        for folder in emptied:
            for child in folder.iterdir():
                child.unlink()
            if case != "empty images/":
                folder.rmdir()
    elif case == "one image":
        for stem in ("img01", "img02", "img03"):
            (images / f"{stem}.png").unlink()
            (masks / f"{stem}.png").unlink()
    elif case == "image without mask":
        (masks / "img02.png").unlink()
    elif case == "mask without image":
        (images / "img03.png").unlink()
    elif case == "size mismatch":
        write_png(masks / "img01.png", np.zeros((5, 6)))
    elif case == "non-binary mask":
        write_png(masks / "img02.png", np.array([[0, 128], [255, 0]]).repeat(11, 0).repeat(14, 1))
    elif case == "garbage image":
        (images / "img03.png").write_bytes(b"not a png\x00\x01")
    elif case == "garbage mask":
        (masks / "img00.png").write_bytes(b"\x89PNG garbage")
    elif case == "duplicate stem":
        write_png(images / "img01.jpg", np.zeros((21, 26)))
    elif case == "mixed channels":
        write_png(images / "img02.png", np.zeros((22, 28, 3)))
    return root


# case -> (text the message must contain, whether check_data_source catches it without decoding)
ERROR_CASES = {
    "missing folder": ("nowhere", True),
    "file not folder": ("img00.png", True),
    "no images/": ("has no images/", True),
    "no masks/": ("has no masks/", True),
    "empty images/": ("no images in", True),
    "one image": ("need at least 2", True),
    "image without mask": ("img02.png", True),
    "mask without image": ("img03.png", True),
    "size mismatch": ("masks/img01.png", False),
    "non-binary mask": ("img02.png is not binary: values 0, 128, 255", False),
    "garbage image": ("images/img03.png", False),
    "garbage mask": ("masks/img00.png", False),
    "duplicate stem": ("'img01'", True),
    "mixed channels": ("images/img02.png", False),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_folders_raise_one_line_data_errors(tmp_path, case):
    expected, layout_problem = ERROR_CASES[case]
    source = str(break_tree(case, make_tree(tmp_path / "data", count=4)))
    if layout_problem:
        with pytest.raises(DataError) as caught:
            check_data_source(source)
        assert expected in str(caught.value) and "\n" not in str(caught.value)
    else:
        check_data_source(source)  # the layout is fine; only decoding finds the problem
    with pytest.raises(DataError) as caught:
        load_data(source, image_size=64, seed=0)
    message = str(caught.value)
    assert expected in message and str(tmp_path) in message and "\n" not in message


def test_unknown_synthetic_variant_is_a_data_error():
    for good in ("synthetic", "synthetic:vessels", "synthetic:blobs", "synthetic:volumes"):
        check_data_source(good)
    with pytest.raises(DataError, match="synthetic:blobs"):  # the message lists the valid kinds
        check_data_source("synthetic:stars")
    with pytest.raises(DataError, match="synthetic:stars"):
        load_data("synthetic:stars", image_size=32, seed=0)


def test_folder_above_the_dataset_gets_a_hint(tmp_path):
    make_tree(tmp_path / "set" / "cases", count=2)
    with pytest.raises(DataError, match="found cases/"):
        check_data_source(str(tmp_path / "set"))


# ---------------------------------------------------------------------------------------------
# training batches


def _patch_data(sizes: list[tuple[int, int]]) -> SegmentationData:
    """Random images whose mask is ``image > 0.5``, so crops/flips/rotations must keep them aligned."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(2, h, w, generator=generator) for h, w in sizes]
    masks = [(image[:1] > 0.5).float() for image in images]
    norm = Normalization(mean=(0.5, 0.5), std=(0.3, 0.3))
    return SegmentationData("t", "t", images, masks, images[:1], masks[:1], ["v"], 2, norm)


def test_batches_shapes_count_and_alignment():
    data = _patch_data([(40, 50), (64, 64), (33, 70)])
    batches = list(
        iterate_train_batches(data, patch_size=16, batch_size=4, seed=0, epoch=0, patches_per_epoch=10)
    )
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]  # the last batch is smaller
    for images, masks in batches:
        assert images.shape[1:] == (2, 16, 16) and masks.shape[1:] == (1, 16, 16)
        assert torch.equal(masks, (images[:, :1] > 0.5).float())
    default = list(iterate_train_batches(data, patch_size=16, batch_size=2, seed=0, epoch=0))
    assert sum(x.shape[0] for x, _ in default) == 3  # one patch per training image
    clipped = next(iterate_train_batches(data, patch_size=100, batch_size=2, seed=0, epoch=0))
    assert clipped[0].shape[-2:] == (33, 33)  # the smallest training side


def test_batches_deterministic_per_epoch_and_independent_of_batch_size():
    data = _patch_data([(40, 50), (64, 64), (33, 70)])

    def patches(epoch, batch_size=3):
        batches = iterate_train_batches(
            data, patch_size=16, batch_size=batch_size, seed=5, epoch=epoch, patches_per_epoch=9
        )
        return torch.cat([x for x, _ in batches])

    assert torch.equal(patches(0), patches(0))
    assert not torch.equal(patches(0), patches(1))
    assert torch.equal(patches(0), patches(0, batch_size=4))


def test_whole_image_patch_is_a_flip_or_rotation_and_every_image_is_used_once_per_pass():
    data = _patch_data([(16, 16)] * 5)
    sources = []
    for images, _ in iterate_train_batches(data, patch_size=16, batch_size=2, seed=1, epoch=0):
        for patch in images:
            matches = [i for i, image in enumerate(data.train_images)
                       if any(torch.equal(patch, torch.rot90(variant, k, dims=(1, 2)))
                              for variant in (image, image.flip(2)) for k in range(4))]
            assert len(matches) == 1
            sources.append(matches[0])
    assert sorted(sources) == list(range(5))


# ---------------------------------------------------------------------------------------------
# layouts: FOV, split subfolders, DRIVE, volumes; synthetic kinds; patch options


def add_fov(root: Path, stems=None) -> None:
    for image in sorted((root / "images").iterdir()):
        if stems is None or image.stem in stems:
            height, width = np.asarray(Image.open(image)).shape[:2]
            fov = np.zeros((height, width))
            fov[:, : width // 2] = 255
            write_png(root / "fov" / f"{image.stem}.png", fov)


def test_fov_folder_is_loaded_per_split_and_a_missing_fov_names_the_image(tmp_path):
    root = make_tree(tmp_path / "fov", count=4)
    add_fov(root)
    data = load_data(str(root), image_size=64, seed=0)
    assert len(data.train_fovs) == len(data.train_images) and len(data.val_fovs) == len(data.val_images)
    for image, fov in zip(data.train_images + data.val_images, data.train_fovs + data.val_fovs):
        assert fov.shape == (1, *image.shape[1:])
        assert fov[0, :, : image.shape[2] // 2].all() and not fov[0, :, image.shape[2] // 2:].any()
    (root / "fov" / "img02.png").unlink()
    with pytest.raises(DataError, match="img02.png has no FOV mask"):
        check_data_source(str(root))
    write_png(root / "fov" / "img02.png", np.zeros((3, 3)))
    with pytest.raises(DataError, match="FOV mask .*fov/img02.png is 3x3"):
        load_data(str(root), image_size=64, seed=0)


def test_train_val_test_subfolders(tmp_path):
    root = tmp_path / "splits"
    make_tree(root / "train", count=3)
    make_tree(root / "val", count=2)
    make_tree(root / "test", count=2)
    data = load_data(str(root), image_size=64, seed=0)
    assert (len(data.train_images), len(data.val_images), len(data.test_images)) == (3, 2, 2)
    assert data.test_names == ["img00", "img01"] and len(data.test_masks) == 2 and data.test_fovs == []
    assert data.split("test")[0] is data.test_images
    only_train = tmp_path / "only_train"
    make_tree(only_train / "train", count=4)
    make_tree(only_train / "test", count=1)
    split = load_data(str(only_train), image_size=64, seed=0)  # no val/: a seeded split of train/
    assert (len(split.train_images), len(split.val_images), len(split.test_images)) == (3, 1, 1)


def write_drive(root: Path, split: str, ids: list[int], manual: bool = True) -> None:
    """The DRIVE download's names: TIFF images, GIF annotations and FOV masks."""
    for i in ids:
        image = np.full((20, 22, 3), 40 + i, dtype=np.uint8)
        Image.fromarray(image).save(root / split / "images" / f"{i:02d}_{split}.tif") \
            if (root / split / "images").mkdir(parents=True, exist_ok=True) is None else None
        vessel = np.zeros((20, 22), np.uint8)
        vessel[5:7] = 255
        fov = np.zeros((20, 22), np.uint8)
        fov[2:18, 2:20] = 255
        if manual:
            (root / split / "1st_manual").mkdir(parents=True, exist_ok=True)
            Image.fromarray(vessel).save(root / split / "1st_manual" / f"{i:02d}_manual1.gif")
        (root / split / "mask").mkdir(parents=True, exist_ok=True)
        Image.fromarray(fov).save(root / split / "mask" / f"{i:02d}_{split}_mask.gif")


def test_drive_layout_without_conversion(tmp_path):
    root = tmp_path / "DRIVE"
    write_drive(root, "training", [21, 22, 23, 24])
    write_drive(root, "test", [1, 2])
    check_data_source(str(root))
    data = load_data(str(root), image_size=64, seed=0)
    assert len(data.train_images) + len(data.val_images) == 4 and data.test_names == ["01", "02"]
    assert data.in_channels == 3 and all(image.shape == (3, 20, 22) for image in data.test_images)
    assert all(mask[0, 5:7].all() and mask.sum() == 44 for mask in data.train_masks + data.test_masks)
    assert all(fov.sum() == 16 * 18 for fov in data.train_fovs + data.val_fovs + data.test_fovs)
    (root / "training" / "1st_manual" / "22_manual1.gif").unlink()
    with pytest.raises(DataError, match="22_training.tif has no annotation"):
        check_data_source(str(root))
    unlabeled = tmp_path / "DRIVE2"
    write_drive(unlabeled, "training", [21, 22])
    write_drive(unlabeled, "test", [1], manual=False)  # the official test set has no annotations
    assert load_data(str(unlabeled), image_size=64, seed=0).test_images == []


def test_npy_volumes_and_their_errors(tmp_path):
    root = tmp_path / "vol"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        volume = np.random.default_rng(i).uniform(0, 1000, (6, 8, 10))  # CT-like range: min-max scaled
        volume[0, 0, 0], volume[-1, -1, -1] = 0.0, 1000.0
        np.save(root / "images" / f"case{i}.npy", volume)
        np.save(root / "masks" / f"case{i}.npy", (volume > 500).astype(np.uint8))
    data = load_data(str(root), image_size=64, seed=0)
    assert data.spatial_dims == 3 and data.in_channels == 1
    assert all(image.shape == (1, 6, 8, 10) and 0 <= image.min() and image.max() <= 1
               for image in data.train_images + data.val_images)
    assert all(torch.equal(mask, (image > 0.5).float()) for image, mask in zip(data.train_images, data.train_masks))
    assert data.normalization.apply(torch.stack(data.train_images), spatial_dims=3).shape == (2, 1, 6, 8, 10)
    batches = list(iterate_train_batches(data, patch_size=4, batch_size=2, seed=0, epoch=1,
                                         patches_per_epoch=3, foreground_fraction=0.5))
    assert [x.shape for x, _ in batches] == [(2, 1, 4, 4, 4), (1, 1, 4, 4, 4)]
    assert all(torch.equal(y, (x > 0.5).float()) for x, y in batches)
    np.save(root / "masks" / "case1.npy", np.full((6, 8, 10), 7))
    with pytest.raises(DataError, match="masks/case1.npy is not binary"):
        load_data(str(root), image_size=64, seed=0)
    np.save(root / "masks" / "case1.npy", np.zeros((6, 8, 9)))
    with pytest.raises(DataError, match="case1.npy is 9x8x6"):
        load_data(str(root), image_size=64, seed=0)
    (root / "masks" / "case1.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read mask .*case1.npy"):
        load_data(str(root), image_size=64, seed=0)


def test_synthetic_kinds():
    vessels = load_data("synthetic:vessels", image_size=32, seed=0, synthetic_train=4, synthetic_val=2)
    blobs = load_data("synthetic:blobs", image_size=64, seed=0, synthetic_train=8, synthetic_val=2)
    volumes = load_data("synthetic:volumes", image_size=32, seed=0, synthetic_train=8, synthetic_val=4)
    assert vessels.name == "synthetic-vessels" and vessels.train_images[0].shape == (1, 32, 32)
    assert volumes.train_images[0].shape == (1, 16, 16, 16) and len(volumes.train_images) == 2
    assert all(0 < m.mean() < 0.5 for m in vessels.train_masks + blobs.train_masks + volumes.train_masks)
    from nas.train.metrics import segmentation_quality

    strata = segmentation_quality([m[0] for m in blobs.train_masks], [m[0] for m in blobs.train_masks])
    assert all(s["count"] > 0 for s in strata["size_strata"].values())  # small, medium and large
    default = load_data("synthetic", image_size=32, seed=0, synthetic_train=4, synthetic_val=2)
    assert torch.equal(default.train_images[0], torch.from_numpy(make_synthetic(4, 32, 0)[0][0]))


def test_foreground_biased_patches_hit_foreground():
    images = [torch.zeros(1, 64, 64) for _ in range(4)]
    masks = [torch.zeros(1, 64, 64) for _ in range(4)]
    for mask in masks:
        mask[0, 50:53, 7:10] = 1  # one tiny object per image
    data = SegmentationData("t", "t", images, masks, images[:1], masks[:1], ["v"], 1, Normalization((0.0,), (1.0,)))
    hits = lambda fraction: sum(float(y.amax()) for _, y in iterate_train_batches(  # noqa: E731
        data, patch_size=8, batch_size=16, seed=0, epoch=0, patches_per_epoch=64, foreground_fraction=fraction))
    assert hits(1.0) == 4  # every batch (of 16) has foreground; every patch in fact:
    patches = next(iterate_train_batches(data, patch_size=8, batch_size=64, seed=0, epoch=0,
                                         patches_per_epoch=64, foreground_fraction=1.0))[1]
    assert bool((patches.amax(dim=(1, 2, 3)) == 1).all())
    random = next(iterate_train_batches(data, patch_size=8, batch_size=64, seed=0, epoch=0, patches_per_epoch=64))[1]
    assert float((random.amax(dim=(1, 2, 3)) == 1).float().mean()) < 0.3


def test_augmentation_keeps_alignment_range_and_fov():
    data = _patch_data([(32, 32)] * 4)
    data.train_fovs = [torch.ones(1, 32, 32) for _ in range(4)]
    plain = next(iterate_train_batches(data, patch_size=32, batch_size=4, seed=0, epoch=0))
    x, y, fov = next(iterate_train_batches(data, patch_size=32, batch_size=4, seed=0, epoch=0, brightness=0.2,
                                           contrast=0.3, elastic=3.0, with_fov=True))
    assert x.shape == plain[0].shape and fov.shape == y.shape and fov.min() == 1.0
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and not torch.equal(x, plain[0])
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(y, plain[1])  # the warp moved the masks with the images
    x2, y2, _ = next(iterate_train_batches(data, patch_size=32, batch_size=4, seed=0, epoch=0, brightness=0.2,
                                           contrast=0.3, elastic=3.0, with_fov=True))
    assert torch.equal(x, x2) and torch.equal(y, y2)  # deterministic


# ---------------------------------------------------------------------------------------------
# the shared real datasets (present beside the project root in CI)


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path}: they sit beside the project root in CI")
    return path


def test_isbi2012_em_loads():
    path = _shared("isbi2012_em/train")
    check_data_source(str(path))
    data = load_data(str(path), image_size=64, seed=0)
    assert (len(data.train_images), len(data.val_images), len(data.test_images)) == (16, 8, 6)  # seeded test split
    assert data.in_channels == 1 and data.name == "train"
    assert all(image.shape == (1, 512, 512) for image in data.train_images + data.val_images)
    assert all(mask.shape == (1, 512, 512) for mask in data.train_masks + data.val_masks)


def test_cvc_clinicdb_sample_loads():
    path = _shared("cvc_clinicdb_sample")
    data = load_data(str(path), image_size=64, seed=0)
    assert (len(data.train_images), len(data.val_images), len(data.test_images)) == (11, 5, 4)  # seeded test split
    assert data.in_channels == 3 and len(data.normalization.std) == 3
    assert all(image.shape == (3, 288, 384) for image in data.train_images + data.val_images)
    assert all(set(mask.unique().tolist()) <= {0.0, 1.0} for mask in data.val_masks)


def test_nifti_volumes(tmp_path):
    nibabel = pytest.importorskip("nibabel", reason="NIfTI needs the optional 'volumes' extra (nibabel)")
    root = tmp_path / "nii"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        volume = np.zeros((6, 8, 10), np.float32)  # (D, H, W)
        volume[1:3, 2:5, 3:7] = 1.0
        mask = (volume > 0).astype(np.uint8)
        # NIfTI stores (x, y, z): transpose so the loader's (D, H, W) is the array above.
        nibabel.save(nibabel.Nifti1Image(volume.T, np.eye(4)), root / "images" / f"case{i}.nii.gz")
        nibabel.save(nibabel.Nifti1Image(mask.T, np.eye(4)), root / "masks" / f"case{i}.nii")
    data = load_data(str(root), image_size=64, seed=0)
    assert data.train_images[0].shape == (1, 6, 8, 10) and len(data.train_names) == 1
    assert torch.equal(data.train_masks[0], data.train_images[0])
