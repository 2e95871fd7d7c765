"""Ray casting, shading and Occ3D labels on hand-built scenes (a box in front of the car, a wall)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from occvla_hf.constants import OCC_CLASS_NAMES, OCC_FREE_CLASS, OCC_GRID_SHAPE
from occvla_hf.sim.cameras import LIDAR_TRANSLATION_M, camera_rays, lidar_rays
from occvla_hf.sim.geometry import points_in_box
from occvla_hf.sim.layout import DRIVEABLE, GroundMap
from occvla_hf.sim.occupancy import (
    GROUND_LAYER,
    labels_npz_bytes,
    project_voxels_camera,
    project_voxels_lidar,
    semantics,
    visibility_mask,
    voxel_centers,
    voxel_index,
)
from occvla_hf.sim.render import (
    GROUND_ID,
    SKY_ID,
    FrameBoxes,
    cast_camera,
    cast_lidar,
    class_color,
    noise_texture,
    shade_camera,
)

CAR = OCC_CLASS_NAMES.index("car")
MANMADE = OCC_CLASS_NAMES.index("manmade")
SCALE = 0.1  # 160 x 90 images


def flat_ground(occ_class: int = DRIVEABLE) -> GroundMap:
    shape = (400, 400)
    return GroundMap(np.array([-100.0, -100.0]), 0.5, np.full(shape, occ_class, np.uint8), np.zeros(shape, np.uint8))


def boxes(*specs: tuple[tuple[float, float, float], tuple[float, float, float], float, int]) -> FrameBoxes:
    centers, sizes, yaws, classes = zip(*specs)
    return FrameBoxes(
        centers=np.array(centers, float),
        sizes=np.array(sizes, float),
        yaws=np.array(yaws, float),
        occ_classes=np.array(classes, np.uint8),
        colors=np.stack([class_color(c) for c in classes]),
        annotation_index=np.arange(len(specs)),
    )


CAR_AHEAD = ((12.0, 0.0, 1.0), (2.0, 4.0, 2.0), 0.0, CAR)  # front face at x = 11, top at z = 2


def test_camera_cast_hits_the_front_face_at_the_right_depth():
    front = camera_rays(SCALE)[0]
    cast = cast_camera(front, boxes(CAR_AHEAD))
    cy, cx = int(front.intrinsic[1, 2]), int(front.intrinsic[0, 2])
    assert cast.ids[cy, cx] == 0
    assert cast.depth[cy, cx] == pytest.approx(11.0 - front.origin[0], abs=1e-4)  # principal ray looks along +x
    assert cast.face[cy, cx] == 0  # entered through the -x face
    assert cast.ids[0, cx] == SKY_ID  # above the box top
    assert cast.ids[-1, cx] == GROUND_ID
    assert cast.depth[-1, cx] == pytest.approx(front.ground_depth[-1, cx])
    assert cast.hits_per_box[0] == np.count_nonzero(cast.ids == 0)  # nothing occludes it


def test_nearer_box_occludes_a_farther_one_whatever_the_order():
    front = camera_rays(SCALE)[0]
    near = ((6.0, 0.0, 0.5), (1.0, 1.0, 1.0), 0.0, CAR)
    for specs in ((CAR_AHEAD, near), (near, CAR_AHEAD)):
        cast = cast_camera(front, boxes(*specs))
        near_id = specs.index(near)
        projected_col = int(round(front.intrinsic[0, 2]))
        projected_row = int(round(front.intrinsic[1, 2] + front.intrinsic[1, 1] * (1.51 - 0.5) / (5.5 - 1.70)))
        assert cast.ids[projected_row, projected_col] == near_id


def test_shading_keeps_the_class_hue():
    front = camera_rays(SCALE)[0]
    scene = boxes(CAR_AHEAD)
    cast = cast_camera(front, scene)
    image = shade_camera(
        front, cast, scene, flat_ground(), np.zeros(2), 0.0, np.array([0.0, 0.0, 1.0]), noise_texture(0)
    )
    pixels = image[cast.ids == 0].astype(float)
    expected = class_color(CAR) * 0.55  # sun overhead: side faces get the ambient term only
    assert np.all(np.abs(pixels - expected) <= 0.08 * expected + 1.0)


def test_lidar_ray_straight_ahead_measures_the_range_to_the_face():
    rays = lidar_rays(32, 4, 256)
    cast = cast_lidar(rays, boxes(CAR_AHEAD))
    row = int(np.argmin(np.abs(rays.elevations)))
    expected = (11.0 - LIDAR_TRANSLATION_M[0]) / np.cos(rays.elevations[row])
    assert cast.ids[row, 0] == 0
    assert cast.depth[row, 0] == pytest.approx(expected, abs=1e-4)
    assert cast.ids[row, len(rays.azimuths) // 2] != 0  # looking backwards


def test_semantics_fill_box_voxels_and_the_ground_layer():
    car = ((5.0, 5.0, 0.85), (4.4, 1.9, 1.7), 0.3, CAR)
    grid = semantics(flat_ground(), np.array([10.0, -3.0]), 0.7, boxes(car))
    centers = voxel_centers()
    inside = points_in_box(centers, np.array(car[0]), np.array(car[1]), car[2]).reshape(OCC_GRID_SHAPE)
    assert inside.sum() > 50
    assert np.all(grid[inside] == CAR)
    outside = ~inside
    assert np.all(grid[:, :, GROUND_LAYER][outside[:, :, GROUND_LAYER]] == DRIVEABLE)
    above = outside.copy()
    above[:, :, : GROUND_LAYER + 1] = False
    assert np.all(grid[above] == OCC_FREE_CLASS)


def test_camera_mask_hides_voxels_behind_a_wall():
    wall = ((15.5, 0.0, 3.0), (1.0, 30.0, 6.0), 0.0, MANMADE)  # 1 m thick, 30 m wide, 6 m tall, 15 m ahead
    scene = boxes(wall)
    cams = camera_rays(SCALE)
    mask = visibility_mask([project_voxels_camera(r) for r in cams], [cast_camera(r, scene) for r in cams])
    grid = semantics(flat_ground(), np.zeros(2), 0.0, scene)
    assert mask[voxel_index(10.0, 0.0, 1.0)]  # free space in front of the wall
    assert mask[voxel_index(6.0, 0.0, 0.0)]  # road in front
    assert mask[voxel_index(15.1, 0.0, 1.0)] and grid[voxel_index(15.1, 0.0, 1.0)] == MANMADE  # the wall's face
    assert not mask[voxel_index(15.9, 0.0, 1.0)]  # inside the wall
    assert not mask[voxel_index(20.0, 0.0, 1.0)]  # behind it
    assert not mask[voxel_index(25.0, 3.0, 4.0)]
    assert not mask[voxel_index(30.0, 0.0, 0.0)]  # road behind it
    assert mask[voxel_index(20.0, -25.0, 1.0)]  # seen past the wall's end by the front-right camera
    assert mask[voxel_index(-10.0, 0.0, 1.0)]  # behind the car, by the back camera


def test_lidar_mask_hides_voxels_behind_the_wall_and_below_its_field_of_view():
    wall = ((15.5, 0.0, 3.0), (1.0, 30.0, 6.0), 0.0, MANMADE)
    rays = lidar_rays(32, 4, 256)
    mask = visibility_mask([project_voxels_lidar(rays)], [cast_lidar(rays, boxes(wall))])
    assert mask[voxel_index(10.0, 0.0, 1.0)] and mask[voxel_index(-10.0, 0.0, 1.0)]
    assert not mask[voxel_index(20.0, 0.0, 1.0)]
    assert not mask[voxel_index(1.0, 0.0, 0.0)]  # under the sensor, below its lowest beam


def test_labels_npz_round_trips_and_is_byte_stable():
    rng = np.random.default_rng(0)
    sem = rng.integers(0, 18, OCC_GRID_SHAPE, dtype=np.uint8)
    lidar, camera = rng.random(OCC_GRID_SHAPE) > 0.5, rng.random(OCC_GRID_SHAPE) > 0.5
    payload = labels_npz_bytes(sem, lidar, camera)
    assert payload == labels_npz_bytes(sem, lidar, camera)
    loaded = np.load(io.BytesIO(payload))
    assert sorted(loaded.files) == ["mask_camera", "mask_lidar", "semantics"]
    assert loaded["semantics"].dtype == np.uint8 and loaded["mask_camera"].dtype == bool
    assert np.array_equal(loaded["semantics"], sem) and np.array_equal(loaded["mask_lidar"], lidar)
