"""`OccupancyWeightSchedule`: the multiplier of the occupancy loss weight over optimiser steps (warm-up/down)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class OccupancyWeightSchedule:
    """Multiplier of `config.occupancy_loss_weight` over optimiser steps: `start_factor` until `start_step`, then
    linear to `end_factor` over `ramp_steps` steps, then `end_factor`.

    Warm-up: `OccupancyWeightSchedule(start_factor=0.0, ramp_steps=500)`; warm-down after step 5000:
    `OccupancyWeightSchedule(end_factor=0.0, start_step=5000, ramp_steps=1000)`. The default is constant 1.
    """

    start_factor: float = 1.0
    end_factor: float = 1.0
    start_step: int = 0
    ramp_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("start_factor", "end_factor", "start_step", "ramp_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"occupancy_weight_schedule.{name}: expected a finite number >= 0, got {value!r}")
        for name in ("start_step", "ramp_steps"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"occupancy_weight_schedule.{name}: expected an int, got {getattr(self, name)!r}")

    def __call__(self, step: int) -> float:
        """The multiplier at optimiser step `step` (0 = the first update)."""
        if step <= self.start_step:
            return self.start_factor
        if step >= self.start_step + self.ramp_steps:
            return self.end_factor
        progress = (step - self.start_step) / self.ramp_steps
        return self.start_factor + progress * (self.end_factor - self.start_factor)


__all__ = ["OccupancyWeightSchedule"]
