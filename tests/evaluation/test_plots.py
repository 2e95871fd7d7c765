"""Pictures: top-down occupancy, camera projection, time colours, the plan's title, and PNGs of the requested pixel
size."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.patches import Polygon
from PIL import Image

from occvla_hf.constants import (
    CAMERA_NAMES,
    OCC_CLASS_COLORS_RGB,
    OCC_CLASS_NAMES,
    OCC_FREE_CLASS,
    PLANNING_PROTOCOL_NAMES,
    WAYPOINT_STEP_S,
)
from occvla_hf.evaluation.planning import COLLISION_CHECKS, PROTOCOLS, evaluate_planning_sample, horizon_values
from occvla_hf.evaluation.plots import (
    STEP_TIMES_S,
    TIME_COLORS,
    category_class_id,
    occupancy_top_classes,
    plot_bev,
    plot_camera_mosaic,
    plot_plan_bev,
    project_to_image,
    save_png,
)
from occvla_hf.evaluation.runner import row_agents

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
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
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


def truck_row(speed_m_per_step: float) -> dict:
    """A planning row: the ego drives 2.5 m per step straight ahead (the last step unknown); a truck (instance "a",
    known at every step, 6 m x 2.5 m) 5.5 m to its left and 12.5 m ahead at t = 0 drives on at `speed_m_per_step`."""
    truck = [np.array([[12.5 + speed_m_per_step * t, 5.5, 0.0, 6.0, 2.5, 3.0, 0.0]]) for t in range(7)]
    return {
        "sample_token": "0123456789abcdef",
        "meta_action": "keep, straight",
        "trajectory": STRAIGHT,
        "trajectory_mask": np.array([1, 1, 1, 1, 1, 0], dtype=bool),
        "agent_boxes": [boxes.tolist() for boxes in truck],
        "agent_categories": [["vehicle.truck"]] * 7,
        "agent_instances": [["a"]] * 7,
    }


def test_bev_colours_waypoints_and_future_boxes_by_time_step():
    row = truck_row(speed_m_per_step=3.0)
    figure = plot_bev(
        pred_trajectory=STRAIGHT,
        gt_trajectory=STRAIGHT,
        trajectory_mask=row["trajectory_mask"],
        agent_boxes=[np.asarray(boxes) for boxes in row["agent_boxes"]],
        agent_categories=row["agent_categories"],
    )
    ax, time_bar = figure.axes  # the view and the colour bar of the time steps
    np.testing.assert_allclose(time_bar.get_yticks(), STEP_TIMES_S)
    boxes = [patch for patch in ax.patches if isinstance(patch, Polygon)]
    assert len(boxes) == 7
    truck = np.array(OCC_CLASS_COLORS_RGB[OCC_CLASS_NAMES.index("truck")]) / 255.0
    np.testing.assert_allclose(boxes[0].get_facecolor()[:3], truck)  # t = 0: filled with its class colour
    for t, box in enumerate(boxes[1:], start=1):  # later: outlines in the colour of their step
        assert box.get_facecolor()[3] == 0.0
        np.testing.assert_allclose(box.get_edgecolor(), TIME_COLORS(t))
    # Waypoint markers: the ground truth's 5 valid steps, then the prediction's 6, each in its step's colour.
    gt_markers, pred_markers = (collection.get_facecolors() for collection in ax.collections)
    np.testing.assert_allclose(gt_markers, TIME_COLORS(np.arange(1, 6)))
    np.testing.assert_allclose(pred_markers, TIME_COLORS(np.arange(1, 7)))
    labels = {text.get_text() for text in figure.legends[0].get_texts()}
    assert {"agents at 0 s (class colour)", "agents at 0.5-3 s (time)", "truck"} <= labels


@pytest.mark.parametrize("occupancy", [None, "grid", "grid inside a mask"])
def test_plan_bev_title_holds_l2_at_1_2_3_s_and_the_collisions(occupancy):
    row = truck_row(speed_m_per_step=0.0)  # parked
    pred = STRAIGHT + np.stack([np.zeros(6), np.arange(1, 7)], axis=-1)  # drifts 1 m left per step into the truck
    result = evaluate_planning_sample(pred, row["trajectory"], row["trajectory_mask"], **row_agents(row))
    semantics = visible = None
    if occupancy is not None:
        semantics = np.full((200, 200, 16), OCC_FREE_CLASS, dtype=np.uint8)
        semantics[:, 90:110, 0] = ROAD
        visible = np.ones(semantics.shape, dtype=bool) if occupancy == "grid inside a mask" else None
    figure = plot_plan_bev(row, pred, result, "keep, left turn", semantics=semantics, visible_mask=visible)
    ax = figure.axes[0]
    assert len(ax.images) == (occupancy is not None)
    title = ax.get_title()
    assert title.splitlines()[0] == "01234567  pred: keep, left turn  gt: keep, straight"
    # The numbers come from the metric functions: the waypoint L2 at each horizon (UniAD's reading of the step) and
    # the steps counted as collisions (BEV check) per protocol; by hand: L2 = t m at step t, 3 s unknown, and the
    # ego box (4.08 m x 1.85 m, 0.5 m ahead of the waypoint) meets the truck (x 9.5 .. 15.5 m, y 4.25 .. 6.75 m) at
    # step 4 (2 s: waypoint x 10 m, y 4 m) and step 5; in UniAD's mirrored grid the footprint reaches 1 m to the left of
    # the waypoint (`evaluation.planning`), so there it also meets it at step 3 (1.5 s: y 3 m); the ground truth
    # (y = 0) never does.
    l2_m = horizon_values(np.where(result.valid, result.l2_m, np.nan), "uniad")
    assert l2_m[:2] == pytest.approx([2.0, 4.0]) and np.isnan(l2_m[2])
    assert f"L2 @1/2/3 s: {l2_m[0]:.2f} / {l2_m[1]:.2f} / - m" in title
    bev = COLLISION_CHECKS.index("bev")
    expected_steps = {"stp3": [3, 4], "uniad": [2, 3, 4]}  # 3 s is not a valid step
    for p, protocol in enumerate(PROTOCOLS):
        steps = np.flatnonzero(result.collision[p, bev])
        assert steps.tolist() == expected_steps[protocol]
        times = ", ".join(f"{WAYPOINT_STEP_S * (t + 1):g} s" for t in steps)
        assert f"{PLANNING_PROTOCOL_NAMES[protocol]} {times}" in title
    assert title.endswith("collision: ST-P3 2 s, 2.5 s; UniAD 1.5 s, 2 s, 2.5 s")
    (markers,) = [line for line in ax.lines if line.get_label() == "collision"]  # the steps of either protocol
    np.testing.assert_allclose(markers.get_ydata(), pred[[2, 3, 4], 0])
