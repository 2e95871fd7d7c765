"""Meta-action labelling: a high-level driving decision (speed x path) derived from a future trajectory, and its text.

A pure function of the trajectory, below both `data` (which labels every keyframe) and `processing` (whose tokenizer
learns the text). A meta-action pairs one of `SPEED_ACTIONS` with one of `PATH_ACTIONS`; its text form is
`"<speed>, <path>"`, e.g. `"decelerate, left turn"`. The label is computed from geometry alone (no map), with the
thresholds below:

Speed (from the speeds of the segments between consecutive valid waypoints, origin included):
  * `stop`        the speed over the last valid segment is below `STOP_SPEED_MPS`;
  * `accelerate`  otherwise, final speed - current speed > `SPEED_CHANGE_MPS`;
  * `decelerate`  otherwise, final speed - current speed < -`SPEED_CHANGE_MPS`;
  * `keep`        otherwise.
  The current speed is the measured ego speed when given, else the speed over the first segment (0 to 0.5 s).

Path (from the last valid waypoint and the heading of the last segment longer than `MIN_HEADING_SEGMENT_M`),
first match wins:
  * `straight`           the ego travels less than `MIN_TRAVEL_M` in total (nothing to steer);
  * `left/right turn`    final heading beyond +/-`TURN_HEADING_RAD` (positive = left, counter-clockwise);
  * `left/right lane change`  final lateral offset beyond +/-`LANE_CHANGE_LATERAL_M` (positive y = left);
  * `straight`           otherwise.
  Without a map a long gentle curve that shifts the ego sideways by more than `LANE_CHANGE_LATERAL_M` while turning
  less than `TURN_HEADING_RAD` reads as a lane change.

The high-level command of UniAD and VAD (`DRIVING_COMMANDS`, `command_from_trajectory`) comes from the same future:
VAD's `tools/data_converter/vad_nuscenes_converter.py` (`_fill_trainval_infos`) takes the lateral offset of the last
future position (the last valid one, held past the scene end) and says "Turn Right" at >= 2 m to the right, "Turn
Left" at >= 2 m to the left, else "Go Straight" (UniAD plans with the same three commands). VAD measures the
position of the LIDAR_TOP sensor in its keyframe frame (x to the right), we that of the ego origin in the ego frame
(y to the left): the nuScenes lidar sits on the centre line about 0.9 m ahead of the origin, so after a heading change
the two lateral offsets differ by that lever arm times its sine (less than 0.9 m, only in turns). Being derived from
the future trajectory, the command leaks the ground truth on nuScenes (and on the sim): a planner given it knows
where the logged ego turned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import DRIVING_COMMANDS, NUM_WAYPOINTS, PATH_ACTIONS, SPEED_ACTIONS, WAYPOINT_STEP_S

STOP_SPEED_MPS: float = 0.5  # 0.25 m or less over the last 0.5 s
SPEED_CHANGE_MPS: float = 1.0
MIN_TRAVEL_M: float = 1.0
MIN_HEADING_SEGMENT_M: float = 0.2
TURN_HEADING_RAD: float = float(np.deg2rad(20.0))
LANE_CHANGE_LATERAL_M: float = 1.5  # about half a 3.5 m lane
COMMAND_LATERAL_M: float = 2.0  # VAD / UniAD: the final lateral offset that makes a turn command

_SEPARATOR = ", "


@dataclass(frozen=True)
class MetaAction:
    """A driving decision: `speed` in `SPEED_ACTIONS`, `path` in `PATH_ACTIONS`."""

    speed: str
    path: str

    def __post_init__(self) -> None:
        if self.speed not in SPEED_ACTIONS:
            raise ValueError(f"speed: expected one of {SPEED_ACTIONS}, got {self.speed!r}")
        if self.path not in PATH_ACTIONS:
            raise ValueError(f"path: expected one of {PATH_ACTIONS}, got {self.path!r}")

    def to_text(self) -> str:
        """Text form, e.g. `"keep, straight"`."""
        return f"{self.speed}{_SEPARATOR}{self.path}"

    @classmethod
    def from_text(cls, text: str) -> MetaAction:
        """Parse `"<speed>, <path>"` (surrounding whitespace and case ignored); ValueError if not in the vocabulary."""
        parts = text.strip().lower().split(_SEPARATOR.strip())
        if len(parts) != 2:
            raise ValueError(f"meta_action: expected '<speed>, <path>', got {text!r}")
        return cls(speed=parts[0].strip(), path=parts[1].strip())


def all_meta_actions() -> list[MetaAction]:
    """Every meta-action of the vocabulary, speed-major in the order of the constants (20 in all)."""
    return [MetaAction(speed, path) for speed in SPEED_ACTIONS for path in PATH_ACTIONS]


# The text of every meta-action in `all_meta_actions` order: the names of the datasets' `meta_action` class label.
META_ACTION_NAMES: tuple[str, ...] = tuple(action.to_text() for action in all_meta_actions())


def _valid_waypoints(trajectory: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs and return the valid waypoints with the origin prepended (K+1, 2) and their times (K+1,)."""
    trajectory = np.asarray(trajectory, dtype=np.float64)
    if trajectory.shape != (NUM_WAYPOINTS, 2):
        raise ValueError(f"trajectory: expected ({NUM_WAYPOINTS}, 2), got {trajectory.shape}")
    mask = np.ones(NUM_WAYPOINTS, dtype=bool) if mask is None else np.asarray(mask)
    if mask.shape != (NUM_WAYPOINTS,) or mask.dtype != bool:
        raise ValueError(f"trajectory_mask: expected ({NUM_WAYPOINTS},) bool, got {mask.shape} {mask.dtype}")
    if not mask.any():
        raise ValueError("trajectory_mask: no valid waypoint, a meta-action needs at least one")
    if not np.isfinite(trajectory[mask]).all():
        raise ValueError("trajectory: valid waypoints must be finite")
    times_s = WAYPOINT_STEP_S * np.arange(1, NUM_WAYPOINTS + 1)
    points = np.concatenate([np.zeros((1, 2)), trajectory[mask]])
    return points, np.concatenate([[0.0], times_s[mask]])


def command_from_trajectory(trajectory: np.ndarray, *, mask: np.ndarray | None = None) -> str:
    """The UniAD / VAD high-level command (one of `DRIVING_COMMANDS`) of a future trajectory (6, 2) m, ego frame,
    with its mask (6,) bool: from the lateral offset of the last valid waypoint (module docstring); "go straight"
    without any valid waypoint (VAD then holds the ego at its current position). Leaks the ground truth."""
    if mask is not None and np.asarray(mask).shape == (NUM_WAYPOINTS,) and not np.asarray(mask).any():
        return DRIVING_COMMANDS[2]
    lateral_m = float(_valid_waypoints(trajectory, mask)[0][-1, 1])  # y: positive to the left
    if lateral_m <= -COMMAND_LATERAL_M:
        return DRIVING_COMMANDS[1]
    return DRIVING_COMMANDS[0] if lateral_m >= COMMAND_LATERAL_M else DRIVING_COMMANDS[2]


def classify_speed(
    trajectory: np.ndarray, *, current_speed_mps: float | None = None, mask: np.ndarray | None = None
) -> str:
    """Speed part of the meta-action for a future trajectory (6, 2) in metres, ego frame; see the module docstring."""
    points, times_s = _valid_waypoints(trajectory, mask)
    speeds_mps = np.linalg.norm(np.diff(points, axis=0), axis=1) / np.diff(times_s)  # (K,)
    final_mps = speeds_mps[-1]
    if final_mps < STOP_SPEED_MPS:
        return "stop"
    start_mps = speeds_mps[0] if current_speed_mps is None else float(current_speed_mps)
    if not np.isfinite(start_mps):
        raise ValueError(f"current_speed_mps: expected a finite number, got {current_speed_mps}")
    change_mps = final_mps - start_mps
    if change_mps > SPEED_CHANGE_MPS:
        return "accelerate"
    if change_mps < -SPEED_CHANGE_MPS:
        return "decelerate"
    return "keep"


def classify_path(trajectory: np.ndarray, *, mask: np.ndarray | None = None) -> str:
    """Path part of the meta-action for a future trajectory (6, 2) in metres, ego frame; see the module docstring."""
    points, _ = _valid_waypoints(trajectory, mask)
    segments = np.diff(points, axis=0)  # (K, 2)
    lengths_m = np.linalg.norm(segments, axis=1)
    long_enough = np.flatnonzero(lengths_m > MIN_HEADING_SEGMENT_M)
    if lengths_m.sum() < MIN_TRAVEL_M or long_enough.size == 0:
        return "straight"
    last = segments[long_enough[-1]]
    heading_rad = np.arctan2(last[1], last[0])
    if heading_rad > TURN_HEADING_RAD:
        return "left turn"
    if heading_rad < -TURN_HEADING_RAD:
        return "right turn"
    lateral_m = points[-1, 1]
    if lateral_m > LANE_CHANGE_LATERAL_M:
        return "left lane change"
    if lateral_m < -LANE_CHANGE_LATERAL_M:
        return "right lane change"
    return "straight"


def meta_action_from_trajectory(
    trajectory: np.ndarray, *, current_speed_mps: float | None = None, mask: np.ndarray | None = None
) -> MetaAction:
    """Meta-action of a future trajectory (6, 2) in metres, ego frame; `mask` (6,) bool marks valid waypoints."""
    return MetaAction(
        speed=classify_speed(trajectory, current_speed_mps=current_speed_mps, mask=mask),
        path=classify_path(trajectory, mask=mask),
    )
