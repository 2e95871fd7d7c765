"""Rotations shared by the nuScenes readers (`data`) and the sim: quaternions, yaw and angle wrapping.

Quaternions are (w, x, y, z), nuScenes' order; frames are right-handed with z up; yaw is the heading of a frame's
x axis projected on the parent's xy plane, counter-clockwise from +x, `atan2(R[1, 0], R[0, 0])` as the devkit's
`quaternion_yaw` computes it. A leaf module (numpy only), so that neither side imports the other.
"""

from __future__ import annotations

import numpy as np


def wrap_angle(angle_rad: np.ndarray | float) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(angle_rad) + np.pi) % (2 * np.pi) - np.pi


def quaternion_to_matrix(rotation_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrices of unit quaternions (..., 4) in (w, x, y, z) order -> (..., 3, 3)."""
    q = np.asarray(rotation_wxyz, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"rotation_wxyz: expected (..., 4), got {q.shape}")
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def rotation_to_quaternion(rotation: np.ndarray) -> list[float]:
    """[w, x, y, z] of a proper (3, 3) rotation matrix (Shepperd's method, w >= 0)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    if q[0] < 0:
        q = [-c for c in q]
    return [float(c) for c in q]


def yaw_to_quaternion(yaw_rad: float) -> list[float]:
    """[w, x, y, z] of a rotation by `yaw_rad` about +z."""
    return [float(np.cos(yaw_rad / 2.0)), 0.0, 0.0, float(np.sin(yaw_rad / 2.0))]


def matrix_yaw(rotation: np.ndarray) -> np.ndarray:
    """Yaw (radians) of rotation matrices (..., 3, 3): heading of the rotated x axis in the xy plane."""
    return np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
