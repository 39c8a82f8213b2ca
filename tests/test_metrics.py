"""Quality metrics against hand-computed cases: pixel ratios, empty masks, FOV, HD95, size strata."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nas.train.metrics import (
    DETECTION_OVERLAP,
    aggregate,
    connected_components,
    equivalent_diameter,
    hd95,
    image_metrics,
    segmentation_quality,
)


def blank(size: int = 10) -> np.ndarray:
    return np.zeros((size, size), dtype=bool)


def test_perfect_prediction_scores_one_everywhere():
    truth = blank()
    truth[3:6, 3:6] = True
    m = image_metrics(truth.copy(), truth)
    for key in ("dice", "iou", "precision", "sensitivity", "specificity"):
        assert m[key] == 1.0
    assert m["hd95"] == 0.0
    assert m["size_strata"]["small"] == {"count": 1, "detected": 1, "dice": 1.0}  # diameter 3.4 px


def test_half_prediction_hand_computed():
    truth, pred = blank(), blank()
    truth[2:4, 2:6] = True  # 8 px
    pred[2, 2:6] = True  # the top row: tp 4, fp 0, fn 4
    m = image_metrics(pred, truth)
    assert m["dice"] == pytest.approx(8 / 12)
    assert m["iou"] == pytest.approx(0.5)
    assert m["precision"] == 1.0 and m["sensitivity"] == 0.5 and m["specificity"] == 1.0
    # gt boundary -> pred: four pixels at 0, four at 1 px; pred -> gt: all 0. p95 of the first = 1.
    assert m["hd95"] == pytest.approx(1.0)


def test_false_positives_lower_precision_and_specificity():
    truth, pred = blank(), blank()
    truth[0, 0:4] = True
    pred[0, 0:4] = True
    pred[9, 9] = True  # one FP among 96 true negatives
    m = image_metrics(pred, truth)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["specificity"] == pytest.approx(95 / 96)
    assert m["hd95"] > 5  # the stray pixel is far from everything


def test_empty_masks():
    both = image_metrics(blank(), blank())
    assert all(both[k] == 1.0 for k in ("dice", "iou", "precision", "sensitivity", "specificity"))
    assert both["hd95"] == 0.0
    assert all(s == {"count": 0, "detected": 0, "dice": None} for s in both["size_strata"].values())

    pred = blank()
    pred[4, 4] = True
    false_alarm = image_metrics(pred, blank())
    assert false_alarm["dice"] == 0.0 and false_alarm["precision"] == 0.0 and false_alarm["sensitivity"] == 0.0
    assert false_alarm["hd95"] == pytest.approx(math.sqrt(200))  # the diagonal: worst case

    truth = blank()
    truth[4, 4] = True
    missed = image_metrics(blank(), truth)
    assert missed["dice"] == 0.0 and missed["sensitivity"] == 0.0 and missed["specificity"] == 1.0
    assert missed["size_strata"]["small"] == {"count": 1, "detected": 0, "dice": 0.0}


def test_fov_excludes_everything_outside():
    truth, pred, fov = blank(), blank(), blank()
    fov[:, :5] = True
    truth[2:4, 1:3] = True
    pred[2:4, 1:3] = True
    pred[5:9, 6:9] = True  # false positives outside the FOV
    truth[0, 8] = True  # a missed object outside the FOV
    m = image_metrics(pred, truth, fov)
    assert m["dice"] == 1.0 and m["precision"] == 1.0 and m["specificity"] == 1.0 and m["hd95"] == 0.0
    assert m["size_strata"]["small"]["count"] == 1
    without = image_metrics(pred, truth)
    assert without["dice"] < 1.0


def test_connected_components_8_connectivity_and_3d():
    mask = blank(8)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component
    mask[5:7, 5:7] = True
    mask[0, 7] = True
    labels, count = connected_components(mask)
    assert count == 3
    assert labels[0, 0] == labels[1, 1] != labels[5, 5]
    assert set(np.unique(labels[mask])) == {1, 2, 3} and (labels[~mask] == 0).all()
    volume = np.zeros((4, 4, 4), dtype=bool)
    volume[0, 0, 0] = volume[1, 1, 1] = True  # corner neighbours in 3-D
    volume[3, 3, 3] = True
    assert connected_components(volume)[1] == 2
    assert connected_components(np.zeros((3, 3)))[1] == 0


def test_connected_components_of_a_long_snake():
    mask = np.zeros((40, 40), dtype=bool)
    for row in range(0, 40, 2):
        mask[row, :] = True
        mask[row + 1 if row + 1 < 40 else row, 39 if (row // 2) % 2 == 0 else 0] = True
    labels, count = connected_components(mask)
    assert count == 1 and (labels[mask] == 1).all()


def test_equivalent_diameter():
    assert equivalent_diameter(math.pi * 16) == pytest.approx(8.0)
    assert equivalent_diameter(4 / 3 * math.pi * 27, ndim=3) == pytest.approx(6.0)


def test_size_strata_detection_and_neighbourhood_dice():
    truth, pred = np.zeros((80, 80), bool), np.zeros((80, 80), bool)
    truth[2:4, 2:4] = True  # 4 px, diameter 2.3: small, missed
    truth[10:20, 60:70] = True  # 100 px, diameter 11.3: medium
    pred[10:16, 60:70] = True  # covers 60 % >= DETECTION_OVERLAP: detected
    truth[35:75, 5:45] = True  # 1600 px, diameter 45: large, found exactly
    pred[35:75, 5:45] = True
    strata = image_metrics(pred, truth)["size_strata"]
    assert strata["small"] == {"count": 1, "detected": 0, "dice": 0.0}
    assert strata["medium"] == {"count": 1, "detected": 1, "dice": pytest.approx(2 * 60 / 160)}
    assert strata["large"] == {"count": 1, "detected": 1, "dice": 1.0}

    exactly_half = np.zeros((80, 80), bool)
    exactly_half[10:15, 60:70] = True
    assert DETECTION_OVERLAP == 0.5
    assert image_metrics(exactly_half, truth)["size_strata"]["medium"]["detected"] == 1


def test_neighbourhood_dice_counts_false_positives_next_to_the_object():
    truth, pred = blank(20), blank(20)
    truth[8:10, 8:10] = True
    pred[8:10, 8:10] = True
    pred[8:10, 11:13] = True  # 4 FP px within 3 px of the blob
    pred[0, 19] = True  # far away: outside the neighbourhood
    small = image_metrics(pred, truth)["size_strata"]["small"]
    assert small["dice"] == pytest.approx(8 / 12)


def test_aggregate_means_and_pooled_detection():
    a_truth, a_pred = blank(), blank()
    a_truth[1, 1] = a_truth[5, 5] = a_truth[8, 8] = True  # three small objects, one found
    a_pred[1, 1] = True
    b_truth = blank()
    b_truth[4, 4] = True  # one small object, found
    result = segmentation_quality([a_pred, b_truth.copy()], [a_truth, b_truth])
    assert result["images"] == 2
    assert result["dice"] == pytest.approx((2 / 4 + 1.0) / 2)
    small = result["size_strata"]["small"]
    assert small["count"] == 4 and small["detected"] == pytest.approx(2 / 4)
    assert result["size_strata"]["large"] == {"count": 0, "detected": None, "dice": None}
    assert aggregate([])["dice"] is None


def test_accepts_tensors_with_a_channel_axis_and_3d():
    truth = torch.zeros(1, 6, 6, 6)
    truth[0, 1:4, 1:4, 1:4] = 1
    m = image_metrics(truth > 0.5, truth)
    assert m["dice"] == 1.0 and m["size_strata"]["small"]["count"] == 1
    assert hd95(truth[0] > 0.5, truth[0] > 0.5) == 0.0
    with pytest.raises(ValueError, match="shape"):
        image_metrics(np.zeros((4, 4)), np.zeros((4, 5)))


def test_distance_transform_matches_brute_force_and_hd95_paths_agree(monkeypatch):
    import nas.train.metrics as metrics

    rng = np.random.default_rng(0)
    feature = rng.random((23, 31)) < 0.03
    feature[0, 0] = True
    points = np.argwhere(feature)
    grid = np.stack(np.meshgrid(np.arange(23), np.arange(31), indexing="ij"), -1).reshape(-1, 1, 2)
    brute = ((grid - points[None]) ** 2).sum(-1).min(1).reshape(23, 31)
    assert np.array_equal(metrics.squared_distance_transform(feature).numpy(), brute)
    volume = rng.random((5, 6, 7)) < 0.05
    volume[0, 0, 0] = True
    vpoints = np.argwhere(volume)
    vgrid = np.stack(np.meshgrid(*map(np.arange, (5, 6, 7)), indexing="ij"), -1).reshape(-1, 1, 3)
    assert np.array_equal(metrics.squared_distance_transform(volume).numpy(),
                          ((vgrid - vpoints[None]) ** 2).sum(-1).min(1).reshape(5, 6, 7))
    pred, truth = rng.random((40, 40)) < 0.3, rng.random((40, 40)) < 0.3
    exact = hd95(pred, truth)
    monkeypatch.setattr(metrics, "_CDIST_PAIRS", 0)  # force the distance-transform path
    assert hd95(pred, truth) == pytest.approx(exact)
