"""Occ3D occupancy metrics against hand-computed values on small crafted grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occvla_hf.constants import NUM_OCC_CLASSES, OCC_CLASS_NAMES, OCC_FREE_CLASS
from occvla_hf.evaluation.occupancy import (
    OccupancyMetricAccumulator,
    OccupancyMetrics,
    confusion_matrix,
    geometric_iou,
    per_class_iou,
    semantic_miou,
)

# A 4-class toy problem, class 3 = free: one sample of a 10 x 1 x 1 grid, shaped (batch, X, Y, Z).
TOY_CLASSES = ("a", "b", "c", "free")
TOY_FREE = 3
GT = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3]).reshape(1, 10, 1, 1)
PRED = np.array([0, 0, 1, 1, 3, 3, 3, 3, 0, 2]).reshape(1, 10, 1, 1)
CAMERA = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 0], dtype=bool).reshape(1, 10, 1, 1)


def toy_accumulator() -> OccupancyMetricAccumulator:
    return OccupancyMetricAccumulator(num_classes=4, free_class=TOY_FREE, class_names=TOY_CLASSES)


def test_confusion_matrix_counts_rows_gt_columns_pred():
    expected = np.array(
        [
            [2, 1, 0, 0],  # gt a: 2 right, 1 predicted b
            [0, 1, 0, 1],  # gt b: 1 right, 1 predicted free
            [0, 0, 0, 1],  # gt c: predicted free
            [1, 0, 1, 2],  # gt free: 2 right, 1 predicted a, 1 predicted c
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(PRED, GT, num_classes=4).numpy(), expected)


def test_ground_truth_ids_outside_the_classes_are_ignored_like_occ3d_255():
    gt = np.array([0, 255, 1])
    pred = np.array([0, 1, 1])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, num_classes=2).numpy(), [[1, 0], [0, 1]])


def test_per_class_iou_miou_and_geometric_iou_by_hand():
    confusion = confusion_matrix(PRED, GT, num_classes=4)
    # IoU = TP / (row + column - TP): a 2/4, b 1/3, c 0/2, free 2/6.
    np.testing.assert_allclose(per_class_iou(confusion), [0.5, 1 / 3, 0.0, 1 / 3])
    # mIoU leaves free out: (1/2 + 1/3 + 0) / 3.
    assert semantic_miou(confusion, TOY_FREE) == pytest.approx(5 / 18)
    # Occupied vs free: TP 4 (a->a, a->a, a->b, b->b), FP 2 (free->a, free->c), FN 2 (b->free, c->free).
    assert geometric_iou(confusion, TOY_FREE) == pytest.approx(4 / 8)


def test_camera_mask_restricts_the_voxels_counted():
    accumulator = toy_accumulator()
    accumulator.update(PRED, GT, CAMERA)
    masked = accumulator.compute(use_camera_mask=True)
    # Kept voxels: gt (0,0,0,1,1,3,3) / pred (0,0,1,1,3,3,0). Class c never occurs inside the mask -> NaN, skipped.
    assert masked.per_class_iou["a"] == pytest.approx(2 / 4)
    assert masked.per_class_iou["b"] == pytest.approx(1 / 3)
    assert math.isnan(masked.per_class_iou["c"])
    assert masked.per_class_iou["free"] == pytest.approx(1 / 3)
    assert masked.miou == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert masked.iou == pytest.approx(4 / 6)  # TP 4, FP 1 (free->a), FN 1 (b->free)
    assert masked.num_voxels == 7
    unmasked = accumulator.compute(use_camera_mask=False)
    assert unmasked.miou == pytest.approx(5 / 18) and unmasked.iou == pytest.approx(0.5)
    assert unmasked.num_voxels == 10


def test_voxel_counts_tell_a_missed_class_from_an_invented_one():
    accumulator = toy_accumulator()
    accumulator.update(PRED, GT, CAMERA)
    counts = accumulator.voxel_counts()
    # Class c: 1 ground-truth voxel, predicted once elsewhere: IoU 0 with both a miss and a false positive.
    assert counts["c"] == {"gt": 1, "pred": 1, "tp": 0}
    assert counts["a"] == {"gt": 3, "pred": 3, "tp": 2} and counts["free"] == {"gt": 4, "pred": 4, "tp": 2}
    # Inside the camera mask c occurs on neither side.
    assert accumulator.voxel_counts(use_camera_mask=True)["c"] == {"gt": 0, "pred": 0, "tp": 0}


def test_accumulate_then_divide_differs_from_averaging_samples():
    accumulator = toy_accumulator()
    sample_a = (np.array([0, 0, 1, 1, 3, 3]), np.array([0, 0, 1, 1, 3, 3]))  # perfect: per-sample mIoU 1
    sample_b = (np.array([3, 1, 3, 3, 3, 3]), np.array([1, 3, 3, 3, 3, 3]))  # b missed: per-sample mIoU 0
    for pred, gt in (sample_a, sample_b):
        accumulator.update(pred.reshape(6, 1, 1), gt.reshape(6, 1, 1), np.ones((6, 1, 1), dtype=bool))
    metrics = accumulator.compute()
    # Summed counts: a 2/2 = 1; b TP 2, gt 3, pred 3 -> 2/4; mIoU 0.75 (per-sample average would be 0.5).
    assert metrics.per_class_iou["b"] == pytest.approx(0.5)
    assert metrics.miou == pytest.approx(0.75)
    # Geometric: TP 4, FP 1, FN 1 -> 2/3 (per-sample average would be 0.5).
    assert metrics.iou == pytest.approx(2 / 3)
    assert accumulator.num_samples == 2


def test_batched_torch_and_per_sample_numpy_updates_agree_on_occ3d_grids():
    generator = np.random.default_rng(0)
    gt = generator.integers(0, NUM_OCC_CLASSES, (3, 8, 8, 4)).astype(np.uint8)
    pred = generator.integers(0, NUM_OCC_CLASSES, (3, 8, 8, 4)).astype(np.uint8)
    mask = generator.random((3, 8, 8, 4)) > 0.3
    batched, per_sample = OccupancyMetricAccumulator(), OccupancyMetricAccumulator()
    batched.update(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(mask))
    for index in range(3):
        per_sample.update(pred[index], gt[index], mask[index])
    assert torch.equal(batched.confusion, per_sample.confusion)
    assert torch.equal(batched.confusion_camera, per_sample.confusion_camera)
    assert batched.num_samples == per_sample.num_samples == 3
    summary = batched.summary()
    assert summary["camera_miou"] == batched.compute().miou
    assert summary["miou"] == batched.compute(use_camera_mask=False).miou
    assert set(summary) >= {f"iou_{name}" for name in OCC_CLASS_NAMES}


def test_perfect_prediction_scores_one_and_all_free_scores_zero():
    gt = np.full((1, 4, 4, 2), OCC_FREE_CLASS, dtype=np.uint8)
    gt[0, :, :, 0] = 11  # a driveable-surface ground plane
    gt[0, 1, 1, 1] = 4  # a car voxel
    perfect, all_free = OccupancyMetricAccumulator(), OccupancyMetricAccumulator()
    perfect.update(gt, gt)
    all_free.update(np.full_like(gt, OCC_FREE_CLASS), gt)
    assert perfect.compute(use_camera_mask=False).miou == 1.0
    assert perfect.compute(use_camera_mask=False).iou == 1.0
    assert all_free.compute(use_camera_mask=False).miou == 0.0
    assert all_free.compute(use_camera_mask=False).iou == 0.0


def test_metrics_to_dict_is_flat_and_prefixed():
    metrics = OccupancyMetrics.from_confusion(confusion_matrix(PRED, GT, 4), TOY_CLASSES, TOY_FREE)
    flat = metrics.to_dict(prefix="camera_")
    assert flat["camera_miou"] == metrics.miou and flat["camera_iou"] == metrics.iou
    assert flat["camera_iou_b"] == pytest.approx(1 / 3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="pred: expected the shape of gt"):
        confusion_matrix(np.zeros(3, dtype=int), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"pred: expected \(batch, X, Y, Z\) or \(X, Y, Z\)"):
        toy_accumulator().update(np.zeros(3, dtype=int), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"pred: class ids must lie in \[0, 4\)"):
        confusion_matrix(np.array([4]), np.array([0]), num_classes=4)
    with pytest.raises(ValueError, match="mask: expected a bool array"):
        confusion_matrix(PRED, GT, 4, mask=CAMERA.astype(np.uint8))
    accumulator = toy_accumulator()
    accumulator.update(PRED, GT, CAMERA)
    accumulator.update(PRED, GT)
    with pytest.raises(ValueError, match="1 of 2 samples were added without a camera mask"):
        accumulator.compute(use_camera_mask=True)
    assert "camera_miou" not in accumulator.summary()
