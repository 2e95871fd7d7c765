"""`planning_l2_metrics`: the `compute_metrics` of `OccVLATrainer` (planning L2 per protocol), which picks the best
checkpoint."""

from __future__ import annotations

import numpy as np
from transformers import EvalPrediction

from occvla_hf.evaluation.planning import PROTOCOLS, l2_errors, protocol_summary


def planning_l2_metrics(eval_prediction: EvalPrediction) -> dict[str, float | None]:
    """`compute_metrics` for `OccVLATrainer`: L2 (m) of the predicted waypoints at 1 s, 2 s, 3 s and their average,
    read per protocol (`stp3_l2_avg_m`: mean over the steps up to each horizon; `uniad_l2_avg_m`: the step itself).

    `predictions`: (N, T, 2) waypoints; `label_ids`: (N, T, 3) target waypoints and validity (1 = valid), as
    `OccVLATrainer.prediction_step` returns them. Invalid steps are left out; a step with no valid sample is None.
    """
    predicted = np.asarray(eval_prediction.predictions, dtype=np.float64)
    targets = np.asarray(eval_prediction.label_ids, dtype=np.float64)
    if predicted.ndim != 3 or predicted.shape[-1] != 2 or targets.shape != (*predicted.shape[:2], 3):
        raise ValueError(
            f"eval_prediction: expected predictions (N, T, 2) and label_ids (N, T, 3), got {predicted.shape} and "
            f"{targets.shape}"
        )
    valid = targets[..., 2] > 0.5
    with np.errstate(invalid="ignore"):
        l2_per_step_m = np.where(valid, l2_errors(predicted, targets[..., :2]), 0.0).sum(0) / valid.sum(0)
    return {
        f"{protocol}_{key}": value
        for protocol in PROTOCOLS
        for key, value in protocol_summary(l2_per_step_m, {}, protocol).items()
    }


__all__ = ["planning_l2_metrics"]
