"""planning_l2_metrics: the L2 the Trainer's evaluation reports, per protocol."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from occvla_hf.training.metrics import planning_l2_metrics


def test_planning_l2_metrics_read_each_protocol_over_valid_steps():
    predicted = np.zeros((2, 6, 2))
    targets = np.zeros((2, 6, 3))
    targets[..., 2] = 1.0
    targets[0, :, 0] = [1, 2, 3, 4, 5, 6]  # sample 0: errors 1..6 m
    targets[1, :, 1] = [3, 3, 3, 3, 3, 3]  # sample 1: errors 3 m ...
    targets[1, 5, 2] = 0.0  # ... and its last step is invalid
    metrics = planning_l2_metrics(EvalPrediction(predictions=predicted, label_ids=targets))
    per_step = [2.0, 2.5, 3.0, 3.5, 4.0, 6.0]
    assert metrics["uniad_l2_1s_m"] == pytest.approx(per_step[1])
    assert metrics["uniad_l2_3s_m"] == pytest.approx(per_step[5])
    assert metrics["stp3_l2_2s_m"] == pytest.approx(np.mean(per_step[:4]))
    assert metrics["stp3_l2_avg_m"] == pytest.approx(np.mean([np.mean(per_step[:n]) for n in (2, 4, 6)]))
    with pytest.raises(ValueError, match="label_ids"):
        planning_l2_metrics(EvalPrediction(predictions=predicted, label_ids=targets[..., :2]))
