"""Open-loop planning metrics as papers report them: L2 error and collision rate, ST-P3 and UniAD protocols.

Both protocols score the same per-step quantities; they differ in how a horizon is read, in the obstacle set and in
the handedness of the BEV grid. Everything here follows the published code, read at these paths:

* `ego_footprint_cells`, `rasterize_boxes`, `bev_box_collisions` follow `PlanningMetric.evaluate_single_coll` in
  OpenDriveLab/UniAD `projects/mmdet3d_plugin/uniad/dense_heads/planning_head_plugin/planning_metrics.py`, identical
  to OpenDriveLab/ST-P3 `stp3/metrics.py`: a 200 x 200 grid of 0.5 m cells over +-50 m; the ego box 4.084 m x 1.85 m
  with its centre 0.5 m ahead of the trajectory point, NOT rotated by the heading, as the fixed set of grid cells that
  `skimage.draw.polygon` fills (`ego_footprint_cells`: 8 x 4 = 32 cells), shifted by `int(position / 0.5)` and clipped
  to the grid border; a step collides when any of those cells is occupied. Agent boxes are rasterised as in ST-P3
  `stp3/datas/NuscenesData.py::_get_poly_region_in_image` and UniAD
  `projects/mmdet3d_plugin/datasets/pipelines/occflow_label.py::GenerateOccFlowLabels`: footprint corners mapped to
  cells with `np.round((p + 50) / 0.5)` and filled with `cv2.fillPoly`.
* `evaluate_planning_sample` follows `PlanningMetric.evaluate_coll` / `compute_L2` of both files: a predicted step
  counts as a collision only where the ground-truth trajectory does not itself collide at that step (same check),
  while the denominator stays the number of samples (`obj_box_col / total`, the "Col. Rate" of the papers, UniAD
  issue #103).
* `horizon_values` follows the reading of the per-step values: UniAD reads step t itself (`value[i]`), ST-P3 averages
  the steps up to t (ST-P3 `evaluate.py` feeds the first 2/4/6 steps to one metric per horizon and reports `.mean()`;
  UniAD `projects/mmdet3d_plugin/datasets/nuscenes_e2e_dataset.py` reproduces it as `value[: i + 1].mean()` under
  `planning_evaluation_strategy="stp3"`, UniAD issue #166 / PR #173; hustvl/VAD issues #33, #47). "Avg." is the mean
  of the 1 s, 2 s and 3 s values (UniAD issue #103).
* Agent sets (`protocol_obstacles`): UniAD rasterises every annotation of each future keyframe, agents that
  appear after the current one included (`nuscenes_e2e_dataset.py` builds the future occupancy from each future
  sample's own annotations); ST-P3 follows the instances of the present frames (`NuscenesData.py::
  get_birds_eye_view_label` skips, with `in_pred=True`, instances missing from its `instance_map`). The planning
  rows therefore keep every annotation of every future keyframe with its instance token.
* `protocol_agent_mask`: UniAD counts vehicles only (`GenerateOccFlowLabels(only_vehicle=True)` in
  `projects/configs/stage2_e2e/base_e2e.py`: car, truck, construction vehicle, bus, trailer, motorcycle, bicycle);
  ST-P3 counts every category whose nuScenes name contains "vehicle" or "human" (`get_birds_eye_view_label`, the
  occupancy being `logical_or(vehicles, pedestrians)` in `evaluate.py`), so also `vehicle.emergency.*` and
  `human.pedestrian.{personal_mobility,stroller,wheelchair}`, which have no detection name (the rows keep the full
  category); PointsCoder/GPT-Driver issue #6 lists these differences.

Coordinates. Our ego frame is x forward, y left. Both published codes index the grid as
`[row = forward cell, column = lateral cell]`, but UniAD works in the LiDAR frame (x right, y forward: its boxes fill
`(x_right, y_forward)` cells and the two sign flips in its `update` and `evaluate_coll` cancel), so its lateral axis
points right, while ST-P3 fills `(x_forward, y_left)` ego cells and negates the LiDAR x of its trajectories, so its
lateral axis points left. The grids are mirror images. Because the ego footprint cells and the `int()` truncation are
not symmetric about the centre line, the same scene can collide under one protocol and not under the other (the
footprint reaches 1.0 m to the right of the centre in ST-P3's grid and 1.0 m to the left in UniAD's); we keep each
protocol's handedness (`PROTOCOL_LATERAL_SIGN`) so the numbers match the published ones.

Deviations. (1) By default (`normalization="valid_steps"`) steps with `trajectory_mask` False are left out of
numerator and denominator of every per-step value, L2 and collisions alike; UniAD multiplies the L2 by the mask but
still divides by the number of samples (masked steps count as zero error, and as ground-truth collisions that are
never counted), which `normalization="all_samples"` reproduces exactly; ST-P3 drops samples without a full future.
With every step valid the numbers are identical. (2) The
ST-P3 horizon value is the mean of the per-step values, each divided by its own count of valid steps (identical to
ST-P3 when all steps are valid). (3) Trajectories and boxes share one ego frame; ST-P3 mixes the LiDAR frame
(trajectories) with the LiDAR ego-pose frame (boxes), about 1 m apart. (4) No visibility filter (UniAD runs with `filter_invisible=False`;
ST-P3 drops vehicles with visibility 0-40 % at the present frames), and ST-P3's present frames are the current
keyframe only (its receptive field also registers the instances of the two previous keyframes). (5) Footprint corners are computed in float64 (the published code: float32), which
can only move a corner lying within float32 rounding of a half-cell boundary.

`oriented_box_collisions` is an extra, not a published metric: the ego box rotated to the trajectory heading, tested
for overlap with the exact agent rectangles (no grid). It is reported next to the published numbers as
`collision_oriented_*`.

Accumulation: `PlanningMetricAccumulator` adds per-step sums and counts over all samples and divides only in
`compute()` (accumulate-then-divide, as the published `Metric` states do).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from nuscenes.eval.detection.utils import category_to_detection_name

from occvla_hf.class_labels import label_name, label_names
from occvla_hf.constants import (
    BOX_FIELDS,
    NUM_WAYPOINTS,
    PLANNING_NORMALIZATIONS,
    PLANNING_PROTOCOL_NAMES,
    WAYPOINT_STEP_S,
)

# Ego box of the published metric (nuScenes' Renault Zoe), metres; its centre lies EGO_CENTER_OFFSET_M ahead.
EGO_LENGTH_M: float = 4.084
EGO_WIDTH_M: float = 1.85
EGO_CENTER_OFFSET_M: float = 0.5

# BEV grid of the collision check: BEV_SIZE x BEV_SIZE cells of BEV_CELL_M over +-BEV_HALF_EXTENT_M.
BEV_HALF_EXTENT_M: float = 50.0
BEV_CELL_M: float = 0.5
BEV_SIZE: int = 200

PROTOCOLS: tuple[str, ...] = ("stp3", "uniad")
# +1: grid columns grow with y (left), ST-P3; -1: grid columns grow with -y (right, LiDAR x), UniAD.
PROTOCOL_LATERAL_SIGN: dict[str, int] = {"stp3": 1, "uniad": -1}
# Obstacle classes as nuScenes detection names: UniAD's vehicles; ST-P3 adds pedestrians.
_VEHICLE_DETECTION_NAMES = frozenset(
    {"car", "truck", "construction_vehicle", "bus", "trailer", "motorcycle", "bicycle"}
)
_STP3_DETECTION_NAMES = _VEHICLE_DETECTION_NAMES | {"pedestrian"}


# Collision checks reported per protocol: the published grid check and the heading-aware extra.
COLLISION_CHECKS: tuple[str, ...] = ("bev", "oriented")

# Horizons of the paper tables and the step count each covers.
REPORT_HORIZONS_S: tuple[float, ...] = (1.0, 2.0, 3.0)

_NUM_BOX_FIELDS = len(BOX_FIELDS)
# A trajectory step shorter than this keeps the previous heading (a stopped ego does not spin).
_MIN_HEADING_STEP_M = 1e-3


def _is_agent_for_protocol(category: str, protocol: str) -> bool:
    """Whether an agent of nuScenes `category` (full name like "vehicle.car", or a detection name) is an obstacle."""
    detection_name = category if category in _STP3_DETECTION_NAMES else category_to_detection_name(category)
    if protocol == "uniad":
        return detection_name in _VEHICLE_DETECTION_NAMES
    if "." in category:  # full nuScenes name: ST-P3 matches substrings of it
        return "vehicle" in category or "human" in category
    return detection_name in _STP3_DETECTION_NAMES


def protocol_agent_mask(categories: Sequence[str], protocol: str) -> np.ndarray:
    """(N,) bool: which agents `protocol` counts as obstacles (classes in the module docstring)."""
    _check_protocol(protocol)
    names = label_names("agent_categories", categories)  # class ids of a built dataset, or names
    return np.array([_is_agent_for_protocol(name, protocol) for name in names], dtype=bool)


def protocol_obstacles(
    agent_boxes: Sequence[np.ndarray],
    protocol: str,
    agent_categories: Sequence[Sequence[str]] | None = None,
    agent_instances: Sequence[Sequence[str]] | None = None,
    current_instances: Collection[str] | None = None,
) -> list[np.ndarray]:
    """The obstacle boxes `protocol` rasterises at each future step.

    Args:
        agent_boxes: T arrays (N_t, 7), every agent annotated at future step t (the planning row's `agent_boxes[1:]`).
        agent_categories: T lists of N_t nuScenes category names (None: every box is of an obstacle class).
        agent_instances: T lists of N_t instance tokens; with `current_instances` (the tokens annotated at the
            current keyframe, `agent_instances[0]` of the row) ST-P3 keeps only those instances (agents that appear
            later are not followed, `NuscenesData.get_birds_eye_view_label` with `in_pred=True`), while UniAD keeps
            every annotation of the future keyframe (`nuscenes_e2e_dataset.py` rasterises each future sample's
            annotations). None: every box is kept by both.
    """
    _check_protocol(protocol)
    boxes = [_as_boxes(b, f"agent_boxes[{t}]") for t, b in enumerate(agent_boxes)]
    for name, values in (("agent_categories", agent_categories), ("agent_instances", agent_instances)):
        if values is not None and [len(v) for v in values] != [len(b) for b in boxes]:
            raise ValueError(
                f"{name}: expected per-step lengths {[len(b) for b in boxes]}, got {[len(v) for v in values]}"
            )
    if (agent_instances is None) != (current_instances is None):
        raise ValueError("agent_instances/current_instances: pass both (ST-P3 follows the current agents) or neither")
    follow_current = protocol == "stp3" and agent_instances is not None
    current = set(current_instances) if follow_current else set()
    obstacles = []
    for t, step_boxes in enumerate(boxes):
        keep = np.ones(len(step_boxes), dtype=bool)
        if agent_categories is not None:
            keep &= protocol_agent_mask(agent_categories[t], protocol)
        if follow_current:
            keep &= np.array([instance in current for instance in agent_instances[t]], dtype=bool)
        obstacles.append(step_boxes[keep])
    return obstacles


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")


def _as_boxes(boxes: object, name: str) -> np.ndarray:
    """Boxes as a (N, 7) float64 array in BOX_FIELDS order; an empty list is (0, 7)."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, _NUM_BOX_FIELDS))
    if array.ndim != 2 or array.shape[1] != _NUM_BOX_FIELDS:
        raise ValueError(f"{name}: expected (N, {_NUM_BOX_FIELDS}) rows in {BOX_FIELDS} order, got {array.shape}")
    if not np.isfinite(array).all():
        rows = sorted({int(r) for r in np.argwhere(~np.isfinite(array))[:, 0]})
        raise ValueError(f"{name}: boxes must be finite; rows {rows} hold NaN or inf")
    return array


def box_corners_xy(boxes: np.ndarray) -> np.ndarray:
    """Footprint corners (N, 4, 2) of (N, 7) boxes in the ego frame, counter-clockwise from front-left."""
    boxes = _as_boxes(boxes, "boxes")
    x, y, length, width, yaw = (boxes[:, BOX_FIELDS.index(f)] for f in ("x", "y", "length", "width", "yaw"))
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])  # (4, 2) in units of (length, width)
    along = local[None, :, 0] * length[:, None]  # (N, 4)
    across = local[None, :, 1] * width[:, None]
    cos, sin = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([x[:, None] + cos * along - sin * across, y[:, None] + sin * along + cos * across], axis=-1)


def ego_footprint_cells() -> np.ndarray:
    """(32, 2) int (row, column) cells of the published ego box for an ego at the origin, rows = forward.

    The corners `(+-length/2 + 0.5, +-width/2)` map to continuous cells `(p + 49.75) / 0.5` (forward 96.42..104.58,
    lateral 97.65..101.35); `skimage.draw.polygon` fills the integer cells strictly inside: rows 97..104, columns
    98..101 (the published code's "(n_future, 32, 2)").
    """
    first_centre_m = -BEV_HALF_EXTENT_M + BEV_CELL_M / 2.0
    forward = (np.array([-EGO_LENGTH_M / 2.0, EGO_LENGTH_M / 2.0]) + EGO_CENTER_OFFSET_M - first_centre_m) / BEV_CELL_M
    lateral = (np.array([-EGO_WIDTH_M / 2.0, EGO_WIDTH_M / 2.0]) - first_centre_m) / BEV_CELL_M
    rows = np.arange(math.ceil(forward[0]), math.floor(forward[1]) + 1)
    cols = np.arange(math.ceil(lateral[0]), math.floor(lateral[1]) + 1)
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)


_EGO_CELLS = ego_footprint_cells()


def _to_grid_frame(points_xy: np.ndarray, protocol: str) -> np.ndarray:
    """Ego-frame (..., 2) points as (forward, lateral) in `protocol`'s grid handedness."""
    return np.stack([points_xy[..., 0], PROTOCOL_LATERAL_SIGN[protocol] * points_xy[..., 1]], axis=-1)


def rasterize_boxes(boxes: np.ndarray, protocol: str) -> np.ndarray:
    """(200, 200) bool occupancy of (N, 7) agent boxes on `protocol`'s grid, `[forward cell, lateral cell]`."""
    _check_protocol(protocol)
    grid = np.zeros((BEV_SIZE, BEV_SIZE), dtype=np.uint8)
    corners = _to_grid_frame(box_corners_xy(boxes), protocol)  # (N, 4, 2) forward, lateral
    cells = np.round((corners + BEV_HALF_EXTENT_M) / BEV_CELL_M).astype(np.int32)
    # One box per call, as the references do: several contours in one `fillPoly` call are filled with the even-odd
    # rule, so cells covered by two overlapping boxes would stay free. cv2 points are (column, row).
    for polygon in np.ascontiguousarray(cells[..., ::-1]):
        cv2.fillPoly(grid, [polygon], 1)
    return grid.astype(bool)


def rasterize_agent_steps(boxes_per_step: Sequence[np.ndarray], protocol: str) -> np.ndarray:
    """(T, 200, 200) bool occupancy, one grid per future step of `boxes_per_step` (T arrays of (N_t, 7))."""
    return np.stack(
        [rasterize_boxes(_as_boxes(b, f"agent_boxes[{t}]"), protocol) for t, b in enumerate(boxes_per_step)]
    )


def bev_box_collisions(trajectory: np.ndarray, occupancy: np.ndarray, protocol: str) -> np.ndarray:
    """(T,) bool: the axis-aligned ego box at each waypoint of `trajectory` (T, 2) hits `occupancy` (T, 200, 200).

    Cells are `int(position / 0.5) + footprint cell`, clipped into the grid (a point beyond +-50 m is checked
    against the border cells, as published).
    """
    _check_protocol(protocol)
    trajectory = np.asarray(trajectory, dtype=np.float64)
    if trajectory.ndim != 2 or trajectory.shape[1] != 2 or occupancy.shape != (len(trajectory), BEV_SIZE, BEV_SIZE):
        raise ValueError(
            f"trajectory/occupancy: expected (T, 2) and (T, {BEV_SIZE}, {BEV_SIZE}), "
            f"got {trajectory.shape} and {occupancy.shape}"
        )
    cells = _to_grid_frame(trajectory, protocol)[:, None, :] / BEV_CELL_M + _EGO_CELLS[None]  # (T, 32, 2)
    cells = np.clip(cells.astype(np.int32), 0, BEV_SIZE - 1)
    steps = np.arange(len(trajectory))[:, None]
    return occupancy[steps, cells[..., 0], cells[..., 1]].any(axis=1)


def trajectory_headings(trajectory: np.ndarray) -> np.ndarray:
    """(T,) heading (rad, counter-clockwise from x) of each step's motion from the previous waypoint (origin first).

    A step shorter than 1 mm keeps the previous heading; the ego starts facing +x.
    """
    points = np.concatenate([np.zeros((1, 2)), np.asarray(trajectory, dtype=np.float64)])
    headings = np.zeros(len(points) - 1)
    previous = 0.0
    for t, (dx, dy) in enumerate(np.diff(points, axis=0)):
        if math.hypot(dx, dy) >= _MIN_HEADING_STEP_M:
            previous = math.atan2(dy, dx)
        headings[t] = previous
    return headings


def _rectangles_overlap(rect: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N,) bool: convex quadrilateral `rect` (4, 2) overlaps each of `others` (N, 4, 2) with positive area (SAT)."""
    if len(others) == 0:
        return np.zeros(0, dtype=bool)
    quads = np.concatenate([np.broadcast_to(rect, others.shape)[:, None], others[:, None]], axis=1)  # (N, 2, 4, 2)
    edges = np.roll(quads, -1, axis=2) - quads
    axes = np.stack([-edges[..., 1], edges[..., 0]], axis=-1).reshape(len(others), 8, 2)  # edge normals
    proj_rect = np.einsum("nak,nck->nac", axes, quads[:, 0])  # (N, 8 axes, 4 corners)
    proj_other = np.einsum("nak,nck->nac", axes, quads[:, 1])
    separated = (proj_rect.max(-1) <= proj_other.min(-1)) | (proj_other.max(-1) <= proj_rect.min(-1))
    return ~separated.any(axis=1)


def ego_box_corners(trajectory: np.ndarray) -> np.ndarray:
    """(T, 4, 2) corners of the ego box rotated to `trajectory_headings`, centre 0.5 m ahead along the heading."""
    trajectory = np.asarray(trajectory, dtype=np.float64)
    headings = trajectory_headings(trajectory)
    centres = trajectory + EGO_CENTER_OFFSET_M * np.stack([np.cos(headings), np.sin(headings)], axis=-1)
    boxes = np.zeros((len(trajectory), _NUM_BOX_FIELDS))
    boxes[:, [BOX_FIELDS.index("x"), BOX_FIELDS.index("y")]] = centres
    boxes[:, BOX_FIELDS.index("length")] = EGO_LENGTH_M
    boxes[:, BOX_FIELDS.index("width")] = EGO_WIDTH_M
    boxes[:, BOX_FIELDS.index("yaw")] = headings
    return box_corners_xy(boxes)


def oriented_box_collisions(trajectory: np.ndarray, boxes_per_step: Sequence[np.ndarray]) -> np.ndarray:
    """(T,) bool, heading-aware extra: the ego box rotated to the motion heading overlaps an agent box (exact).

    `trajectory` (T, 2) ego frame; `boxes_per_step` T arrays (N_t, 7). Touching edges do not count.
    """
    corners = ego_box_corners(trajectory)
    if len(boxes_per_step) != len(corners):
        raise ValueError(f"agent_boxes: expected {len(corners)} steps, got {len(boxes_per_step)}")
    return np.array(
        [
            bool(_rectangles_overlap(corners[t], box_corners_xy(_as_boxes(b, f"agent_boxes[{t}]"))).any())
            for t, b in enumerate(boxes_per_step)
        ],
        dtype=bool,
    )


def l2_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(..., T) Euclidean distance (m) between predicted and ground-truth waypoints (..., T, 2)."""
    return np.sqrt(((np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)) ** 2).sum(axis=-1))


@dataclass
class PlanningSampleResult:
    """Per-step results of one sample; arrays are (T,) unless noted.

    Attributes:
        l2_m: L2 error per step (m); meaningful where `valid`.
        longitudinal_m, lateral_m: the absolute error per step along the ego's x axis (forward) and y axis (left) of
            the current keyframe (m): how far ahead or behind, and how far beside the logged position the plan is.
            On a straight road these are the along-track and cross-track errors.
        valid: the ground-truth step exists (`trajectory_mask`).
        collision: (len(PROTOCOLS), len(COLLISION_CHECKS), T) bool, the prediction collides at a valid step where
            the ground truth does not (the published count).
        gt_collision: same shape, the ground truth itself collides at a valid step (excluded from `collision`).
    """

    l2_m: np.ndarray
    longitudinal_m: np.ndarray
    lateral_m: np.ndarray
    valid: np.ndarray
    collision: np.ndarray
    gt_collision: np.ndarray


def evaluate_planning_sample(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    agent_boxes: Sequence[np.ndarray],
    agent_categories: Sequence[Sequence[str]] | None = None,
    agent_instances: Sequence[Sequence[str]] | None = None,
    current_instances: Collection[str] | None = None,
) -> PlanningSampleResult:
    """Score one sample under every protocol and collision check.

    Args:
        pred: (T, 2) predicted waypoints, metres, ego frame (x forward, y left), T = NUM_WAYPOINTS.
        gt: (T, 2) ground-truth waypoints.
        mask: (T,) bool, valid ground-truth steps.
        agent_boxes: T arrays (N_t, 7) in BOX_FIELDS order, the other agents at the future steps 1..T (the
            planning dataset's `agent_boxes[1:]`: its entry 0 is the current time).
        agent_categories: T lists of N_t nuScenes category names; each protocol then keeps its own obstacle
            classes. None: every box is an obstacle for both protocols.
        agent_instances, current_instances: instance tokens per future step and those of the current keyframe;
            each protocol then keeps its own agent set (`protocol_obstacles`). None: every box is kept.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask)
    if pred.shape != (NUM_WAYPOINTS, 2) or gt.shape != (NUM_WAYPOINTS, 2):
        raise ValueError(f"pred/gt: expected ({NUM_WAYPOINTS}, 2) each, got {pred.shape} and {gt.shape}")
    if mask.shape != (NUM_WAYPOINTS,) or mask.dtype != bool:
        raise ValueError(f"trajectory_mask: expected ({NUM_WAYPOINTS},) bool, got {mask.shape} {mask.dtype}")
    if len(agent_boxes) != NUM_WAYPOINTS:
        raise ValueError(f"agent_boxes: expected {NUM_WAYPOINTS} future steps, got {len(agent_boxes)}")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("pred/gt: waypoints must be finite (NaN or inf found)")

    collision = np.zeros((len(PROTOCOLS), len(COLLISION_CHECKS), NUM_WAYPOINTS), dtype=bool)
    gt_collision = np.zeros_like(collision)
    for p, protocol in enumerate(PROTOCOLS):
        obstacles = protocol_obstacles(agent_boxes, protocol, agent_categories, agent_instances, current_instances)
        occupancy = rasterize_agent_steps(obstacles, protocol)
        for c, check in enumerate(COLLISION_CHECKS):
            if check == "bev":
                hits, gt_hits = (bev_box_collisions(t, occupancy, protocol) for t in (pred, gt))
            else:
                hits, gt_hits = (oriented_box_collisions(t, obstacles) for t in (pred, gt))
            gt_collision[p, c] = gt_hits & mask
            collision[p, c] = hits & ~gt_hits & mask
    longitudinal_m, lateral_m = np.abs(pred - gt).T
    return PlanningSampleResult(
        l2_m=l2_errors(pred, gt),
        longitudinal_m=longitudinal_m,
        lateral_m=lateral_m,
        valid=mask.copy(),
        collision=collision,
        gt_collision=gt_collision,
    )


def horizon_steps(horizon_s: float) -> int:
    """Number of waypoints covering `horizon_s` (1 s -> 2 at 0.5 s steps)."""
    steps = horizon_s / WAYPOINT_STEP_S
    if abs(steps - round(steps)) > 1e-9 or not 1 <= round(steps) <= NUM_WAYPOINTS:
        raise ValueError(
            f"horizon_s: expected a multiple of {WAYPOINT_STEP_S} s up to the last waypoint, got {horizon_s}"
        )
    return round(steps)


def horizon_values(per_step: np.ndarray, protocol: str) -> list[float]:
    """Values at REPORT_HORIZONS_S from per-step values (T,) (NaN where a step has no valid sample).

    UniAD: the value of the step at the horizon. ST-P3: the mean of the per-step values up to the horizon (steps
    without a valid sample are skipped; NaN if none is left).
    """
    _check_protocol(protocol)
    per_step = np.asarray(per_step, dtype=np.float64)
    values = []
    for horizon_s in REPORT_HORIZONS_S:
        n = horizon_steps(horizon_s)
        if protocol == "uniad":
            values.append(float(per_step[n - 1]))
        else:
            seen = per_step[:n][~np.isnan(per_step[:n])]
            values.append(float(seen.mean()) if len(seen) else math.nan)
    return values


def _horizon_key(horizon_s: float) -> str:
    return f"{horizon_s:g}s"


def protocol_summary(
    l2_per_step_m: np.ndarray, collision_per_step_pct: Mapping[str, np.ndarray], protocol: str
) -> dict:
    """The paper row of one protocol: `l2_<h>_m`, `collision_<h>_pct` (and `collision_oriented_<h>_pct`), h in 1s,
    2s, 3s, avg; "avg" is the mean of the three horizons. NaN becomes None (JSON)."""
    columns = {"l2": ("m", l2_per_step_m)}
    for check, values in collision_per_step_pct.items():
        columns["collision" if check == "bev" else f"collision_{check}"] = ("pct", values)
    summary: dict[str, float | None] = {}
    for name, (unit, per_step) in columns.items():
        values = horizon_values(per_step, protocol)
        for horizon_s, value in zip(REPORT_HORIZONS_S, values):
            summary[f"{name}_{_horizon_key(horizon_s)}_{unit}"] = _json_float(value)
        summary[f"{name}_avg_{unit}"] = _json_float(float(np.mean(values)))
    return summary


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass
class _PlanningCounts:
    """Per-step sums and counts over samples (accumulated, divided only in `report`)."""

    num_samples: int = 0
    num_valid: np.ndarray = field(default_factory=lambda: np.zeros(NUM_WAYPOINTS, dtype=np.int64))
    l2_sum_m: np.ndarray = field(default_factory=lambda: np.zeros(NUM_WAYPOINTS))
    longitudinal_sum_m: np.ndarray = field(default_factory=lambda: np.zeros(NUM_WAYPOINTS))
    lateral_sum_m: np.ndarray = field(default_factory=lambda: np.zeros(NUM_WAYPOINTS))
    collisions: np.ndarray = field(
        default_factory=lambda: np.zeros((len(PROTOCOLS), len(COLLISION_CHECKS), NUM_WAYPOINTS), dtype=np.int64)
    )
    gt_collisions: np.ndarray = field(
        default_factory=lambda: np.zeros((len(PROTOCOLS), len(COLLISION_CHECKS), NUM_WAYPOINTS), dtype=np.int64)
    )

    def add(self, result: PlanningSampleResult) -> None:
        self.num_samples += 1
        self.num_valid += result.valid
        self.l2_sum_m += np.where(result.valid, result.l2_m, 0.0)
        self.longitudinal_sum_m += np.where(result.valid, result.longitudinal_m, 0.0)
        self.lateral_sum_m += np.where(result.valid, result.lateral_m, 0.0)
        self.collisions += result.collision
        self.gt_collisions += result.gt_collision

    def report(self, normalization: str) -> dict:
        """Per-step values and the paper rows of both protocols (see `PlanningMetricAccumulator.compute`)."""
        denominator = self.num_valid if normalization == "valid_steps" else np.full(NUM_WAYPOINTS, self.num_samples)
        with np.errstate(invalid="ignore", divide="ignore"):
            l2_m = self.l2_sum_m / denominator
            longitudinal_m, lateral_m = self.longitudinal_sum_m / denominator, self.lateral_sum_m / denominator
            collision_pct = 100.0 * self.collisions / denominator
            gt_collision_pct = 100.0 * self.gt_collisions / denominator
        report: dict = {"num_samples": self.num_samples, "normalization": normalization}
        for p, protocol in enumerate(PROTOCOLS):
            report[protocol] = protocol_summary(
                l2_m, {check: collision_pct[p, c] for c, check in enumerate(COLLISION_CHECKS)}, protocol
            )
        per_step: dict = {
            "time_s": [WAYPOINT_STEP_S * (t + 1) for t in range(NUM_WAYPOINTS)],
            "num_valid": self.num_valid.tolist(),
            "l2_m": [_json_float(v) for v in l2_m],
            "longitudinal_abs_m": [_json_float(v) for v in longitudinal_m],
            "lateral_abs_m": [_json_float(v) for v in lateral_m],
        }
        for p, protocol in enumerate(PROTOCOLS):
            per_step[protocol] = {}
            for c, check in enumerate(COLLISION_CHECKS):
                suffix = "" if check == "bev" else f"_{check}"
                per_step[protocol][f"collision{suffix}_pct"] = [_json_float(v) for v in collision_pct[p, c]]
                per_step[protocol][f"gt_collision{suffix}_pct"] = [_json_float(v) for v in gt_collision_pct[p, c]]
        report["per_step"] = per_step
        return report


class PlanningMetricAccumulator:
    """Consumes batches of predictions and produces the planning report (accumulate-then-divide).

    Each `update` scores every sample with `evaluate_planning_sample` and adds per-step sums (L2, collisions,
    ground-truth collisions) and counts (valid steps) overall and per ground-truth meta-action; `compute` divides
    once. A per-step value is therefore a sum over samples divided once, never a mean of batch means.

    Args:
        normalization: the divisor of each per-step value (L2 and collisions alike). `"valid_steps"` (default): the
            number of samples whose ground truth has that step, so a partial future (a keyframe near the scene end)
            neither lowers nor raises a step's value. `"all_samples"`: the number of samples, as UniAD's
            `PlanningMetric.compute` divides by `total`; a missing step then counts as zero L2 and as a step where
            the ground truth collides (never counted), which reproduces UniAD's published tables on data with
            partial futures. Both give identical numbers when every step is valid.
    """

    def __init__(self, normalization: str = "valid_steps") -> None:
        if normalization not in PLANNING_NORMALIZATIONS:
            raise ValueError(f"normalization: expected one of {PLANNING_NORMALIZATIONS}, got {normalization!r}")
        self.normalization = normalization
        self._overall = _PlanningCounts()
        self._by_meta_action: dict[str, _PlanningCounts] = {}

    def update(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        mask: np.ndarray,
        agent_boxes: Sequence[Sequence[np.ndarray]],
        agent_categories: Sequence[Sequence[Sequence[str]]] | None = None,
        meta_actions: Sequence[str] | None = None,
        agent_instances: Sequence[Sequence[Sequence[str]]] | None = None,
        current_instances: Sequence[Collection[str]] | None = None,
    ) -> None:
        """Add a batch.

        Args:
            pred: (N, T, 2) predicted trajectories (numpy, or float32 CPU tensors), metres, ego frame.
            gt: (N, T, 2) ground-truth trajectories.
            mask: (N, T) bool valid ground-truth steps.
            agent_boxes: N samples x T future steps x (N_t, 7) boxes (see `evaluate_planning_sample`).
            agent_categories: N x T lists of category names, or None (every box is an obstacle).
            meta_actions: N ground-truth meta-action texts for the per-meta-action breakdown, or None.
            agent_instances: N x T lists of instance tokens, and current_instances: N collections of the tokens
                annotated at each sample's current keyframe (both or neither; see `protocol_obstacles`).
        """
        pred, gt, mask = np.asarray(pred), np.asarray(gt), np.asarray(mask)
        if pred.ndim != 3 or len(pred) != len(gt) or len(pred) != len(mask):
            raise ValueError(
                f"pred/gt/mask: expected (N, T, 2), (N, T, 2), (N, T), got {pred.shape}, {gt.shape}, {mask.shape}"
            )
        for name, values in (
            ("agent_boxes", agent_boxes),
            ("agent_categories", agent_categories),
            ("meta_actions", meta_actions),
            ("agent_instances", agent_instances),
            ("current_instances", current_instances),
        ):
            if values is not None and len(values) != len(pred):
                raise ValueError(f"{name}: expected {len(pred)} samples, got {len(values)}")
        for i in range(len(pred)):
            result = evaluate_planning_sample(
                pred[i],
                gt[i],
                mask[i],
                agent_boxes[i],
                None if agent_categories is None else agent_categories[i],
                None if agent_instances is None else agent_instances[i],
                None if current_instances is None else current_instances[i],
            )
            self._overall.add(result)
            if meta_actions is not None:
                name = label_name("meta_action", meta_actions[i])  # a built dataset stores the class id
                self._by_meta_action.setdefault(name, _PlanningCounts()).add(result)

    def compute(self) -> dict:
        """The JSON-ready report.

        Keys: `num_samples`; `normalization`; `stp3` and `uniad`, each the paper row (`l2_1s_m` ... `l2_avg_m`, `collision_1s_pct`
        ... `collision_avg_pct`, and the heading-aware `collision_oriented_*_pct`); `per_step` (time, valid counts,
        L2, its longitudinal and lateral parts `longitudinal_abs_m` / `lateral_abs_m` (mean absolute error along the
        current ego x and y axes), and per protocol the collision and ground-truth collision rates per step); `by_meta_action`, the same
        report per ground-truth meta-action. Values with no valid sample are None.
        """
        if self._overall.num_samples == 0:
            raise ValueError("PlanningMetricAccumulator: no sample was added")
        report = self._overall.report(self.normalization)
        report["by_meta_action"] = {
            name: counts.report(self.normalization) for name, counts in sorted(self._by_meta_action.items())
        }
        return report


def format_sample_result(result: PlanningSampleResult) -> str:
    """One sample's scores in a line (figure titles): its L2 at the report horizons (the error of the waypoint at each
    horizon, `horizon_values`' UniAD reading; "-" where the ground truth has no such step) and, per protocol, the
    times of the predicted steps counted as collisions (BEV check)."""
    l2_m = horizon_values(np.where(result.valid, result.l2_m, np.nan), "uniad")
    horizons = "/".join(f"{horizon_s:g}" for horizon_s in REPORT_HORIZONS_S)
    l2_text = " / ".join("-" if math.isnan(value) else f"{value:.2f}" for value in l2_m)
    bev = COLLISION_CHECKS.index("bev")
    collisions = []
    for p, protocol in enumerate(PROTOCOLS):
        steps = np.flatnonzero(result.collision[p, bev])
        times = ", ".join(f"{WAYPOINT_STEP_S * (t + 1):g} s" for t in steps) or "none"
        collisions.append(f"{PLANNING_PROTOCOL_NAMES[protocol]} {times}")
    return f"L2 @{horizons} s: {l2_text} m | collision: {'; '.join(collisions)}"


def format_planning_table(rows: Mapping[str, Mapping[str, float | None]], title: str | None = None) -> str:
    """A text table in the papers' layout: one row per method, L2 (m) and collision (%) at 1s/2s/3s/avg.

    `rows` maps a method name to a protocol row (`report["stp3"]` or `report["uniad"]`); missing values print "-".
    """
    horizons = [_horizon_key(h) for h in REPORT_HORIZONS_S] + ["avg"]
    labels = [h if h != "avg" else "Avg." for h in horizons]
    name_width = max([len("Method"), *(len(name) for name in rows)])
    cell = 6

    def fmt(value: float | None) -> str:
        return f"{value:>{cell}.2f}" if value is not None else f"{'-':>{cell}}"

    group_width = len(horizons) * (cell + 1) - 1
    lines = [] if title is None else [title]
    lines.append(f"{'':<{name_width}} | {'L2 (m)':^{group_width}} | {'Collision (%)':^{group_width}}")
    header_cells = " ".join(f"{label:>{cell}}" for label in labels)
    lines.append(f"{'Method':<{name_width}} | {header_cells} | {header_cells}")
    lines.append("-" * len(lines[-1]))
    for name, row in rows.items():
        l2 = " ".join(fmt(row.get(f"l2_{h}_m")) for h in horizons)
        collision = " ".join(fmt(row.get(f"collision_{h}_pct")) for h in horizons)
        lines.append(f"{name:<{name_width}} | {l2} | {collision}")
    return "\n".join(line.rstrip() for line in lines)
