"""Pictures of a plan: a bird's-eye view over occupancy or agent boxes, and the six cameras with the trajectory.

The functions return matplotlib `Figure` objects drawn on the Agg canvas (no pyplot, no global state); `save_png`
writes one. A figure of `figsize_in` = (w, h) inches at `dpi` is a PNG of exactly (w * dpi) x (h * dpi) pixels (no
tight bounding box), so sizes are deterministic. Class colours come from `OCC_CLASS_COLORS_RGB`.

Conventions: ego frame x forward, y left, metres. The bird's-eye view puts forward up and left on the left (the
horizontal axis is y, growing to the left). Time is one colour scale (`TIME_COLORS`, a colour bar beside the view):
the waypoint markers and the agents' box outlines at 0.5 .. 3 s take the colour of their time step, so a waypoint
is read against the agents of the same instant; the agents at t = 0 are filled with their class colour. The
trajectory is projected into the front camera as points on the ground plane z = 0 of the ego frame, through the
camera->ego extrinsics and the intrinsics (which must match the pixel size of the image shown).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon, Rectangle
from nuscenes.eval.detection.utils import category_to_detection_name

from occvla_hf.class_labels import label_name, label_names
from occvla_hf.constants import (
    CAMERA_NAMES,
    CAMERA_ROWS,
    NUM_BOX_STEPS,
    NUM_WAYPOINTS,
    OCC_CLASS_COLORS_RGB,
    OCC_CLASS_NAMES,
    OCC_FREE_CLASS,
    OCC_RANGE_MAX_M,
    OCC_RANGE_MIN_M,
    WAYPOINT_STEP_S,
)
from occvla_hf.evaluation.planning import (
    COLLISION_CHECKS,
    EGO_CENTER_OFFSET_M,
    EGO_LENGTH_M,
    EGO_WIDTH_M,
    PlanningSampleResult,
    box_corners_xy,
    format_sample_result,
)

# Six-camera mosaic in the nuScenes layout: front row left to right, back row.
MOSAIC_LAYOUT: tuple[tuple[str, ...], ...] = CAMERA_ROWS
TRAJECTORY_CAMERA: str = CAMERA_NAMES[0]  # CAM_FRONT

_PALETTE = np.array(OCC_CLASS_COLORS_RGB, dtype=np.uint8)  # (num_classes, 3)
_PRED_STYLE = {"color": "tab:blue", "marker": "^", "label": "predicted"}
_GT_STYLE = {"color": "tab:green", "marker": "o", "linestyle": "--", "label": "ground truth"}
_COLLISION_STYLE = {"color": "red", "marker": "X", "markersize": 12, "linestyle": "none", "label": "collision"}
# Colour of time step t = 0 (now) .. 6 (3 s): viridis without its palest yellow, which vanishes on the background.
TIME_COLORS = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.9, NUM_BOX_STEPS)), name="time_steps")
STEP_TIMES_S: np.ndarray = WAYPOINT_STEP_S * np.arange(NUM_BOX_STEPS)  # (7,) time of each step, 0 .. 3 s
# One colour band per step, centred on its time.
_TIME_NORM = BoundaryNorm(WAYPOINT_STEP_S * (np.arange(NUM_BOX_STEPS + 1) - 0.5), NUM_BOX_STEPS)
_NOW_AGENTS = Patch(facecolor="0.7", edgecolor="black", linewidth=0.8, label="agents at 0 s (class colour)")
_LATER_AGENTS = Patch(facecolor="none", edgecolor=TIME_COLORS(3), linewidth=1.0, label="agents at 0.5-3 s (time)")
# Smallest half-width of a fitted bird's-eye view, metres.
_MIN_VIEW_RANGE_M = 20.0
# Points closer to the camera plane than this are not projected (behind or at the camera).
_MIN_DEPTH_M = 0.1
# Straight-line samples per waypoint segment when projecting a trajectory (so the curve follows the ground).
_SAMPLES_PER_SEGMENT = 10


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as a PNG at its own dpi (size = figsize * dpi pixels); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=figure.dpi)
    return path


def occupancy_top_classes(semantics: np.ndarray, visible_mask: np.ndarray | None = None) -> np.ndarray:
    """(X, Y) uint8: the class of the highest non-free voxel of each column of `semantics` (X, Y, Z), else free.

    `visible_mask` (X, Y, Z) bool, e.g. the camera mask: voxels outside it are treated as free.
    """
    semantics = np.asarray(semantics)
    if semantics.ndim != 3:
        raise ValueError(f"semantics: expected (X, Y, Z) class ids, got shape {semantics.shape}")
    occupied = semantics != OCC_FREE_CLASS
    if visible_mask is not None:
        if np.shape(visible_mask) != semantics.shape:
            raise ValueError(f"visible_mask: expected {semantics.shape} bool, got {np.shape(visible_mask)}")
        occupied &= np.asarray(visible_mask, dtype=bool)
    top = semantics.shape[2] - 1 - np.argmax(occupied[..., ::-1], axis=2)  # (X, Y) highest occupied z index
    classes = np.take_along_axis(semantics, top[..., None], axis=2)[..., 0].astype(np.uint8)
    classes[~occupied.any(axis=2)] = OCC_FREE_CLASS
    return classes


def category_class_id(category: str) -> int:
    """Occ3D class id of an agent category (nuScenes name, detection name or Occ3D name); "others" if unknown."""
    name = category if category in OCC_CLASS_NAMES else category_to_detection_name(category)
    return OCC_CLASS_NAMES.index(name) if name in OCC_CLASS_NAMES else OCC_CLASS_NAMES.index("others")


def project_to_image(
    points_ego: np.ndarray, intrinsics: np.ndarray, camera_to_ego: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) (u right, v down) and depths (N,) m of ego-frame points (N, 3) in a pinhole camera.

    `intrinsics` (3, 3); `camera_to_ego` (4, 4) maps camera coordinates (x right, y down, z forward) to the ego
    frame. Points with depth <= 0 have meaningless pixels; filter on the depth.
    """
    points_ego = np.asarray(points_ego, dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    camera_to_ego = np.asarray(camera_to_ego, dtype=np.float64)
    if points_ego.ndim != 2 or points_ego.shape[1] != 3:
        raise ValueError(f"points_ego: expected (N, 3), got {points_ego.shape}")
    if intrinsics.shape != (3, 3) or camera_to_ego.shape != (4, 4):
        raise ValueError(
            f"intrinsics/camera_to_ego: expected (3, 3) and (4, 4), got {intrinsics.shape}, {camera_to_ego.shape}"
        )
    rotation, translation = camera_to_ego[:3, :3], camera_to_ego[:3, 3]
    points_camera = (points_ego - translation) @ rotation  # R^T (p - t), row vectors
    depth = points_camera[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = (points_camera @ intrinsics.T)[:, :2] / depth[:, None]
    return pixels, depth


def _trajectories(
    pred_trajectory: np.ndarray | None, gt_trajectory: np.ndarray | None, trajectory_mask: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """(waypoints (K, 2), their time steps (K,) in 1..6, line style) of the given trajectories, ground truth first,
    masked steps left out."""
    mask = np.ones(NUM_WAYPOINTS, dtype=bool) if trajectory_mask is None else np.asarray(trajectory_mask, dtype=bool)
    if mask.shape != (NUM_WAYPOINTS,):
        raise ValueError(f"trajectory_mask: expected ({NUM_WAYPOINTS},) bool, got {mask.shape}")
    drawn = []
    for name, trajectory, style, keep in (
        ("gt_trajectory", gt_trajectory, _GT_STYLE, mask),
        ("pred_trajectory", pred_trajectory, _PRED_STYLE, np.ones(NUM_WAYPOINTS, dtype=bool)),
    ):
        if trajectory is None:
            continue
        trajectory = np.asarray(trajectory, dtype=np.float64)
        if trajectory.shape != (NUM_WAYPOINTS, 2):
            raise ValueError(f"{name}: expected ({NUM_WAYPOINTS}, 2), got {trajectory.shape}")
        drawn.append((trajectory[keep], np.flatnonzero(keep) + 1, style))
    return drawn


def _class_patch(class_id: int) -> Patch:
    return Patch(
        facecolor=_PALETTE[class_id] / 255.0, edgecolor="black", linewidth=0.3, label=OCC_CLASS_NAMES[class_id]
    )


def plot_bev(
    *,
    pred_trajectory: np.ndarray | None = None,
    gt_trajectory: np.ndarray | None = None,
    trajectory_mask: np.ndarray | None = None,
    collisions: np.ndarray | None = None,
    semantics: np.ndarray | None = None,
    visible_mask: np.ndarray | None = None,
    agent_boxes: Sequence[np.ndarray] | None = None,
    agent_categories: Sequence[Sequence[str]] | None = None,
    view_range_m: float | None = None,
    title: str | None = None,
    figsize_in: tuple[float, float] = (6.0, 6.0),
    dpi: int = 100,
) -> Figure:
    """Bird's-eye view of one sample: occupancy or agent boxes, the ego box, predicted vs true trajectory, with the
    legend below the view and the colour bar of the time steps beside it.

    Args:
        pred_trajectory, gt_trajectory: (6, 2) waypoints, metres, ego frame; either may be None.
        trajectory_mask: (6,) bool valid ground-truth steps (others are not drawn).
        collisions: (6,) bool, predicted waypoints to mark, e.g. `PlanningSampleResult.collision[protocol, check]`.
        semantics: (X, Y, Z) Occ3D class ids, drawn top-down (highest non-free voxel per column) over the Occ3D
            extent; `visible_mask` (X, Y, Z) bool hides voxels outside it.
        agent_boxes: the planning dataset's `agent_boxes`, 7 arrays (N_t, 7) for t = 0 (now) .. 6 (3 s): boxes at
            t = 0 are filled with their class colour (`agent_categories`, 7 lists of names), later ones are
            outlines in the colour of their time step.
        view_range_m: half-width R of the view: y in [-R, R], x in [-R / 2, 1.5 R] (more room ahead). None fits
            the trajectories: R = max(20 m, 1.2 x their farthest coordinate).
        figsize_in, dpi: the PNG is figsize_in * dpi pixels.
    """
    figure = Figure(figsize=figsize_in, dpi=dpi, layout="constrained")
    ax = figure.add_subplot()
    ax.set_facecolor("#f2f2f2")
    shown_classes: set[int] = set()
    if semantics is not None:
        shown_classes |= _draw_occupancy(ax, semantics, visible_mask)
    if agent_boxes is not None:
        shown_classes |= _draw_agent_boxes(ax, agent_boxes, agent_categories)
    handles = [_draw_ego(ax)]
    if agent_boxes is not None:
        handles += [_NOW_AGENTS, _LATER_AGENTS]
    trajectories = _trajectories(pred_trajectory, gt_trajectory, trajectory_mask)
    for points, steps, style in trajectories:
        handles.append(_draw_trajectory(ax, points, steps, style))
    if collisions is not None:
        handles += _draw_collisions(ax, collisions, pred_trajectory)
    handles += [_class_patch(c) for c in sorted(shown_classes)]
    # Below the view, so that it hides no agent ahead of the ego.
    figure.legend(handles=handles, loc="outside lower center", fontsize=6, ncol=3, frameon=False)
    if trajectories or agent_boxes is not None:
        _draw_time_bar(figure, ax)
    if view_range_m is None:
        farthest = max([np.abs(points).max(initial=0.0) for points, _, _ in trajectories], default=0.0)
        view_range_m = max(_MIN_VIEW_RANGE_M, 1.2 * farthest)
    _set_view(ax, view_range_m, title)
    return figure


def _draw_trajectory(ax: Axes, points: np.ndarray, steps: np.ndarray, style: dict) -> Line2D:
    """The path from the ego origin through `points` (K, 2) in its style, each waypoint marker filled with the colour
    of its time step (`steps` (K,)); returns the legend handle (the line)."""
    path = np.concatenate([np.zeros((1, 2)), points])
    (line,) = ax.plot(path[:, 1], path[:, 0], linewidth=2.0, markersize=6, markerfacecolor="white", zorder=4, **style)
    colors = TIME_COLORS(steps)
    ax.scatter(points[:, 1], points[:, 0], c=colors, s=36, marker=style["marker"], edgecolors=style["color"], zorder=5)
    return line


def _draw_time_bar(figure: Figure, ax: Axes) -> None:
    """The colour bar of the time steps (0 .. 3 s) beside `ax`."""
    bar = figure.colorbar(
        ScalarMappable(norm=_TIME_NORM, cmap=TIME_COLORS), ax=ax, ticks=STEP_TIMES_S, shrink=0.6, pad=0.02
    )
    bar.set_label("time (s): waypoints, agents", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def plot_plan_bev(
    row: Mapping[str, Any],
    pred_trajectory: np.ndarray,
    result: PlanningSampleResult,
    meta_action: str,
    *,
    semantics: np.ndarray | None = None,
    visible_mask: np.ndarray | None = None,
    figsize_in: tuple[float, float] = (6.0, 6.5),
    dpi: int = 100,
) -> Figure:
    """The bird's-eye view of one plan (`occvla-hf plan`): the planning `row`'s ground truth and agents at every
    step, the (6, 2) `pred_trajectory` with the steps `result` (`evaluate_planning_sample` of it) finds colliding under
    either protocol marked, and the `semantics` (X, Y, Z) occupancy under them if given (`visible_mask` as in
    `plot_bev`). The title names the keyframe and both meta-actions, then the scores of `result`
    (`format_sample_result`: L2 at 1/2/3 s, collisions per protocol)."""
    from occvla_hf.data.schema import agent_boxes_arrays  # loads `datasets`: only when a row is drawn

    bev = COLLISION_CHECKS.index("bev")
    return plot_bev(
        pred_trajectory=pred_trajectory,
        gt_trajectory=np.asarray(row["trajectory"], dtype=np.float32),
        trajectory_mask=np.asarray(row["trajectory_mask"], dtype=bool),
        collisions=result.collision[:, bev].any(axis=0),
        semantics=semantics,
        visible_mask=visible_mask,
        agent_boxes=agent_boxes_arrays(row["agent_boxes"]),
        agent_categories=row["agent_categories"],
        title=f"{row['sample_token'][:8]}  pred: {meta_action}  gt: {label_name('meta_action', row['meta_action'])}\n"
        f"{format_sample_result(result)}",
        figsize_in=figsize_in,
        dpi=dpi,
    )


def _draw_occupancy(ax: Axes, semantics: np.ndarray, visible_mask: np.ndarray | None) -> set[int]:
    """Draws the top-down classes of `semantics` (X, Y, Z) over the Occ3D extent; returns the classes shown."""
    top = occupancy_top_classes(semantics, visible_mask)
    # Rows of the picture run from +x down, columns from +y (left) to -y: flip both grid axes.
    (x_min, y_min), (x_max, y_max) = OCC_RANGE_MIN_M[:2], OCC_RANGE_MAX_M[:2]
    ax.imshow(_PALETTE[top[::-1, ::-1]], extent=(y_max, y_min, x_min, x_max), interpolation="nearest", zorder=0)
    return {int(c) for c in np.unique(top) if c != OCC_FREE_CLASS}


def _draw_agent_boxes(
    ax: Axes, agent_boxes: Sequence[np.ndarray], agent_categories: Sequence[Sequence[str]] | None
) -> set[int]:
    """Draws the agents' boxes at t = 0 (filled with their class colour, over the later ones) and at the later
    steps (outlines in the colour of the step); returns the classes filled."""
    if len(agent_boxes) != NUM_BOX_STEPS:
        raise ValueError(f"agent_boxes: expected {NUM_BOX_STEPS} steps (t = 0 first), got {len(agent_boxes)}")
    classes: set[int] = set()
    for t, boxes in enumerate(agent_boxes):
        names = (
            label_names("agent_categories", agent_categories[t])
            if agent_categories is not None
            else ["others"] * len(boxes)
        )
        for corners, name in zip(box_corners_xy(boxes), names, strict=True):
            if t == 0:
                class_id = category_class_id(name)
                classes.add(class_id)
                style = {"facecolor": _PALETTE[class_id] / 255.0, "edgecolor": "black", "linewidth": 0.8, "zorder": 3}
            else:
                style = {"facecolor": "none", "edgecolor": TIME_COLORS(t), "linewidth": 1.2, "zorder": 2}
            ax.add_patch(Polygon(corners[:, ::-1], closed=True, **style))
    return classes


def _draw_ego(ax: Axes) -> Rectangle:
    """The ego box of the collision metric (axis-aligned, centre 0.5 m ahead of the origin)."""
    ego = Rectangle(
        (-EGO_WIDTH_M / 2.0, EGO_CENTER_OFFSET_M - EGO_LENGTH_M / 2.0),
        EGO_WIDTH_M,
        EGO_LENGTH_M,
        facecolor="0.25",
        edgecolor="black",
        zorder=3,
        label="ego",
    )
    ax.add_patch(ego)
    return ego


def _draw_collisions(ax: Axes, collisions: np.ndarray, pred_trajectory: np.ndarray | None) -> list:
    """Marks the predicted waypoints flagged in `collisions` (6,) bool; returns the legend handles."""
    if pred_trajectory is None:
        raise ValueError("collisions: needs pred_trajectory to mark")
    collisions = np.asarray(collisions, dtype=bool)
    if collisions.shape != (NUM_WAYPOINTS,):
        raise ValueError(f"collisions: expected ({NUM_WAYPOINTS},) bool, got {collisions.shape}")
    hits = np.asarray(pred_trajectory, dtype=np.float64)[collisions]
    return ax.plot(hits[:, 1], hits[:, 0], zorder=6, **_COLLISION_STYLE)


def _set_view(ax: Axes, view_range_m: float, title: str | None) -> None:
    """Forward up, left on the left: y in [-R, R] (growing to the left), x in [-R / 2, 1.5 R]."""
    ax.set_xlim(view_range_m, -view_range_m)
    ax.set_ylim(-0.5 * view_range_m, 1.5 * view_range_m)
    ax.set_aspect("equal")
    ax.set_xlabel("y (m, left +)")
    ax.set_ylabel("x (m, forward +)")
    if title is not None:
        ax.set_title(title)


def _as_image(image: object, name: str) -> np.ndarray:
    """An (H, W, 3|4) image array from a PIL image or array."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{name}: expected an (H, W, 3) RGB image, got shape {array.shape}")
    return array


def _densify(points: np.ndarray) -> np.ndarray:
    """(K, 2) polyline resampled with `_SAMPLES_PER_SEGMENT` points per segment, ends included."""
    fractions = np.linspace(0.0, 1.0, _SAMPLES_PER_SEGMENT, endpoint=False)[:, None]
    segments = [start + fractions * (end - start) for start, end in itertools.pairwise(points)]
    return np.concatenate([*segments, points[-1:]])


def plot_camera_mosaic(
    images: Sequence[object],
    *,
    camera_intrinsics: np.ndarray,
    camera_to_ego: np.ndarray,
    pred_trajectory: np.ndarray | None = None,
    gt_trajectory: np.ndarray | None = None,
    trajectory_mask: np.ndarray | None = None,
    figsize_in: tuple[float, float] = (12.0, 4.5),
    dpi: int = 100,
) -> Figure:
    """The six cameras in a 2 x 3 mosaic (nuScenes layout) with the trajectories drawn into the front camera.

    Args:
        images: six images (PIL or (H, W, 3) arrays) in CAMERA_NAMES order.
        camera_intrinsics: (6, 3, 3) pinhole matrices for the pixel size of `images`.
        camera_to_ego: (6, 4, 4) camera -> ego transforms into the frame of the trajectories: the planning rows'
            `camera_to_keyframe_ego` (the calibrated `camera_extrinsics` are at each camera's own time).
        pred_trajectory, gt_trajectory: (6, 2) waypoints, metres, ego frame, drawn on the ground plane z = 0.
        trajectory_mask: (6,) bool valid ground-truth steps.
        figsize_in, dpi: the PNG is figsize_in * dpi pixels; cells stretch to fill it.
    """
    if len(images) != len(CAMERA_NAMES):
        raise ValueError(f"images: expected {len(CAMERA_NAMES)} views in {CAMERA_NAMES} order, got {len(images)}")
    camera_intrinsics = np.asarray(camera_intrinsics, dtype=np.float64)
    camera_to_ego = np.asarray(camera_to_ego, dtype=np.float64)
    if camera_intrinsics.shape != (len(CAMERA_NAMES), 3, 3) or camera_to_ego.shape != (len(CAMERA_NAMES), 4, 4):
        raise ValueError(
            f"camera_intrinsics/camera_to_ego: expected ({len(CAMERA_NAMES)}, 3, 3) and "
            f"({len(CAMERA_NAMES)}, 4, 4), got {camera_intrinsics.shape}, {camera_to_ego.shape}"
        )
    figure = Figure(figsize=figsize_in, dpi=dpi)
    grid = figure.add_gridspec(
        len(MOSAIC_LAYOUT), len(MOSAIC_LAYOUT[0]), left=0, right=1, bottom=0, top=1, wspace=0, hspace=0
    )
    for row, names in enumerate(MOSAIC_LAYOUT):
        for col, camera in enumerate(names):
            index = CAMERA_NAMES.index(camera)
            image = _as_image(images[index], f"images[{index}]")
            height, width = image.shape[:2]
            ax = figure.add_subplot(grid[row, col])
            ax.imshow(image, aspect="auto", extent=(0, width, height, 0), interpolation="bilinear")
            ax.text(
                8, 8, camera, color="white", fontsize=8, va="top", bbox={"facecolor": "black", "alpha": 0.5, "pad": 2}
            )
            if camera == TRAJECTORY_CAMERA:
                handles = []
                for points, _, style in _trajectories(pred_trajectory, gt_trajectory, trajectory_mask):
                    ground = _densify(np.concatenate([np.zeros((1, 2)), points]))
                    pixels, depth = project_to_image(
                        np.concatenate([ground, np.zeros((len(ground), 1))], axis=1),
                        camera_intrinsics[index],
                        camera_to_ego[index],
                    )
                    seen = pixels[depth > _MIN_DEPTH_M]
                    line_style = {k: v for k, v in style.items() if k != "marker"}
                    handles += ax.plot(seen[:, 0], seen[:, 1], linewidth=2.5, **line_style)
                if handles:
                    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.8)
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.set_axis_off()
    return figure
