"""Meta-action codec: hand-made trajectories get the expected labels; text round trip; bad input errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from occvla_hf.constants import DRIVING_COMMANDS, PATH_ACTIONS, SPEED_ACTIONS
from occvla_hf.meta_action import (
    SPEED_CHANGE_MPS,
    MetaAction,
    all_meta_actions,
    classify_path,
    classify_speed,
    command_from_trajectory,
    meta_action_from_trajectory,
)

TIMES_S = 0.5 * np.arange(1, 7)  # waypoint times


def sample(position: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Waypoints (6, 2) of a motion given as position(t) -> (x, y)."""
    x, y = position(TIMES_S)
    return np.stack([x, y], axis=1)


def constant_speed(speed_mps: float) -> np.ndarray:
    return sample(lambda t: (speed_mps * t, 0 * t))


def constant_acceleration(start_mps: float, accel_mps2: float) -> np.ndarray:
    """Straight motion with constant acceleration, clamped at standstill (speed never negative)."""
    stop_s = np.inf if accel_mps2 >= 0 else -start_mps / accel_mps2
    t = np.minimum(TIMES_S, stop_s)
    return sample(lambda _: (start_mps * t + 0.5 * accel_mps2 * t**2, 0 * t))


def arc(speed_mps: float, radius_m: float, side: int) -> np.ndarray:
    """Circular turn at constant speed, side +1 = left (y > 0), -1 = right."""

    def position(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        angle_rad = speed_mps * t / radius_m
        return radius_m * np.sin(angle_rad), side * radius_m * (1 - np.cos(angle_rad))

    return sample(position)


def lane_change(speed_mps: float, offset_m: float) -> np.ndarray:
    """Smooth lateral shift by offset_m over 3 s (cosine profile), ending parallel to the lane."""
    return sample(lambda t: (speed_mps * t, offset_m * (1 - np.cos(np.pi * t / 3.0)) / 2))


@pytest.mark.parametrize(
    ("trajectory", "expected"),
    [
        (constant_speed(8.0), "keep, straight"),
        (np.zeros((6, 2)), "stop, straight"),
        (constant_acceleration(8.0, -3.0), "stop, straight"),  # standstill after 2.67 s
        (constant_acceleration(10.0, -1.5), "decelerate, straight"),  # 10 -> 5.9 m/s
        (constant_acceleration(2.0, 2.0), "accelerate, straight"),  # 2 -> 7.5 m/s
        (arc(5.0, 10.0, side=+1), "keep, left turn"),  # 1.5 rad heading change
        (arc(5.0, 10.0, side=-1), "keep, right turn"),
        (lane_change(10.0, 3.5), "keep, left lane change"),
        (lane_change(10.0, -3.5), "keep, right lane change"),
        (lane_change(10.0, 1.0), "keep, straight"),  # 1 m drift within the lane
    ],
)
def test_meta_action_of_hand_made_trajectories(trajectory: np.ndarray, expected: str) -> None:
    assert meta_action_from_trajectory(trajectory).to_text() == expected


def test_slow_turn_while_braking_keeps_the_last_moving_heading() -> None:
    # Left arc that stops at 2 s: the last two segments have zero length, the heading comes from the last real one.
    trajectory = arc(5.0, 5.0, side=+1)
    trajectory[4:] = trajectory[3]
    assert meta_action_from_trajectory(trajectory) == MetaAction("stop", "left turn")


def test_almost_no_travel_is_straight_whatever_the_direction() -> None:
    creep = sample(lambda t: (0 * t, 0.1 * t))  # 0.3 m sideways in 3 s
    assert classify_path(creep) == "straight"


def test_measured_current_speed_replaces_the_first_segment_speed() -> None:
    cruise = constant_speed(5.0)
    assert classify_speed(cruise) == "keep"
    assert classify_speed(cruise, current_speed_mps=8.0) == "decelerate"
    assert classify_speed(cruise, current_speed_mps=2.0) == "accelerate"


def test_speed_change_threshold_is_strict() -> None:
    # First segment 5 m/s, last segment 5 + 0.9 * threshold m/s: keep; 5 + 1.1 * threshold: accelerate.
    for factor, expected in ((0.9, "keep"), (1.1, "accelerate")):
        speeds_mps = np.array([5.0, 5.0, 5.0, 5.0, 5.0, 5.0 + factor * SPEED_CHANGE_MPS])
        x = np.cumsum(speeds_mps * 0.5)
        assert classify_speed(np.stack([x, np.zeros(6)], axis=1)) == expected


def test_mask_uses_only_valid_waypoints() -> None:
    trajectory = arc(5.0, 10.0, side=+1)
    trajectory[3:] = np.nan  # end of the scene: 3 valid waypoints (1.5 s, heading 0.75 rad)
    mask = np.array([True, True, True, False, False, False])
    assert meta_action_from_trajectory(trajectory, mask=mask) == MetaAction("keep", "left turn")


def test_text_round_trip_over_the_whole_vocabulary() -> None:
    actions = all_meta_actions()
    assert len(actions) == len(SPEED_ACTIONS) * len(PATH_ACTIONS)
    for action in actions:
        assert MetaAction.from_text(action.to_text()) == action
    assert MetaAction.from_text("  Decelerate,  Right Lane Change \n") == MetaAction("decelerate", "right lane change")


@pytest.mark.parametrize(
    ("text", "field"), [("keep straight", "meta_action"), ("fast, straight", "speed"), ("keep, up", "path")]
)
def test_unknown_text_raises_naming_the_part(text: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MetaAction.from_text(text)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trajectory": np.zeros((5, 2))}, "trajectory"),
        ({"trajectory": np.zeros((6, 2)), "mask": np.zeros(6, dtype=bool)}, "trajectory_mask"),
        ({"trajectory": np.zeros((6, 2)), "mask": np.ones(6)}, "trajectory_mask"),
        ({"trajectory": np.full((6, 2), np.nan)}, "trajectory"),
        ({"trajectory": constant_speed(5.0), "current_speed_mps": float("nan")}, "current_speed_mps"),
    ],
)
def test_bad_input_raises_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        meta_action_from_trajectory(**kwargs)


# --------------------------------------------------------------------------------------- high-level command


def lateral_path(final_y_m: float) -> np.ndarray:
    """Six waypoints 2 m apart ahead, drifting linearly to `final_y_m` at the last one."""
    return np.stack([2.0 * np.arange(1, 7), final_y_m * np.arange(1, 7) / 6], axis=1)


@pytest.mark.parametrize(
    ("final_y_m", "command"),
    [(2.5, "turn left"), (2.0, "turn left"), (1.9, "go straight"), (-1.9, "go straight"), (-2.0, "turn right")],
)
def test_command_follows_the_vad_rule_on_the_final_lateral_offset(final_y_m: float, command: str) -> None:
    # VAD (tools/data_converter/vad_nuscenes_converter.py): right at x >= 2 m of the lidar frame (x right), left at
    # x <= -2 m, else straight; our ego frame has y to the left.
    assert command_from_trajectory(lateral_path(final_y_m)) == command
    assert command in DRIVING_COMMANDS


def test_command_reads_the_last_valid_waypoint_and_is_straight_without_future() -> None:
    path = lateral_path(6.0)  # y = 1, 2, ..., 6 m
    mask = np.array([True, True, False, False, False, False])
    assert command_from_trajectory(path, mask=mask) == "turn left"  # y = 2 m at the last valid waypoint
    assert command_from_trajectory(path, mask=np.array([True] + [False] * 5)) == "go straight"
    assert command_from_trajectory(np.full((6, 2), np.nan), mask=np.zeros(6, bool)) == "go straight"
    with pytest.raises(ValueError, match="trajectory"):
        command_from_trajectory(np.zeros((5, 2)))
