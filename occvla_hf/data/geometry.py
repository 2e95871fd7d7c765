"""Pure geometry for the nuScenes readers: poses, frame changes, boxes and ego kinematics.

Conventions: a pose is a (4, 4) homogeneous matrix mapping points of a frame into its parent (ego -> global,
camera -> ego), built from a nuScenes `translation` (x, y, z) and `rotation` quaternion (w, x, y, z). The ego frame
is x forward, y left, z up, metres. Yaw is the heading of a frame's x axis projected on the parent's xy plane,
`atan2(R[1, 0], R[0, 0])`, as the devkit's `quaternion_yaw` computes it. Quaternions, yaw and angle wrapping come
from `occvla_hf.geometry`, shared with the sim.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from occvla_hf.geometry import matrix_yaw, quaternion_to_matrix, wrap_angle


def pose_matrix(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    """(4, 4) float64 matrix of a nuScenes pose record: maps points of the frame into its parent."""
    translation = np.asarray(translation, dtype=np.float64)
    if translation.shape != (3,):
        raise ValueError(f"translation: expected (3,), got {translation.shape}")
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_to_matrix(np.asarray(rotation_wxyz))
    matrix[:3, 3] = translation
    return matrix


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) pose, using the transpose of its rotation."""
    rotation_t = pose[:3, :3].T
    inverse = np.eye(4)
    inverse[:3, :3] = rotation_t
    inverse[:3, 3] = -rotation_t @ pose[:3, 3]
    return inverse


def sensor_to_keyframe_ego(
    sensor_to_ego: np.ndarray, ego_pose_at_sensor: np.ndarray, keyframe_ego_pose: np.ndarray
) -> np.ndarray:
    """(4, 4) sensor -> ego at the keyframe: sensor -> ego (sensor time) -> global -> ego (keyframe time).

    The devkit's chain (`NuScenes.get_sample_data`, `LidarPointCloud` tutorials) with both ego poses; equal to
    `sensor_to_ego` when the sensor and the keyframe share a timestamp.
    """
    return invert_pose(keyframe_ego_pose) @ ego_pose_at_sensor @ sensor_to_ego


def positions_in_frame(poses: np.ndarray, frame_pose: np.ndarray) -> np.ndarray:
    """xy origins of `poses` (N, 4, 4) expressed in the frame of `frame_pose` (4, 4), all * -> global; -> (N, 2)."""
    frame_from_global = invert_pose(frame_pose)
    points = poses[:, :3, 3] @ frame_from_global[:3, :3].T + frame_from_global[:3, 3]
    return points[:, :2]


def boxes_in_frame(
    translations: np.ndarray, sizes_wlh: np.ndarray, rotations_wxyz: np.ndarray, frame_pose: np.ndarray
) -> np.ndarray:
    """Global nuScenes boxes -> (N, 7) rows in `BOX_FIELDS` order in the frame of `frame_pose` (frame -> global).

    translations (N, 3), sizes_wlh (N, 3) as nuScenes stores them (width, length, height), rotations_wxyz (N, 4).
    """
    translations = np.asarray(translations, dtype=np.float64).reshape(-1, 3)
    sizes_wlh = np.asarray(sizes_wlh, dtype=np.float64).reshape(-1, 3)
    rotations_wxyz = np.asarray(rotations_wxyz, dtype=np.float64).reshape(-1, 4)
    frame_from_global = invert_pose(frame_pose)
    centers = translations @ frame_from_global[:3, :3].T + frame_from_global[:3, 3]
    yaws = matrix_yaw(frame_from_global[:3, :3] @ quaternion_to_matrix(rotations_wxyz))
    return np.concatenate([centers, sizes_wlh[:, [1, 0, 2]], yaws[:, None]], axis=1)


def ego_kinematics(poses: np.ndarray, timestamps_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Velocity, acceleration and yaw rate of the ego at the last of up to three consecutive keyframe poses.

    Causal backward differences (only the present and the past, since ego status is a planner input):
      v_k = (p_k - p_{k-1}) / (t_k - t_{k-1})                      needs 2 poses
      a_k = (v_k - v_{k-1}) / ((t_k - t_{k-2}) / 2)                needs 3 poses (the two velocities' mid-times)
      yaw_rate_k = wrap(yaw_k - yaw_{k-1}) / (t_k - t_{k-1})       needs 2 poses
    p are global positions; v and a are rotated into the ego frame at t_k (x forward, y left).

    Args:
        poses: (K, 4, 4) ego -> global, oldest first, 1 <= K <= 3.
        timestamps_us: (K,) increasing microseconds.

    Returns:
        values (5,) float64 [vx, vy (m/s), ax, ay (m/s^2), yaw_rate (rad/s)] and valid (5,) bool; invalid entries
        (too few poses) are 0.
    """
    poses = np.asarray(poses, dtype=np.float64)
    times_s = np.asarray(timestamps_us, dtype=np.float64) * 1e-6
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or not 1 <= poses.shape[0] <= 3:
        raise ValueError(f"poses: expected (K, 4, 4) with 1 <= K <= 3, got {poses.shape}")
    if times_s.shape != poses.shape[:1] or np.any(np.diff(times_s) <= 0):
        raise ValueError(f"timestamps_us: expected ({poses.shape[0]},) strictly increasing, got {timestamps_us}")
    values = np.zeros(5)
    valid = np.zeros(5, dtype=bool)
    ego_from_global = poses[-1, :3, :3].T
    positions = poses[:, :3, 3]
    velocities = np.diff(positions, axis=0) / np.diff(times_s)[:, None]  # (K-1, 3), global
    if len(velocities) >= 1:
        values[0:2] = (ego_from_global @ velocities[-1])[:2]
        yaws = matrix_yaw(poses[-2:, :3, :3])
        values[4] = wrap_angle(yaws[1] - yaws[0]) / (times_s[-1] - times_s[-2])
        valid[[0, 1, 4]] = True
    if len(velocities) >= 2:
        acceleration = (velocities[-1] - velocities[-2]) / ((times_s[-1] - times_s[-3]) / 2)
        values[2:4] = (ego_from_global @ acceleration)[:2]
        valid[2:4] = True
    return values, valid
