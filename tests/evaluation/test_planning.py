"""Planning metrics on hand-made scenes whose numbers are worked out by hand in the comments."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from occvla_hf.class_labels import label_id
from occvla_hf.evaluation.planning import (
    PlanningMetricAccumulator,
    bev_box_collisions,
    ego_footprint_cells,
    evaluate_planning_sample,
    format_planning_table,
    horizon_values,
    oriented_box_collisions,
    protocol_agent_mask,
    rasterize_agent_steps,
    rasterize_boxes,
    trajectory_headings,
)

STEPS = np.arange(1, 7)
ALL_VALID = np.ones(6, dtype=bool)
NO_AGENTS = [np.zeros((0, 7))] * 6


def box(x: float, y: float, length: float, width: float, yaw: float = 0.0) -> np.ndarray:
    """One agent box row (x, y, z, length, width, height, yaw)."""
    return np.array([[x, y, 0.0, length, width, 1.5, yaw]])


def straight(speed_mps: float, lateral_m: float = 0.0) -> np.ndarray:
    """Six waypoints of constant speed along x at a fixed lateral offset."""
    return np.stack([STEPS * 0.5 * speed_mps, np.full(6, lateral_m)], axis=-1)


# A parked car centred 13 m ahead (x in [11, 15], y in [-1, 1]): rasterised rows 122..130, columns 98..102.
# The ego at 5 m/s is at x = 7.5 m after 1.5 s (footprint rows 112..119: free) and at 10 m after 2 s (rows 117..124).
PARKED_CAR = [box(13.0, 0.0, 4.0, 2.0)] * 6


def run(pred, gt, mask, agents, categories=None, meta_actions=None) -> dict:
    accumulator = PlanningMetricAccumulator()
    accumulator.update(pred, gt, mask, agents, categories, meta_actions)
    return accumulator.compute()


def test_ego_footprint_is_the_published_32_cells():
    cells = ego_footprint_cells()
    assert cells.shape == (32, 2)
    assert set(map(tuple, cells)) == {(r, c) for r in range(97, 105) for c in range(98, 102)}


def test_boxes_fill_cells_of_each_protocols_handedness():
    # A 1 m box at x = 10, y = 5: rows round((9.5..10.5 + 50) / 0.5) = 119..121; ST-P3 columns follow +y
    # (109..111), UniAD columns follow -y (89..91).
    agent = box(10.0, 5.0, 1.0, 1.0)
    stp3 = np.argwhere(rasterize_boxes(agent, "stp3"))
    uniad = np.argwhere(rasterize_boxes(agent, "uniad"))
    assert set(map(tuple, stp3)) == {(r, c) for r in range(119, 122) for c in range(109, 112)}
    assert set(map(tuple, uniad)) == {(r, c) for r in range(119, 122) for c in range(89, 92)}


def test_rotated_box_footprint_follows_its_yaw():
    # 4 m x 2 m turned by 90 degrees: x in [-1, 1] -> rows 98..102, y in [-2, 2] -> columns 96..104.
    cells = np.argwhere(rasterize_boxes(box(0.0, 0.0, 4.0, 2.0, yaw=math.pi / 2), "stp3"))
    assert (cells[:, 0].min(), cells[:, 0].max(), cells[:, 1].min(), cells[:, 1].max()) == (98, 102, 96, 104)


def test_straight_trajectory_through_box_collides_at_2s_and_3s_not_1s():
    pred = straight(5.0)
    gt = straight(5.0, lateral_m=3.5)  # the other lane: columns 105..108, clear of the car's 98..102
    result = evaluate_planning_sample(pred, gt, ALL_VALID, PARKED_CAR)
    # [protocol, check, step]: both protocols, both checks collide at steps 4..6 (2.0 s .. 3.0 s) only.
    np.testing.assert_array_equal(result.collision, np.broadcast_to([0, 0, 0, 1, 1, 1], (2, 2, 6)))
    assert not result.gt_collision.any()

    report = run(pred[None], gt[None], ALL_VALID[None], [PARKED_CAR])
    # UniAD reads the step: 0, 100, 100 %, avg 66.67; ST-P3 averages up to the step: 0/2, 1/4, 3/6 -> 0, 25, 50 %.
    uniad, stp3 = report["uniad"], report["stp3"]
    assert [uniad[f"collision_{h}_pct"] for h in ("1s", "2s", "3s")] == [0.0, 100.0, 100.0]
    assert uniad["collision_avg_pct"] == pytest.approx(200.0 / 3)
    assert [stp3[f"collision_{h}_pct"] for h in ("1s", "2s", "3s", "avg")] == [0.0, 25.0, 50.0, 25.0]
    assert stp3["l2_1s_m"] == stp3["l2_3s_m"] == uniad["l2_avg_m"] == pytest.approx(3.5)


def test_offset_trajectories_give_exact_l2_and_protocols_differ():
    gt = straight(5.0)
    growing = gt + np.stack([np.zeros(6), 0.1 * STEPS], axis=-1)  # errors 0.1 .. 0.6 m
    constant = gt + np.array([0.3, 0.4])  # a 3-4-5 triangle: 0.5 m at every step
    report = run(np.stack([growing, constant]), np.stack([gt, gt]), np.ones((2, 6), bool), [NO_AGENTS] * 2)
    # Per-step means: 0.30, 0.35, 0.40, 0.45, 0.50, 0.55.
    assert report["per_step"]["l2_m"] == pytest.approx([0.30, 0.35, 0.40, 0.45, 0.50, 0.55])
    uniad = [report["uniad"][f"l2_{h}_m"] for h in ("1s", "2s", "3s", "avg")]
    stp3 = [report["stp3"][f"l2_{h}_m"] for h in ("1s", "2s", "3s", "avg")]
    assert uniad == pytest.approx([0.35, 0.45, 0.55, 0.45])
    assert stp3 == pytest.approx([0.325, 0.375, 0.425, 0.375])
    # Along x (ahead / behind): 0 and 0.3 m; along y (beside): 0.1 .. 0.6 and 0.4 m.
    assert report["per_step"]["longitudinal_abs_m"] == pytest.approx([0.15] * 6)
    assert report["per_step"]["lateral_abs_m"] == pytest.approx([0.25, 0.3, 0.35, 0.4, 0.45, 0.5])


def test_steps_where_ground_truth_collides_are_not_counted():
    pred = straight(5.0)  # hits the parked car at steps 4, 5, 6
    gt = np.stack([[2.5, 5.0, 7.5, 7.5, 10.0, 12.5], np.zeros(6)], axis=-1)  # waits, then hits it at steps 5, 6
    free_sample = (straight(5.0), straight(5.0), NO_AGENTS)
    report = run(
        np.stack([pred, free_sample[0]]), np.stack([gt, free_sample[1]]), np.ones((2, 6), bool), [PARKED_CAR, NO_AGENTS]
    )
    # Only step 4 counts for the first sample; the denominator stays 2 samples.
    assert report["per_step"]["uniad"]["collision_pct"] == [0.0, 0.0, 0.0, 50.0, 0.0, 0.0]
    assert report["per_step"]["stp3"]["gt_collision_pct"] == [0.0, 0.0, 0.0, 0.0, 50.0, 50.0]
    assert [report["uniad"][f"collision_{h}_pct"] for h in ("1s", "2s", "3s")] == [0.0, 50.0, 0.0]
    assert [report["stp3"][f"collision_{h}_pct"] for h in ("1s", "2s", "3s")] == pytest.approx([0.0, 12.5, 50.0 / 6])


def test_masked_steps_are_left_out_of_l2_and_collisions():
    gt = straight(5.0)
    mask_b = np.array([True, True, False, False, False, False])
    pred_a = gt + np.array([1.0, 0.0])  # 1 m at every step
    pred_b = gt + np.array([0.0, 3.0])  # 3 m where valid
    pred_b[2:] = gt[2:] + np.array([0.0, 10.0])  # 10 m off where the ground truth does not exist...
    agents_b = [np.zeros((0, 7))] * 2 + [box(*pred_b[t], 4.0, 2.0) for t in range(2, 6)]  # ...and in a car
    report = run(np.stack([pred_a, pred_b]), np.stack([gt, gt]), np.stack([ALL_VALID, mask_b]), [NO_AGENTS, agents_b])
    assert report["per_step"]["num_valid"] == [2, 2, 1, 1, 1, 1]
    assert report["per_step"]["l2_m"] == pytest.approx([2.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    assert report["per_step"]["longitudinal_abs_m"] == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert report["per_step"]["lateral_abs_m"] == pytest.approx([1.5, 1.5, 0.0, 0.0, 0.0, 0.0])  # not the 10 m
    assert [report["uniad"][f"l2_{h}_m"] for h in ("1s", "2s", "3s")] == pytest.approx([2.0, 1.0, 1.0])
    assert [report["stp3"][f"l2_{h}_m"] for h in ("1s", "2s", "3s")] == pytest.approx([2.0, 1.5, 8.0 / 6])
    assert report["per_step"]["stp3"]["collision_pct"] == [0.0] * 6  # sample b collides only at masked steps


def test_grids_are_mirrored_so_the_published_footprint_leans_to_opposite_sides():
    # Footprint columns 98..101 around centre column 100 reach 1 m to the -lateral side. A thin box at y = +1.0 m
    # (y in [0.95, 1.05], clear of the 0.925 m half width) lands in column 102 for ST-P3 and 98 for UniAD.
    parked = np.zeros((1, 2))
    for y, stp3_hits, uniad_hits in ((1.0, False, True), (-1.0, True, False)):
        agent = [box(0.5, y, 2.0, 0.1)]
        assert bev_box_collisions(parked, rasterize_agent_steps(agent, "stp3"), "stp3")[0] == stp3_hits
        assert bev_box_collisions(parked, rasterize_agent_steps(agent, "uniad"), "uniad")[0] == uniad_hits
        assert not oriented_box_collisions(parked, agent)[0]


def test_positions_beyond_the_grid_are_clipped_to_the_border_as_published():
    far = np.array([[60.0, 0.0]])  # 120 cells ahead: rows clip to 199
    border_agent = [box(49.6, 0.0, 0.5, 1.0)]  # rows 199..200 -> 199 inside the grid
    assert bev_box_collisions(far, rasterize_agent_steps(border_agent, "uniad"), "uniad")[0]
    assert not oriented_box_collisions(far, border_agent)[0]


def test_oriented_check_turns_the_ego_box_with_the_heading():
    # Ego driving along +y; at step 2 it is at (0, 5) heading +90 deg: oriented box x in [-0.925, 0.925],
    # y in [3.458, 7.542]; the published axis-aligned box is x in [-1.542, 2.542], y in [4.075, 5.925].
    trajectory = np.stack([np.zeros(6), 2.5 * STEPS], axis=-1)
    beside = box(2.0, 5.0, 1.0, 1.0)  # inside the axis-aligned box only
    ahead = box(0.0, 7.0, 1.0, 1.0)  # inside the turned box only
    for agent, bev_hit, oriented_hit in ((beside, True, False), (ahead, False, True)):
        agents = [np.zeros((0, 7)), agent] + [np.zeros((0, 7))] * 4
        assert bev_box_collisions(trajectory, rasterize_agent_steps(agents, "stp3"), "stp3")[1] == bev_hit
        assert oriented_box_collisions(trajectory, agents)[1] == oriented_hit


def test_headings_keep_previous_direction_while_stopped():
    trajectory = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(trajectory_headings(trajectory), [0, 0, math.pi / 2, math.pi / 2, math.pi, math.pi])


def test_each_protocol_keeps_its_obstacle_classes():
    categories = [
        "vehicle.car",
        "human.pedestrian.adult",
        "vehicle.emergency.police",
        "movable_object.barrier",
        "human.pedestrian.stroller",
        "pedestrian",
        "truck",
        "traffic_cone",
    ]
    assert protocol_agent_mask(categories, "stp3").tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    assert protocol_agent_mask(categories, "uniad").tolist() == [1, 0, 0, 0, 0, 0, 1, 0]
    ids = np.array([label_id("agent_categories", name) for name in categories[:5]])  # a built dataset's class ids
    assert protocol_agent_mask(ids, "stp3").tolist() == [1, 1, 1, 0, 1]
    assert protocol_agent_mask(ids, "uniad").tolist() == [1, 0, 0, 0, 0]


def test_pedestrian_counts_for_stp3_but_not_uniad():
    pred, gt = straight(5.0), straight(5.0, lateral_m=3.5)
    report = run(pred[None], gt[None], ALL_VALID[None], [PARKED_CAR], [[["human.pedestrian.adult"]] * 6])
    assert report["stp3"]["collision_3s_pct"] == 50.0
    assert report["uniad"]["collision_3s_pct"] == 0.0


def test_batches_accumulate_then_divide_and_split_by_meta_action():
    gt = np.stack([straight(5.0)] * 3)
    pred = gt + np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 6.0]])[:, None, :]  # 1, 2, 6 m errors
    masks = np.ones((3, 6), bool)
    actions = ["keep, straight", "keep, straight", "stop, straight"]
    split = PlanningMetricAccumulator()
    split.update(pred[:1], gt[:1], masks[:1], [NO_AGENTS], meta_actions=actions[:1])
    split.update(pred[1:], gt[1:], masks[1:], [NO_AGENTS] * 2, meta_actions=actions[1:])
    report = split.compute()
    assert report == run(pred, gt, masks, [NO_AGENTS] * 3, meta_actions=actions)
    assert report["num_samples"] == 3
    assert report["uniad"]["l2_3s_m"] == pytest.approx(3.0)  # (1 + 2 + 6) / 3, not a mean of batch means (3.5)
    by_action = report["by_meta_action"]
    assert list(by_action) == ["keep, straight", "stop, straight"]
    assert by_action["keep, straight"]["num_samples"] == 2
    assert by_action["keep, straight"]["stp3"]["l2_avg_m"] == pytest.approx(1.5)
    assert by_action["stop, straight"]["uniad"]["l2_1s_m"] == pytest.approx(6.0)
    ids = [label_id("meta_action", action) for action in actions]  # a built dataset's class ids: the same report
    assert run(pred, gt, masks, [NO_AGENTS] * 3, meta_actions=ids) == report


def test_horizon_values_skip_steps_without_samples():
    per_step = np.array([1.0, np.nan, 3.0, 4.0, np.nan, np.nan])
    assert horizon_values(per_step, "stp3")[:2] == [1.0, pytest.approx(8.0 / 3)]
    assert math.isnan(horizon_values(per_step, "uniad")[0]) and math.isnan(horizon_values(per_step, "uniad")[2])


def test_table_has_paper_layout():
    row = {"l2_1s_m": 0.3, "l2_2s_m": 0.6, "l2_3s_m": 0.9, "l2_avg_m": 0.6, "collision_1s_pct": 0.05}
    lines = format_planning_table({"OccVLA": row, "UniAD": {}}, title="ST-P3 protocol").splitlines()
    assert lines[0] == "ST-P3 protocol"
    assert "L2 (m)" in lines[1] and "Collision (%)" in lines[1]
    assert lines[2].split() == ["Method", "|", "1s", "2s", "3s", "Avg.", "|", "1s", "2s", "3s", "Avg."]
    assert lines[4].split() == ["OccVLA", "|", "0.30", "0.60", "0.90", "0.60", "|", "0.05", "-", "-", "-"]
    assert lines[5].split()[0] == "UniAD"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pred": np.zeros((5, 2))}, "pred/gt"),
        ({"mask": np.ones(6)}, "trajectory_mask"),
        ({"agent_boxes": [np.zeros((1, 6))] * 6}, "agent_boxes[0]"),
        ({"agent_boxes": NO_AGENTS[:5]}, "agent_boxes"),
        ({"agent_categories": [["vehicle.car"]] * 6}, "agent_categories"),
    ],
)
def test_bad_inputs_name_the_field(kwargs, field):
    inputs = {"pred": np.zeros((6, 2)), "gt": np.zeros((6, 2)), "mask": ALL_VALID, "agent_boxes": NO_AGENTS} | kwargs
    with pytest.raises(ValueError, match=re.escape(field)):
        evaluate_planning_sample(**inputs)


# A truck (x in [8, 18]: rows round((x + 50) / 0.5) = 116..136) towing a trailer (x in [10.5, 25]: rows 121..150),
# both 3 m wide on the centre line (columns 97..103). The ego at 5 m/s covers footprint rows int(x / 0.5) + 97..104
# and columns 98..101: step 2 (x = 5) rows 107..114 is free (its exact box ends at x = 7.54); steps 3 and 4 reach the
# truck alone; steps 5 (rows 122..129) and 6 (127..134) lie inside the overlap, off both boxes' outlines.
TRUCK_AND_TRAILER = [np.concatenate([box(13.0, 0.0, 10.0, 3.0), box(17.75, 0.0, 14.5, 3.0)])] * 6


def test_overlapping_boxes_fill_their_union_as_the_references_do():
    """UniAD `occflow_label.py::GenerateOccFlowLabels`, ST-P3 `NuscenesData.py::get_birds_eye_view_label` and VAD
    `metric_stp3.py` call `cv2.fillPoly` once per box: a cell covered by two boxes is occupied. One call with all
    polygons fills with the even-odd rule and leaves the overlap free (collisions [0,0,1,1,0,0] here)."""
    pred, gt = straight(5.0), straight(5.0, lateral_m=3.5)
    result = evaluate_planning_sample(pred, gt, ALL_VALID, TRUCK_AND_TRAILER)
    np.testing.assert_array_equal(result.collision, np.broadcast_to([0, 0, 1, 1, 1, 1], (2, 2, 6)))


@pytest.mark.parametrize("protocol", ["stp3", "uniad"])
@pytest.mark.parametrize(
    "boxes",
    [
        np.concatenate([box(13.0, 0.0, 4.0, 2.0), box(14.0, 0.5, 4.0, 2.0)]),  # two overlapping
        np.concatenate([box(13.0, 0.0, 4.0, 2.0), box(14.0, 0.5, 4.0, 2.0), box(13.5, -0.5, 2.0, 3.0, 0.4)]),
        np.concatenate([box(13.0, 0.0, 4.0, 2.0), box(13.0, 0.0, 1.0, 1.0)]),  # a box inside another
    ],
    ids=["two", "three", "nested"],
)
def test_raster_of_several_boxes_is_the_union_of_each(boxes, protocol):
    union = np.logical_or.reduce([rasterize_boxes(b[None], protocol) for b in boxes])
    np.testing.assert_array_equal(rasterize_boxes(boxes, protocol), union)


def test_nested_box_leaves_the_outer_box_whole():
    # The parked car alone fills rows 122..130 x columns 98..102 (45 cells); a 1 m box at its centre adds nothing.
    cells = np.argwhere(rasterize_boxes(np.concatenate([PARKED_CAR[0], box(13.0, 0.0, 1.0, 1.0)]), "stp3"))
    assert set(map(tuple, cells)) == {(r, c) for r in range(122, 131) for c in range(98, 103)}


def test_uniad_counts_agents_that_appear_later_stp3_follows_the_current_ones():
    """UniAD `nuscenes_e2e_dataset.py` rasterises every annotation of each future keyframe; ST-P3
    `NuscenesData.py::get_birds_eye_view_label(in_pred=True)` skips instances not registered at the present frame."""
    pred, gt = straight(5.0), straight(5.0, lateral_m=3.5)
    # The parked car is annotated only from step 4 on (it came into range): instance "new", not present at t = 0.
    boxes = [np.zeros((0, 7))] * 3 + PARKED_CAR[3:]
    categories = [[]] * 3 + [["vehicle.car"]] * 3
    instances = [[]] * 3 + [["new"]] * 3
    result = evaluate_planning_sample(pred, gt, ALL_VALID, boxes, categories, instances, {"ego-lane-car"})
    np.testing.assert_array_equal(result.collision[:, 0], [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]])
    # Once present at t = 0, ST-P3 follows it too.
    result = evaluate_planning_sample(pred, gt, ALL_VALID, boxes, categories, instances, {"new"})
    np.testing.assert_array_equal(result.collision[:, 0], [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]])


def test_stp3_counts_emergency_vehicles_and_strollers_uniad_does_not():
    """ST-P3 `get_birds_eye_view_label` matches "vehicle"/"human" in the full category name; UniAD's vehicle ids
    come from the detection classes, which have no emergency vehicle or stroller."""
    pred, gt = straight(5.0), straight(5.0, lateral_m=3.5)
    for category in ("vehicle.emergency.police", "human.pedestrian.stroller"):
        result = evaluate_planning_sample(pred, gt, ALL_VALID, PARKED_CAR, [[category]] * 6)
        np.testing.assert_array_equal(result.collision[:, 0], [[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]])


def test_all_samples_normalization_reproduces_uniads_division_by_total():
    """UniAD `planning_metrics.py::PlanningMetric.compute` divides L2 (masked steps count as 0) and collisions
    (masked steps never counted) by `total`, the number of samples; the default divides by valid steps."""
    gt = np.stack([straight(5.0, lateral_m=3.5)] * 2)  # the other lane, clear of the parked car
    pred = np.stack([straight(5.0), straight(5.0, lateral_m=4.5)])  # 3.5 m off (through the car), 1 m off
    masks = np.array([[True] * 6, [True, True, False, False, False, False]])
    agents = [PARKED_CAR, PARKED_CAR]  # sample 0 hits the car at steps 4..6
    valid = run(pred, gt, masks, agents)
    total = PlanningMetricAccumulator(normalization="all_samples")
    total.update(pred, gt, masks, agents)
    total = total.compute()
    assert valid["per_step"]["l2_m"] == pytest.approx([2.25, 2.25, 3.5, 3.5, 3.5, 3.5])
    assert total["per_step"]["l2_m"] == pytest.approx([2.25, 2.25, 1.75, 1.75, 1.75, 1.75])
    assert valid["uniad"]["collision_3s_pct"] == 100.0 and total["uniad"]["collision_3s_pct"] == 50.0
    assert total["normalization"] == "all_samples"
    with pytest.raises(ValueError, match="normalization"):
        PlanningMetricAccumulator(normalization="valid")


def test_empty_agents_and_bad_values_are_defined():
    pred, gt = straight(5.0), straight(5.0)
    assert not evaluate_planning_sample(pred, gt, ALL_VALID, [[]] * 6).collision.any()
    nan_box = box(13.0, 0.0, 4.0, 2.0)
    nan_box[0, 6] = np.nan
    with pytest.raises(ValueError, match=re.escape("agent_boxes[2]: boxes must be finite")):
        evaluate_planning_sample(pred, gt, ALL_VALID, [np.zeros((0, 7))] * 2 + [nan_box] * 4)
    with pytest.raises(ValueError, match="pred/gt"):
        evaluate_planning_sample(np.full((6, 2), np.inf), gt, ALL_VALID, NO_AGENTS)
    with pytest.raises(ValueError, match="protocol"):
        rasterize_boxes(nan_box[:, :7] * 0, "vad")
    with pytest.raises(ValueError, match="agent_instances/current_instances"):
        evaluate_planning_sample(pred, gt, ALL_VALID, NO_AGENTS, agent_instances=[[]] * 6)
