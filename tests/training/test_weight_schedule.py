"""OccupancyWeightSchedule: the occupancy loss weight over optimiser steps."""

from __future__ import annotations

import pytest

from occvla_hf.training.weight_schedule import OccupancyWeightSchedule


def test_occupancy_weight_schedule_is_piecewise_linear():
    warm_up = OccupancyWeightSchedule(start_factor=0.0, ramp_steps=4)
    assert [warm_up(step) for step in (0, 1, 2, 4, 10)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    warm_down = OccupancyWeightSchedule(end_factor=0.2, start_step=10, ramp_steps=8)
    assert [warm_down(step) for step in (0, 10, 14, 18, 30)] == pytest.approx([1.0, 1.0, 0.6, 0.2, 0.2])
    assert OccupancyWeightSchedule()(123) == 1.0
    with pytest.raises(ValueError, match="ramp_steps"):
        OccupancyWeightSchedule(ramp_steps=-1)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(start_factor=float("nan")), "start_factor"),
        (dict(end_factor=float("nan")), "end_factor"),
        (dict(end_factor=float("inf")), "end_factor"),
        (dict(start_step=float("nan")), "start_step"),
        (dict(ramp_steps=2.5), "ramp_steps"),
        (dict(start_factor="1"), "start_factor"),
    ],
    ids=["start-nan", "end-nan", "end-inf", "step-nan", "ramp-float", "factor-str"],
)
def test_occupancy_weight_schedule_rejects_non_finite_and_wrong_types(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"occupancy_weight_schedule.{field}"):
        OccupancyWeightSchedule(**overrides)
