"""Hand-checked geometry of the nuScenes readers."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import transform_matrix
from pyquaternion import Quaternion

from occvla_hf.data.geometry import (
    boxes_in_frame,
    ego_kinematics,
    invert_pose,
    pose_matrix,
    positions_in_frame,
    sensor_to_keyframe_ego,
)


def _yaw_pose(x: float, y: float, yaw_rad: float) -> np.ndarray:
    return pose_matrix([x, y, 0.0], Quaternion(axis=[0, 0, 1], angle=yaw_rad).elements)


def test_pose_matrix_matches_devkit_transform_matrix_and_inverts():
    rotation = Quaternion(axis=[0.3, -0.2, 1.0], angle=0.7)
    pose = pose_matrix([1.0, -2.0, 0.5], rotation.elements)
    np.testing.assert_allclose(pose, transform_matrix([1.0, -2.0, 0.5], rotation), atol=1e-12)
    np.testing.assert_allclose(invert_pose(pose) @ pose, np.eye(4), atol=1e-12)


def test_positions_in_frame_of_ego_facing_north():
    # Ego at (10, 5) facing +y (yaw 90 deg): a pose 2 m north is 2 m ahead, one 3 m east is 3 m to the right.
    frame = _yaw_pose(10.0, 5.0, np.pi / 2)
    others = np.stack([_yaw_pose(10.0, 7.0, 0.0), _yaw_pose(13.0, 5.0, 0.0)])
    np.testing.assert_allclose(positions_in_frame(others, frame), [[2.0, 0.0], [0.0, -3.0]], atol=1e-12)


def test_boxes_in_frame_match_devkit_box_transform():
    frame_rotation = Quaternion(axis=[0.05, 0.02, 1.0], angle=2.1)
    frame = pose_matrix([600.0, 1600.0, 0.3], frame_rotation.elements)
    box_rotation = Quaternion(axis=[0, 0, 1], angle=-0.4)
    boxes = boxes_in_frame([[610.0, 1595.0, 1.0]], [[1.9, 4.6, 1.7]], [box_rotation.elements], frame)
    box = Box([610.0, 1595.0, 1.0], [1.9, 4.6, 1.7], box_rotation)
    box.translate(-np.array([600.0, 1600.0, 0.3]))
    box.rotate(frame_rotation.inverse)
    expected = [*box.center, box.wlh[1], box.wlh[0], box.wlh[2], quaternion_yaw(box.orientation)]
    np.testing.assert_allclose(boxes[0], expected, atol=1e-9)


def test_boxes_in_frame_of_no_box_is_empty_with_seven_fields():
    assert boxes_in_frame(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)), np.eye(4)).shape == (0, 7)


def test_ego_kinematics_straight_line_constant_acceleration():
    # Heading +y (yaw 90 deg), positions 0, 1, 3 m at 0, 0.5, 1.0 s: v = 4 m/s forward, a = (4 - 2) / 0.5 = 4 m/s^2.
    poses = np.stack([_yaw_pose(0.0, y, np.pi / 2) for y in (0.0, 1.0, 3.0)])
    values, valid = ego_kinematics(poses, np.array([0, 500_000, 1_000_000]))
    np.testing.assert_allclose(values, [4.0, 0.0, 4.0, 0.0, 0.0], atol=1e-9)
    assert valid.all()


def test_ego_kinematics_sideways_motion_and_yaw_rate_across_pi():
    # Ego facing west turns from yaw 179 deg to -179 deg (+2 deg) in 0.5 s while moving 1 m south (global -y):
    # global v = (0, -2) m/s; in the ego frame R(yaw)^T v = (-2 sin(yaw), -2 cos(yaw)) ~ (0.035, 2.0), i.e. to its left.
    poses = np.stack([_yaw_pose(0.0, 0.0, np.deg2rad(179.0)), _yaw_pose(0.0, -1.0, np.deg2rad(-179.0))])
    values, valid = ego_kinematics(poses, np.array([1_000_000, 1_500_000]))
    yaw = np.deg2rad(-179.0)
    np.testing.assert_allclose(values[:2], [-2 * np.sin(yaw), -2 * np.cos(yaw)], atol=1e-9)
    assert values[1] == pytest.approx(2.0, abs=1e-3)
    assert values[4] == pytest.approx(np.deg2rad(2.0) / 0.5)
    assert valid.tolist() == [True, True, False, False, True]


def test_ego_kinematics_single_pose_is_all_invalid():
    values, valid = ego_kinematics(_yaw_pose(1.0, 2.0, 0.3)[None], np.array([0]))
    assert not valid.any() and not values.any()


def test_ego_kinematics_rejects_non_increasing_timestamps():
    poses = np.stack([np.eye(4), np.eye(4)])
    with pytest.raises(ValueError, match="timestamps_us"):
        ego_kinematics(poses, np.array([5, 5]))


def test_sensor_to_keyframe_ego_moves_the_camera_by_the_ego_motion_in_between():
    # The ego drives 0.4 m along global x between the camera exposure and the lidar keyframe: a camera 1.5 m ahead
    # of the ego origin then sits 1.1 m ahead of the keyframe's ego origin.
    camera = pose_matrix([1.5, 0.0, 1.6], [1.0, 0.0, 0.0, 0.0])
    at_camera = pose_matrix([10.0, 5.0, 0.0], [1.0, 0.0, 0.0, 0.0])
    at_keyframe = pose_matrix([10.4, 5.0, 0.0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(sensor_to_keyframe_ego(camera, at_camera, at_keyframe)[:3, 3], [1.1, 0.0, 1.6])
    np.testing.assert_allclose(sensor_to_keyframe_ego(camera, at_keyframe, at_keyframe), camera)
