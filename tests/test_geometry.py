"""Rotations shared by the readers and the sim: quaternions against pyquaternion, yaw, angle wrapping."""

from __future__ import annotations

import numpy as np
import pytest
from pyquaternion import Quaternion

from occvla_hf.geometry import matrix_yaw, quaternion_to_matrix, rotation_to_quaternion, wrap_angle, yaw_to_quaternion


def test_quaternion_to_matrix_matches_pyquaternion_for_arbitrary_rotations():
    rng = np.random.default_rng(0)
    quaternions = rng.normal(size=(5, 4))
    expected = np.stack([Quaternion(q / np.linalg.norm(q)).rotation_matrix for q in quaternions])
    np.testing.assert_allclose(quaternion_to_matrix(quaternions), expected, atol=1e-12)


def test_yaw_quaternion_known_value_and_round_trip():
    assert yaw_to_quaternion(np.pi / 2) == pytest.approx([np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)])
    for yaw in np.linspace(-3.1, 3.1, 13):
        assert matrix_yaw(quaternion_to_matrix(yaw_to_quaternion(yaw))) == pytest.approx(yaw)
        assert Quaternion(yaw_to_quaternion(yaw)).yaw_pitch_roll[0] == pytest.approx(yaw)


def test_rotation_to_quaternion_matches_pyquaternion():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = Quaternion(rng.standard_normal(4)).normalised
        ours = Quaternion(rotation_to_quaternion(q.rotation_matrix))
        assert np.allclose(ours.rotation_matrix, q.rotation_matrix, atol=1e-9)
        assert ours.w >= 0


def test_wrap_angle_maps_into_minus_pi_pi():
    np.testing.assert_allclose(wrap_angle(np.array([3 * np.pi / 2, -3 * np.pi / 2, 0.1])), [-np.pi / 2, np.pi / 2, 0.1])
    assert wrap_angle(3 * np.pi / 2) == pytest.approx(-np.pi / 2)
    assert wrap_angle(-np.pi) == pytest.approx(-np.pi)
    assert wrap_angle(0.25) == pytest.approx(0.25)
