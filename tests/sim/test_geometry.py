"""Hand-checked geometry helpers of the sim."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.sim.geometry import (
    Polyline,
    box_corners,
    concat_polylines,
    frame_to_world_2d,
    line_points,
    points_in_box,
    rotation_z,
    world_to_frame_2d,
)
from occvla_hf.sim.layout import Piece


def test_box_corners_of_rotated_box():
    corners = box_corners(np.array([1.0, 2.0, 0.5]), np.array([4.0, 2.0, 1.0]), np.pi / 2)
    # length along +y after a quarter turn: x spans 1 +- 1, y spans 2 +- 2, z spans 0..1
    assert corners[:, 0].min() == pytest.approx(0.0) and corners[:, 0].max() == pytest.approx(2.0)
    assert corners[:, 1].min() == pytest.approx(0.0) and corners[:, 1].max() == pytest.approx(4.0)
    assert corners[:4, 2] == pytest.approx([0.0] * 4) and corners[4:, 2] == pytest.approx([1.0] * 4)


def test_points_in_box_hand_checked():
    points = np.array([[0.0, 1.9, 0.5], [0.0, 2.1, 0.5], [0.9, 0.0, 0.5], [0.0, 0.0, 1.2]])
    inside = points_in_box(points, np.array([0.0, 0.0, 0.5]), np.array([4.0, 2.0, 1.0]), np.pi / 2)
    assert inside.tolist() == [True, False, True, False]
    assert points_in_box(points[1:2], np.zeros(3) + [0, 0, 0.5], np.array([4.0, 2.0, 1.0]), np.pi / 2, margin_m=0.2)[0]


def test_frame_transforms_are_inverse():
    xy = np.array([[3.0, 4.0], [-1.0, 2.0]])
    local = world_to_frame_2d(xy, np.array([1.0, 1.0]), np.pi / 2)
    assert local[0] == pytest.approx([3.0, -2.0])
    assert frame_to_world_2d(local, np.array([1.0, 1.0]), np.pi / 2) == pytest.approx(xy)
    assert rotation_z(np.pi / 2)[:2, :2] @ np.array([1.0, 0.0]) == pytest.approx([0.0, 1.0])


def test_polyline_projection_on_an_l_shaped_path():
    path = concat_polylines([line_points(np.zeros(2), 0.0, 10.0), line_points(np.array([10.0, 0.0]), np.pi / 2, 10.0)])
    s, lateral = path.project(np.array([[4.0, 1.0], [11.0, 6.0], [4.0, -2.0]]))
    assert s == pytest.approx([4.0, 16.0, 4.0])
    assert lateral == pytest.approx([1.0, -1.0, -2.0])  # left of the path is positive
    xy, heading = path.interpolate(15.0)
    assert xy == pytest.approx([10.0, 5.0]) and heading == pytest.approx(np.pi / 2)


def test_polyline_offset_of_a_line_is_parallel():
    path = Polyline.from_points(np.array([[0.0, 0.0], [5.0, 5.0]]))
    left = path.offset(np.sqrt(2.0))
    assert left.points[0] == pytest.approx([-1.0, 1.0]) and left.length == pytest.approx(path.length)


def test_arc_piece_frenet_coordinates():
    arc = Piece(np.array([0.0, 0.0]), 0.0, np.pi / 2 * 10.0, 0.1)  # quarter circle left, radius 10, centre (0, 10)
    s, d = arc.frenet(np.array([[10.0, 10.0], [0.0, 1.0], [9.0, 10.0]]))
    assert s == pytest.approx([np.pi / 2 * 10.0, 0.0, np.pi / 2 * 10.0])
    assert d == pytest.approx([0.0, 1.0, 1.0])
    end, heading = arc.end_pose()
    assert end == pytest.approx([10.0, 10.0]) and heading == pytest.approx(np.pi / 2)
