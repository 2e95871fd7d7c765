"""Baselines: the constant-velocity planner, its validity, and the hard subset it defines (hand-made trajectories)."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.constants import EGO_STATUS_FEATURES, NUM_WAYPOINTS
from occvla_hf.evaluation.baselines import (
    HARD_DEVIATION_M,
    constant_velocity_deviation_m,
    constant_velocity_trajectories,
    hard_keyframes,
    has_velocity,
    history_constant_velocity_trajectories,
)

VX, VY = EGO_STATUS_FEATURES.index("vx"), EGO_STATUS_FEATURES.index("vy")


def ego_status(*velocities_m_s: tuple[float, float]) -> np.ndarray:
    status = np.zeros((len(velocities_m_s), len(EGO_STATUS_FEATURES)), dtype=np.float32)
    status[:, [VX, VY]] = velocities_m_s
    return status


def test_constant_velocity_baseline_extrapolates_the_velocity() -> None:
    ego = ego_status((4.0, -1.0))
    expected = np.array([[2.0, -0.5], [4.0, -1.0], [6.0, -1.5], [8.0, -2.0], [10.0, -2.5], [12.0, -3.0]])
    np.testing.assert_allclose(constant_velocity_trajectories(ego)[0], expected)


def test_the_history_baseline_keeps_the_velocity_of_the_last_past_step() -> None:
    """The position 0.5 s ago is (-2, 0.5): 4 m/s forward, 1 m/s to the right, as `ego_status((4.0, -1.0))` above."""
    past = np.array([[[-8.0, 2.0], [-6.0, 1.5], [-4.0, 1.0], [-2.0, 0.5]], [[0.0, 0.0]] * 3 + [[-3.0, 0.0]]])
    mask = np.array([[True] * 4, [False, False, False, False]])  # the second: its last position invalid
    expected = np.array([[2.0, -0.5], [4.0, -1.0], [6.0, -1.5], [8.0, -2.0], [10.0, -2.5], [12.0, -3.0]])
    got = history_constant_velocity_trajectories(past, mask)
    np.testing.assert_allclose(got[0], expected)
    np.testing.assert_allclose(got[1], np.zeros((NUM_WAYPOINTS, 2)))  # stands still
    with pytest.raises(ValueError, match=r"past_trajectory: expected shape \(N, 4, 2\), got \(2, 3, 2\)"):
        history_constant_velocity_trajectories(past[:, 1:], mask)
    with pytest.raises(ValueError, match="past_trajectory: expected finite values"):
        history_constant_velocity_trajectories(np.where(mask[..., None], past, np.nan), mask)


def test_has_velocity_needs_both_vx_and_vy_valid() -> None:
    valid = np.ones((3, len(EGO_STATUS_FEATURES)), dtype=bool)
    valid[1, VY] = False
    valid[2, EGO_STATUS_FEATURES.index("steering")] = False
    np.testing.assert_array_equal(has_velocity(valid), [True, False, True])


@pytest.fixture
def hand_made() -> dict[str, np.ndarray]:
    """Six keyframes at 10 m/s straight ahead (constant velocity: x = 5, 10, ..., 30 m, y = 0). Their futures:
    0 keeps the speed; 1 stops at 25 m (5 m short at 3 s); 2 drifts left to 1.0 m at 3 s (exactly the threshold:
    not hard); 3 is 1.25 m off at 1 s only; 4 is 30 m off at 3 s, a step its mask marks invalid; 5 is 3 m off at
    every step but has no valid ego velocity."""
    cv_x = 5.0 * np.arange(1, NUM_WAYPOINTS + 1)
    straight = np.stack([cv_x, np.zeros(NUM_WAYPOINTS)], axis=-1)  # (6, 2)
    trajectory = np.repeat(straight[None], 6, axis=0).astype(np.float32)
    trajectory[1, :, 0] = [5.0, 10.0, 15.0, 20.0, 25.0, 25.0]  # stops: 5 m short at 3 s
    trajectory[2, :, 1] = [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]  # 1.0 m off at 3 s
    trajectory[3, 1, 1] = -1.25  # 1.25 m off at 1 s only
    trajectory[4, 5] = [0.0, 0.0]  # 30 m off at 3 s, a step the mask drops
    trajectory[5, :, 1] = 3.0  # 3 m off everywhere
    mask = np.ones((6, NUM_WAYPOINTS), dtype=bool)
    mask[4, 5] = False
    valid = np.ones((6, len(EGO_STATUS_FEATURES)), dtype=bool)
    valid[5, VX] = False
    return {
        "trajectory": trajectory,
        "trajectory_mask": mask,
        "ego_status": ego_status(*[(10.0, 0.0)] * 6),
        "ego_status_valid": valid,
    }


def test_deviation_is_the_largest_distance_over_the_valid_steps(hand_made) -> None:
    deviation_m = constant_velocity_deviation_m(
        hand_made["trajectory"], hand_made["trajectory_mask"], hand_made["ego_status"]
    )
    np.testing.assert_array_equal(deviation_m, [0.0, 5.0, 1.0, 1.25, 0.0, 3.0])


def test_hard_subset_is_exact_on_hand_made_trajectories(hand_made) -> None:
    assert HARD_DEVIATION_M == 1.0
    np.testing.assert_array_equal(hard_keyframes(**hand_made), [False, True, False, True, False, False])
    lower = hard_keyframes(**hand_made, threshold_m=0.99)
    np.testing.assert_array_equal(lower, [False, True, True, True, False, False])


def test_a_keyframe_without_a_valid_step_has_no_deviation_and_is_not_hard(hand_made) -> None:
    hand_made["trajectory_mask"][1] = False
    deviation_m = constant_velocity_deviation_m(
        hand_made["trajectory"], hand_made["trajectory_mask"], hand_made["ego_status"]
    )
    assert np.isnan(deviation_m[1]) and not hard_keyframes(**hand_made)[1]


def test_bad_inputs_name_the_field(hand_made) -> None:
    with pytest.raises(ValueError, match=r"trajectory: expected shape \(N, 6, 2\)"):
        hard_keyframes(**{**hand_made, "trajectory": hand_made["trajectory"][:, :5]})
    with pytest.raises(ValueError, match="ego_status: expected finite"):
        hard_keyframes(**{**hand_made, "ego_status": np.full_like(hand_made["ego_status"], np.nan)})
    with pytest.raises(ValueError, match="ego_status_valid: expected shape"):
        hard_keyframes(**{**hand_made, "ego_status_valid": hand_made["ego_status_valid"][:3]})
    with pytest.raises(ValueError, match="threshold_m"):
        hard_keyframes(**hand_made, threshold_m=-1.0)
