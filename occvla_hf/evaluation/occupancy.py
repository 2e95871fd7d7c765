"""Occupancy metrics following Occ3D's official `Metric_mIoU`: confusion counts accumulated over the whole dataset.

Definitions (Occ3D-nuScenes):
- a (num_classes x num_classes) confusion matrix, rows = ground truth, columns = prediction, is summed over every
  evaluated voxel of every sample; ground-truth ids outside [0, num_classes) (e.g. 255) are ignored;
- per-class IoU = TP / (TP + FP + FN) from the summed counts, NaN for a class absent from both prediction and ground
  truth over the whole dataset;
- mIoU = NaN-ignoring mean of the per-class IoU over the semantic classes, i.e. every class except free (17);
- geometric IoU = IoU of "occupied" (any class but free) against free, from the same counts;
- the standard evaluation restricts voxels to the camera mask (`mask_camera`); results without it are also kept.
Ratios are divided once, at the end (accumulate-then-divide), never averaged per sample. Values are fractions in
[0, 1] (Occ3D prints them x 100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..constants import NUM_OCC_CLASSES, OCC_CLASS_NAMES, OCC_FREE_CLASS


def confusion_matrix(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    num_classes: int = NUM_OCC_CLASSES,
    mask: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Confusion counts (num_classes, num_classes) int64 on CPU, rows = ground truth, columns = prediction.

    `pred`, `gt` and the optional bool `mask` share any shape, e.g. (batch, X, Y, Z); only voxels where `mask` is
    true and the ground truth is a valid id are counted. Runs on the inputs' device.
    """
    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred: expected the shape of gt {tuple(gt.shape)}, got {tuple(pred.shape)}")
    if pred.dtype.is_floating_point or gt.dtype.is_floating_point:
        raise ValueError(f"pred/gt: expected integer class ids, got {pred.dtype} and {gt.dtype}")
    if mask is not None:
        mask = torch.as_tensor(mask)
        if mask.shape != gt.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask: expected a bool array of shape {tuple(gt.shape)}, got {tuple(mask.shape)} {mask.dtype}"
            )
    pred, gt = pred.long().reshape(-1), gt.long().to(pred.device).reshape(-1)
    valid = (gt >= 0) & (gt < num_classes)
    if mask is not None:
        valid &= mask.to(pred.device).reshape(-1)
    pred, gt = pred[valid], gt[valid]
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"pred: class ids must lie in [0, {num_classes}), got [{int(pred.min())}, {int(pred.max())}]")
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def per_class_iou(confusion: torch.Tensor | np.ndarray) -> np.ndarray:
    """IoU of every class from confusion counts: TP / (TP + FP + FN); NaN where the class never occurs."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def semantic_miou(confusion: torch.Tensor | np.ndarray, free_class: int = OCC_FREE_CLASS) -> float:
    """Occ3D mIoU: NaN-ignoring mean IoU over every class but `free_class`; NaN if no class occurs."""
    ious = np.delete(per_class_iou(confusion), free_class)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else math.nan


def geometric_iou(confusion: torch.Tensor | np.ndarray, free_class: int = OCC_FREE_CLASS) -> float:
    """IoU of occupied (any class but `free_class`) vs free; NaN when neither side has an occupied voxel."""
    confusion = np.asarray(confusion, dtype=np.float64)
    occupied = np.ones(confusion.shape[0], dtype=bool)
    occupied[free_class] = False
    true_positive = confusion[np.ix_(occupied, occupied)].sum()
    false_positive = confusion[free_class, occupied].sum()
    false_negative = confusion[occupied, free_class].sum()
    union = true_positive + false_positive + false_negative
    return float(true_positive / union) if union > 0 else math.nan


@dataclass(frozen=True)
class OccupancyMetrics:
    """Dataset-level occupancy scores (fractions in [0, 1]).

    Args:
        miou: mean IoU over the semantic classes (free excluded), NaN-ignoring.
        iou: geometric IoU, occupied vs free.
        per_class_iou: IoU per class name, free included (NaN for classes that never occur).
        num_voxels: voxels counted.
    """

    miou: float
    iou: float
    per_class_iou: dict[str, float]
    num_voxels: int

    @classmethod
    def from_confusion(
        cls,
        confusion: torch.Tensor | np.ndarray,
        class_names: tuple[str, ...] = OCC_CLASS_NAMES,
        free_class: int = OCC_FREE_CLASS,
    ) -> OccupancyMetrics:
        """Scores from accumulated confusion counts."""
        ious = per_class_iou(confusion)
        return cls(
            miou=semantic_miou(confusion, free_class),
            iou=geometric_iou(confusion, free_class),
            per_class_iou={name: float(value) for name, value in zip(class_names, ious, strict=True)},
            num_voxels=int(np.asarray(confusion).sum()),
        )

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat `{prefix}miou`, `{prefix}iou`, `{prefix}iou_<class>` floats for logs and JSON."""
        flat = {f"{prefix}miou": self.miou, f"{prefix}iou": self.iou}
        flat.update({f"{prefix}iou_{name}": value for name, value in self.per_class_iou.items()})
        return flat


class OccupancyMetricAccumulator:
    """Accumulates Occ3D confusion counts over a dataset, with and without the camera mask.

    Call `update` per batch (any mix of torch tensors / numpy arrays, on any device), then `compute`. The camera-mask
    scores exist only if every update received `mask_camera`.
    """

    def __init__(
        self,
        num_classes: int = NUM_OCC_CLASSES,
        free_class: int = OCC_FREE_CLASS,
        class_names: tuple[str, ...] = OCC_CLASS_NAMES,
    ) -> None:
        if len(class_names) != num_classes:
            raise ValueError(f"class_names: expected {num_classes} names, got {len(class_names)}")
        if not 0 <= free_class < num_classes:
            raise ValueError(f"free_class: expected an id in [0, {num_classes}), got {free_class}")
        self.num_classes = num_classes
        self.free_class = free_class
        self.class_names = class_names
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.confusion_camera = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.num_samples = 0
        self.num_samples_with_mask = 0

    def update(
        self,
        pred: torch.Tensor | np.ndarray,
        gt: torch.Tensor | np.ndarray,
        mask_camera: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Adds a batch: predicted and ground-truth class ids (batch, X, Y, Z) or one sample (X, Y, Z)."""
        pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
        if pred.dim() not in (3, 4):
            raise ValueError(f"pred: expected (batch, X, Y, Z) or (X, Y, Z) class ids, got {tuple(pred.shape)}")
        batch_size = pred.shape[0] if pred.dim() == 4 else 1
        self.confusion += confusion_matrix(pred, gt, self.num_classes)
        if mask_camera is not None:
            self.confusion_camera += confusion_matrix(pred, gt, self.num_classes, mask=mask_camera)
            self.num_samples_with_mask += batch_size
        self.num_samples += batch_size

    def compute(self, use_camera_mask: bool = True) -> OccupancyMetrics:
        """Dataset-level scores, inside the camera mask (the Occ3D standard) or over every voxel."""
        if use_camera_mask:
            if self.num_samples_with_mask != self.num_samples:
                raise ValueError(
                    f"mask_camera: {self.num_samples - self.num_samples_with_mask} of {self.num_samples} samples were "
                    "added without a camera mask; use compute(use_camera_mask=False) or pass masks to every update"
                )
            confusion = self.confusion_camera
        else:
            confusion = self.confusion
        return OccupancyMetrics.from_confusion(confusion, self.class_names, self.free_class)

    def voxel_counts(self, use_camera_mask: bool = False) -> dict[str, dict[str, int]]:
        """Per class name: ground-truth voxels (`gt`), predicted voxels (`pred`) and their overlap (`tp`), which tell
        a class the prediction misses (`pred` 0) from one it invents (`gt` 0) when its IoU is 0."""
        confusion = (self.confusion_camera if use_camera_mask else self.confusion).numpy()
        return {
            name: {"gt": int(confusion[i].sum()), "pred": int(confusion[:, i].sum()), "tp": int(confusion[i, i])}
            for i, name in enumerate(self.class_names)
        }

    def summary(self) -> dict[str, float]:
        """Flat floats: `miou`, `iou`, `iou_<class>` over every voxel and, when masks were given, `camera_*`."""
        flat = self.compute(use_camera_mask=False).to_dict()
        if self.num_samples and self.num_samples_with_mask == self.num_samples:
            flat.update(self.compute(use_camera_mask=True).to_dict(prefix="camera_"))
        return flat


__all__ = [
    "OccupancyMetricAccumulator",
    "OccupancyMetrics",
    "confusion_matrix",
    "geometric_iou",
    "per_class_iou",
    "semantic_miou",
]
