"""The `occvla-hf train` command's own logic."""

from __future__ import annotations

import math

from occvla_hf.training.cli import printable_metrics


def test_missing_and_nan_metrics_print_as_null():
    # an eval over too few samples can leave a metric None (e.g. no valid step at a horizon)
    metrics = {"eval_l2_3s_m": None, "eval_loss": math.nan, "train_loss": 0.123456}
    assert printable_metrics(metrics) == {"eval_l2_3s_m": None, "eval_loss": None, "train_loss": 0.1235}
