"""Baseline planners and the keyframes they get wrong.

The constant-velocity planner extrapolates the ego velocity of the raw ego status (vx, vy, m/s, ego frame) for 3 s:
the baseline a learned planner should beat, and the reference that defines the **hard subset** of keyframes, those
whose logged future departs from it (braking for a lead vehicle, stopping at a light, yielding, turning):

    deviation = max over the valid future steps t of || trajectory[t] - constant_velocity[t] ||_2   (metres)
    hard      = valid ego velocity and at least one valid future step and deviation > HARD_DEVIATION_M

The maximum runs over the steps of `trajectory_mask` only: a keyframe near the end of its scene is judged on the
future it has (its deviation is a lower bound of the 3 s one). Keyframes without a valid ego velocity (a scene's first
keyframe) have no constant-velocity plan and are never hard.
"""

from __future__ import annotations

import numpy as np

from occvla_hf.constants import (
    EGO_STATUS_FEATURES,
    EGO_VELOCITY_FEATURES,
    NUM_PAST_WAYPOINTS,
    NUM_WAYPOINTS,
    WAYPOINT_STEP_S,
)

# A keyframe is hard when its logged future departs from constant velocity by more than this (metres).
HARD_DEVIATION_M: float = 1.0

_VELOCITY_COLUMNS: list[int] = [EGO_STATUS_FEATURES.index(name) for name in EGO_VELOCITY_FEATURES]


def _check_array(name: str, array: np.ndarray, shape: tuple[int | None, ...], finite: bool = True) -> None:
    """ValueError naming `name` unless `array` has `shape` (None: any size) and, with `finite`, no NaN/inf."""
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        expected = "(" + ", ".join("N" if want is None else str(want) for want in shape) + ")"
        raise ValueError(f"{name}: expected shape {expected}, got {array.shape}")
    if finite and not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values, found NaN or inf")


def constant_velocity_trajectories(ego_status: np.ndarray) -> np.ndarray:
    """(N, 6, 2) waypoints, metres, ego frame, of an ego keeping its current velocity (vx, vy of the raw (N, F) ego
    status, m/s) for 3 s: the baseline a planner should beat."""
    velocity_m_s = ego_status[:, _VELOCITY_COLUMNS]  # (N, 2)
    times_s = WAYPOINT_STEP_S * np.arange(1, NUM_WAYPOINTS + 1)  # (6,)
    return velocity_m_s[:, None, :] * times_s[None, :, None]


def history_constant_velocity_trajectories(past_trajectory: np.ndarray, past_trajectory_mask: np.ndarray) -> np.ndarray:
    """(N, 6, 2) waypoints, metres, ego frame, of an ego keeping the velocity of its last past step for 3 s: the
    baseline of a planner without ego status that reads the ego history (and where such a head starts,
    `OccVLATrajectoryHead.init_constant_velocity`). The last past position p (N, 2) lies one keyframe (0.5 s) back and
    the current one is the origin, so the velocity is -p per step and waypoint k is -k p; zero where p is invalid.

    Args:
        past_trajectory: (N, 4, 2) past ego positions, metres, current ego frame, oldest first.
        past_trajectory_mask: (N, 4) bool, valid positions.
    """
    past_trajectory = np.asarray(past_trajectory, dtype=np.float64)
    past_trajectory_mask = np.asarray(past_trajectory_mask, dtype=bool)
    _check_array("past_trajectory", past_trajectory, (None, NUM_PAST_WAYPOINTS, 2))
    _check_array("past_trajectory_mask", past_trajectory_mask, (len(past_trajectory), NUM_PAST_WAYPOINTS), finite=False)
    last = np.where(past_trajectory_mask[:, -1:], past_trajectory[:, -1], 0.0)  # (N, 2)
    return -np.arange(1, NUM_WAYPOINTS + 1)[None, :, None] * last[:, None, :]


def has_velocity(ego_status_valid: np.ndarray) -> np.ndarray:
    """(N,) bool: the (N, F) validity flags of the ego status mark both vx and vy valid (not at a scene start)."""
    return ego_status_valid[:, _VELOCITY_COLUMNS].all(axis=1)


def constant_velocity_deviation_m(
    trajectory: np.ndarray, trajectory_mask: np.ndarray, ego_status: np.ndarray
) -> np.ndarray:
    """(N,) largest distance, metres, between the logged waypoints and the constant-velocity ones over the valid
    steps of each keyframe (the module docstring's `deviation`); NaN for a keyframe without a valid step.

    Args:
        trajectory: (N, 6, 2) logged future waypoints, metres, ego frame.
        trajectory_mask: (N, 6) bool, valid waypoints.
        ego_status: (N, F) raw ego status (`EGO_STATUS_FEATURES` order).
    """
    trajectory = np.asarray(trajectory, dtype=np.float64)
    trajectory_mask = np.asarray(trajectory_mask, dtype=bool)
    ego_status = np.asarray(ego_status, dtype=np.float64)
    _check_array("trajectory", trajectory, (None, NUM_WAYPOINTS, 2))
    _check_array("trajectory_mask", trajectory_mask, (len(trajectory), NUM_WAYPOINTS), finite=False)
    _check_array("ego_status", ego_status, (len(trajectory), len(EGO_STATUS_FEATURES)))
    distance_m = np.linalg.norm(trajectory - constant_velocity_trajectories(ego_status), axis=-1)  # (N, 6)
    deviation_m = np.where(trajectory_mask, distance_m, -np.inf).max(axis=1)
    return np.where(trajectory_mask.any(axis=1), deviation_m, np.nan)


def hard_keyframes(
    trajectory: np.ndarray,
    trajectory_mask: np.ndarray,
    ego_status: np.ndarray,
    ego_status_valid: np.ndarray,
    threshold_m: float = HARD_DEVIATION_M,
) -> np.ndarray:
    """(N,) bool, the hard subset: keyframes with a valid ego velocity whose logged future departs from constant
    velocity by more than `threshold_m` metres (strictly) at some valid step (see the module docstring).

    Args:
        trajectory, trajectory_mask, ego_status: as `constant_velocity_deviation_m`.
        ego_status_valid: (N, F) bool validity flags of the ego status.
        threshold_m: the deviation a hard keyframe exceeds, metres.
    """
    ego_status_valid = np.asarray(ego_status_valid, dtype=bool)
    _check_array("ego_status_valid", ego_status_valid, (len(trajectory), len(EGO_STATUS_FEATURES)), finite=False)
    if not np.isfinite(threshold_m) or threshold_m < 0:
        raise ValueError(f"threshold_m: expected a finite distance >= 0, got {threshold_m}")
    deviation_m = constant_velocity_deviation_m(trajectory, trajectory_mask, ego_status)
    # Where the velocity is invalid its stored value is arbitrary: only flagged-valid velocities are extrapolated.
    return has_velocity(ego_status_valid) & (np.nan_to_num(deviation_m, nan=-np.inf) > threshold_m)


__all__ = [
    "HARD_DEVIATION_M",
    "constant_velocity_deviation_m",
    "constant_velocity_trajectories",
    "hard_keyframes",
    "has_velocity",
    "history_constant_velocity_trajectories",
]
