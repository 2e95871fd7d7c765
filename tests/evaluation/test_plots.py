"""Pictures: top-down occupancy, camera projection, and PNGs of the requested pixel size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from occvla_hf.constants import CAMERA_NAMES, OCC_CLASS_NAMES, OCC_FREE_CLASS
from occvla_hf.evaluation.plots import (
    category_class_id,
    occupancy_top_classes,
    plot_bev,
    plot_camera_mosaic,
    project_to_image,
    save_png,
)

CAR, ROAD = OCC_CLASS_NAMES.index("car"), OCC_CLASS_NAMES.index("driveable_surface")
# A camera 1.5 m ahead of the ego origin and 1.5 m up, looking forward: camera x = ego -y, y = ego -z, z = ego x.
FRONT_TO_EGO = np.array([[0.0, 0.0, 1.0, 1.5], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.5], [0.0, 0.0, 0.0, 1.0]])
INTRINSICS = np.array([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])  # for 200 x 100 images
STRAIGHT = np.stack([2.5 * np.arange(1, 7), np.zeros(6)], axis=-1)


def test_top_classes_take_the_highest_occupied_voxel():
    semantics = np.full((3, 2, 4), OCC_FREE_CLASS, dtype=np.uint8)
    semantics[0, 0, 0] = ROAD
    semantics[0, 0, 2] = CAR  # car above road -> car
    semantics[1, 1, 0] = ROAD
    visible = np.ones_like(semantics, dtype=bool)
    visible[0, 0, 2] = False  # the car voxel hidden -> road shows
    assert occupancy_top_classes(semantics).tolist() == [
        [CAR, OCC_FREE_CLASS],
        [OCC_FREE_CLASS, ROAD],
        [OCC_FREE_CLASS] * 2,
    ]
    assert occupancy_top_classes(semantics, visible)[0, 0] == ROAD


def test_categories_map_to_occ3d_classes():
    assert category_class_id("vehicle.car") == CAR
    assert category_class_id("human.pedestrian.child") == OCC_CLASS_NAMES.index("pedestrian")
    assert category_class_id("traffic_cone") == OCC_CLASS_NAMES.index("traffic_cone")
    assert category_class_id("animal") == OCC_CLASS_NAMES.index("others")


def test_ground_points_project_through_extrinsics_and_intrinsics():
    # (11.5, 0, 0) is 10 m in front of the camera and 1.5 m below it: u = 100, v = 50 + 100 * 1.5 / 10 = 65;
    # 2 m to the left moves it 100 * 2 / 10 = 20 px left; the ego origin is behind the camera.
    pixels, depth = project_to_image(
        np.array([[11.5, 0.0, 0.0], [11.5, 2.0, 0.0], [0.0, 0.0, 0.0]]), INTRINSICS, FRONT_TO_EGO
    )
    np.testing.assert_allclose(pixels[:2], [[100.0, 65.0], [80.0, 65.0]])
    np.testing.assert_allclose(depth, [10.0, 10.0, -1.5])


def test_bev_png_has_requested_size_and_marks_collisions(tmp_path):
    semantics = np.full((200, 200, 16), OCC_FREE_CLASS, dtype=np.uint8)
    semantics[:, 90:110, 0] = ROAD
    boxes = [np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])] * 7
    figure = plot_bev(
        pred_trajectory=STRAIGHT,
        gt_trajectory=STRAIGHT + [0.0, 3.5],
        trajectory_mask=np.array([1, 1, 1, 1, 1, 0], dtype=bool),
        collisions=np.array([0, 0, 0, 1, 1, 1], dtype=bool),
        semantics=semantics,
        agent_boxes=boxes,
        agent_categories=[["vehicle.car"]] * 7,
        figsize_in=(4.0, 3.0),
        dpi=50,
    )
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert {"predicted", "ground truth", "collision", "ego", "car", "driveable_surface"} <= set(labels)
    path = save_png(figure, tmp_path / "nested" / "bev.png")
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", (200, 150))


def test_mosaic_png_has_requested_size_and_trajectory_only_in_front_camera(tmp_path):
    images = [np.zeros((100, 200, 3), dtype=np.uint8) for _ in CAMERA_NAMES]
    extrinsics = np.stack([FRONT_TO_EGO] * len(CAMERA_NAMES))
    left_of_centre = STRAIGHT + [0.0, 2.0]  # projects left of the image centre, away from the legend (lower right)
    figure = plot_camera_mosaic(
        images,
        camera_intrinsics=np.stack([INTRINSICS] * len(CAMERA_NAMES)),
        camera_to_ego=extrinsics,
        pred_trajectory=left_of_centre,
        figsize_in=(6.0, 2.0),
        dpi=50,
    )
    with Image.open(save_png(figure, tmp_path / "cameras.png")) as image:
        assert (image.format, image.size) == ("PNG", (300, 100))
        pixels = np.asarray(image.convert("RGB")).astype(int)
    blue = (pixels[..., 2] > 100) & (pixels[..., 2] > pixels[..., 0] + 60)  # the predicted line's colour
    # 2 x 3 cells of 100 x 50 px; CAM_FRONT is the top middle cell; its left half holds the projected line.
    assert blue[:50, 100:150].any()
    blue[:50, 100:200] = False
    assert not blue.any()


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="images"):
        plot_camera_mosaic(
            [np.zeros((10, 10, 3))] * 5, camera_intrinsics=np.zeros((6, 3, 3)), camera_to_ego=np.zeros((6, 4, 4))
        )
    with pytest.raises(ValueError, match="agent_boxes"):
        plot_bev(agent_boxes=[np.zeros((0, 7))] * 6)
    with pytest.raises(ValueError, match="pred_trajectory"):
        plot_bev(pred_trajectory=np.zeros((5, 2)))
