"""Closed-loop driving metrics from the ground truth of a run: NAVSIM's PDM score and a Bench2Drive driving score.

**NAVSIM PDM score** (autonomousvision/navsim v1: `docs/metrics.md`; `navsim/evaluate/pdm_score.py::pdm_score`;
`navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py::PDMScorer`, `pdm_comfort_metrics.py`,
`pdm_scorer_utils.py::get_collision_type`; nuPlan's `idm/utils.py` for `is_agent_ahead/behind`, `is_track_stopped`):

    PDMS = NC * DAC * (5 * TTC + 5 * EP + 2 * C) / 12

* NC, no at-fault collision, {0, 1/2, 1}: at each step, every object whose box intersects the ego box is classified
  (`collision_type`): ego stopped (speed <= 0.05 m/s) -> not at fault; object stopped (static, or speed <= 0.05) ->
  at fault; object behind the ego (more than 150 deg off its heading, seen from the rear axle) -> rear, not at fault;
  the ego's front bumper (front-left to front-right corner) touches it -> front, at fault; otherwise lateral, at
  fault only while the ego straddles lanes or leaves the drivable area. An at-fault collision with a vehicle,
  pedestrian or cyclist gives 0, with any other object 1/2; objects of not-at-fault collisions are ignored after.
* DAC, drivable-area compliance, {0, 1}: 0 once a corner of the ego box leaves the drivable area.
* TTC, {0, 1}: 0 if the ego box, moved ahead at the current speed and heading by 0, 0.3, 0.6 and 0.9 s, meets an
  object at that later time (ego at >= 5e-3 m/s) which is ahead of the ego (within 30 deg of its heading) or, while
  the ego straddles lanes, is off the drivable area or in the junction, not behind it; objects met otherwise are
  ignored after.
* EP, ego progress, [0, 1]: route progress (the box centre's, start to end) over the expert's, each masked by its
  NC * DAC (the expert's taken as 1); the ratio to the larger of the two, and 1 (0 where NC * DAC = 0) when both
  progress less than 5 m.
* C, comfort, {0, 1}: Savitzky-Golay-filtered longitudinal acceleration in (-4.05, 2.40) m/s^2, lateral
  acceleration within +-4.89 m/s^2, jerk within +-8.37 and longitudinal jerk within +-4.13 m/s^3, yaw rate within
  +-0.95 rad/s and yaw acceleration within +-1.93 rad/s^2, with NAVSIM's filter windows (the yaw derivatives use
  its default 5-sample window). As in NAVSIM, whose kinematic bicycle states carry no lateral acceleration
  (`batch_kinematic_bicycle.py` sets ACCELERATION_Y to 0), the lateral acceleration is 0 and its bound never binds.

NAVSIM scores a 4 s non-reactive simulation of each planned trajectory at 0.1 s steps. Here one score covers a whole
closed-loop run, sampled at the same 0.1 s (`METRIC_STEP_S`): NC, DAC and TTC are taken over every step of the run,
EP compares the run's route progress with that of the expert's run of the same scenario and agent mode (the
reference, as NAVSIM's is PDM-Closed in the same simulation), and C asks every 4 s window starting at a planning tick
(or the whole run, when shorter) to be comfortable. TTC looks ahead only within the run.

**Bench2Drive driving score** (Thinklab-SJTU/Bench2Drive `leaderboard/leaderboard/utils/statistics_manager.py`:
`PENALTY_VALUE_DICT`, `compute_route_statistics`; success as in `tools/merge_reoute_json.py`):

    DS = RC * prod over infractions of their penalty   (pedestrian 0.5, vehicle 0.6, static object 0.65, red light 0.7)
    success = the route is completed (RC = 1) with no infraction and no route deviation

RC is the route progress over the route length (capped at 1), progress as scenario_runner's `RouteCompletionTest`
counts it: route points are passed in order, each once the ego lies ahead of it along the route's direction, looking
`ROUTE_WINDOW_M` ahead per step (its window of 2 one-metre waypoints at 20 Hz, scaled to 0.1 s steps). The route is
the ego's lane path from the takeover to the expert's progress `ROUTE_END_SLACK_S` before the time limit (the time
limit is generous by that much); a run ends when the ego strays more than 30 m from its route (scenario_runner's
`InRouteTest`, offroad_max = 30 m), which also fails it. A collision counts once per object, and only when
NAVSIM's classification puts it at the ego's fault: CARLA counts every collision, but its traffic does not drive into
a braking ego, while the non-reactive agents here replay their log whatever the ego does. Cyclists count as
vehicles (as in CARLA); buildings, trees, cones and barriers as static objects. A red light is run when the ego
passes its route's stop line while its signal shows red: scenario_runner's `RunningRedLightTest` (atomic_criteria.py)
tests the segment from 0.8 to 1 half-length (+ 1 m) behind the box centre against the stop line, so the infraction
comes when the point 0.8 half-lengths behind the centre crosses it (a car creeping over the line does not run it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.signal import savgol_filter

from occvla_hf.constants import BOX_FIELDS
from occvla_hf.evaluation.planning import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M, box_corners_xy
from occvla_hf.sim.closed_loop import EpisodeRecord, drivable, in_junction, lane_ids, route_progress
from occvla_hf.sim.geometry import Polyline

METRIC_STEP_S: float = 0.1  # NAVSIM's trajectory sampling interval

# PDMS weights and thresholds (PDMScorerConfig).
TTC_WEIGHT: float = 5.0
PROGRESS_WEIGHT: float = 5.0
COMFORT_WEIGHT: float = 2.0
PROGRESS_DISTANCE_THRESHOLD_M: float = 5.0
TTC_STOPPED_SPEED_MPS: float = 5e-3
TTC_LOOKAHEAD_STEPS: tuple[int, ...] = (0, 3, 6, 9)  # np.arange(0, 10, 3) at 0.1 s
COLLISION_STOPPED_SPEED_MPS: float = 5e-2  # get_collision_type / is_track_stopped
AHEAD_ANGLE_DEG: float = 30.0  # nuPlan is_agent_ahead
BEHIND_ANGLE_DEG: float = 150.0  # nuPlan is_agent_behind
AT_FAULT_SCORE_OBJECT: float = 0.5  # NC after an at-fault collision with a non-agent object
RED_LIGHT_TAIL_FRACTION: float = 0.8  # RunningRedLightTest's tail_close_pt: 0.8 half-lengths behind the centre
COMFORT_WINDOW_S: float = 4.0  # NAVSIM's simulation horizon
ROUTE_END_SLACK_S: float = 1.0  # the route ends where the expert is this long before the time limit
ROUTE_WINDOW_M: float = 10.0  # route points a step may pass (RouteCompletionTest looks 2 waypoints ahead at 20 Hz)

# Comfort bounds (pdm_comfort_metrics.py).
MAX_ABS_JERK_MPS3: float = 8.37
MAX_ABS_LAT_ACCEL_MPS2: float = 4.89
MAX_LON_ACCEL_MPS2: float = 2.40
MIN_LON_ACCEL_MPS2: float = -4.05
MAX_ABS_YAW_ACCEL_RADPS2: float = 1.93
MAX_ABS_LON_JERK_MPS3: float = 4.13
MAX_ABS_YAW_RATE_RADPS: float = 0.95

# Bench2Drive penalties (PENALTY_VALUE_DICT) of the infractions the sim can produce.
INFRACTION_PENALTIES: dict[str, float] = {
    "collision_pedestrian": 0.5,
    "collision_vehicle": 0.6,
    "collision_static": 0.65,
    "red_light": 0.7,
}
# Object kinds: the behaviour model's agent kinds plus "layout" (buildings, trees).
AGENT_KINDS: frozenset[str] = frozenset({"vehicle", "cycle", "pedestrian"})  # nuPlan AGENT_TYPES
_COLLISION_INFRACTION = {
    "pedestrian": "collision_pedestrian",
    "vehicle": "collision_vehicle",
    "cycle": "collision_vehicle",
    "object": "collision_static",
    "layout": "collision_static",
}
COLLISION_TYPES: tuple[str, ...] = ("stopped_ego", "stopped_track", "active_rear", "active_front", "active_lateral")
_EGO_HEIGHT_M = 1.6  # static boxes starting above it (tree crowns) cannot be hit


# ----------------------------------------------------------------------------------------------------- geometry


def convex_overlap(polygon: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N,) bool: convex `polygon` (P, 2) intersects each convex polygon of `others` (N, Q, 2), touching included
    (shapely's `intersects`). Vertices in order; a 2-vertex polygon is a segment (separating axis test)."""
    if len(others) == 0:
        return np.zeros(0, dtype=bool)
    shapes = [np.broadcast_to(polygon, (len(others), *polygon.shape)), others]
    axes = []
    for shape in shapes:
        edges = np.roll(shape, -1, axis=1) - shape
        axes.append(np.stack([-edges[..., 1], edges[..., 0]], axis=-1))
    axes = np.concatenate(axes, axis=1)  # (N, A, 2)
    proj_a = np.einsum("nak,npk->nap", axes, shapes[0])
    proj_b = np.einsum("nak,nqk->naq", axes, shapes[1])
    separated = (proj_a.max(-1) < proj_b.min(-1)) | (proj_b.max(-1) < proj_a.min(-1))
    return ~separated.any(axis=1)


def ego_corners(xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(T, 4, 2) corners of the ego box (front-left, rear-left, rear-right, front-right) from its origins (T, 2) and
    headings (T,): EGO_LENGTH_M x EGO_WIDTH_M, centre EGO_CENTER_OFFSET_M ahead of the origin."""
    xy, yaw = np.asarray(xy, dtype=np.float64), np.asarray(yaw, dtype=np.float64)
    boxes = np.zeros((len(xy), len(BOX_FIELDS)))
    centre = xy + EGO_CENTER_OFFSET_M * np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)
    boxes[:, [BOX_FIELDS.index("x"), BOX_FIELDS.index("y")]] = centre
    boxes[:, BOX_FIELDS.index("length")] = EGO_LENGTH_M
    boxes[:, BOX_FIELDS.index("width")] = EGO_WIDTH_M
    boxes[:, BOX_FIELDS.index("yaw")] = yaw
    return box_corners_xy(boxes)


def _relative_angle(ego_xy: np.ndarray, ego_yaw: float, points: np.ndarray) -> np.ndarray:
    """(N,) angle (rad) between the ego heading and the directions to `points` (N, 2); NaN at the ego origin (nuPlan
    `get_agent_relative_angle`, whose comparisons are then False)."""
    vectors = points - ego_xy
    norms = np.linalg.norm(vectors, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (vectors @ np.array([np.cos(ego_yaw), np.sin(ego_yaw)])) / norms
    return np.arccos(np.clip(cosine, -1.0, 1.0))


# ------------------------------------------------------------------------------------------------------ tracks


@dataclass(frozen=True)
class EgoTrack:
    """The ego at T metric steps: origins (T, 2), headings, speeds, longitudinal accelerations (T,), times (T,) and the
    map around it: `off_drivable` (a corner off the drivable area), `multiple_lanes` (corners in more than one
    lane), `in_junction` (the origin inside the junction box), all (T,) bool."""

    times_s: np.ndarray
    xy: np.ndarray
    yaw: np.ndarray
    speed_mps: np.ndarray
    accel_mps2: np.ndarray
    off_drivable: np.ndarray
    multiple_lanes: np.ndarray
    in_junction: np.ndarray

    @property
    def corners(self) -> np.ndarray:
        return ego_corners(self.xy, self.yaw)

    @property
    def center_xy(self) -> np.ndarray:
        return self.xy + EGO_CENTER_OFFSET_M * np.stack([np.cos(self.yaw), np.sin(self.yaw)], axis=-1)


@dataclass(frozen=True)
class ObjectTrack:
    """N objects at the same T steps: boxes (T, N, 5) as (x, y, length, width, yaw) of their centres, speeds and
    presence (T, N), and kinds (N,): "vehicle", "cycle", "pedestrian", "object" or "layout"."""

    boxes: np.ndarray
    speed_mps: np.ndarray
    present: np.ndarray
    kinds: tuple[str, ...]

    def corners(self, t: int, index: np.ndarray) -> np.ndarray:
        """(M, 4, 2) footprint corners of objects `index` at step t."""
        b = self.boxes[t, index]
        full = np.zeros((len(index), len(BOX_FIELDS)))
        for column, name in zip((0, 1, 2, 3, 4), ("x", "y", "length", "width", "yaw")):
            full[:, BOX_FIELDS.index(name)] = b[:, column]
        return box_corners_xy(full)

    def near(self, t: int, xy: np.ndarray, radius_m: float) -> np.ndarray:
        """Indices of the objects present at step t whose footprint may come within `radius_m` of `xy`."""
        reach = np.hypot(self.boxes[t, :, 2], self.boxes[t, :, 3]) / 2.0 + radius_m
        distance = np.hypot(*(self.boxes[t, :, :2] - xy).T)
        return np.flatnonzero(self.present[t] & (distance < reach))


# ------------------------------------------------------------------------------------------------ PDMS parts


@dataclass(frozen=True)
class CollisionEvent:
    """The first contact with an object: step, object index, `COLLISION_TYPES` entry and whether it is at fault."""

    step: int
    index: int
    collision_type: str
    at_fault: bool


_EGO_REACH_M = float(np.hypot(EGO_LENGTH_M, EGO_WIDTH_M)) / 2.0 + EGO_CENTER_OFFSET_M


def collision_type(
    ego_xy: np.ndarray,
    ego_yaw: float,
    ego_speed: float,
    ego_polygon: np.ndarray,
    object_polygon: np.ndarray,
    object_speed: float,
    object_kind: str,
) -> str:
    """NAVSIM's `get_collision_type` for one contact: ego origin (2,), heading, speed, box (4, 2); the object's box
    (4, 2), speed and kind (objects that are not agents count as stopped)."""
    if ego_speed <= COLLISION_STOPPED_SPEED_MPS:
        return "stopped_ego"
    if object_kind not in AGENT_KINDS or object_speed <= COLLISION_STOPPED_SPEED_MPS:
        return "stopped_track"
    if _relative_angle(ego_xy, ego_yaw, object_polygon.mean(axis=0)[None])[0] > np.deg2rad(BEHIND_ANGLE_DEG):
        return "active_rear"
    if convex_overlap(ego_polygon[[0, 3]], object_polygon[None])[0]:
        return "active_front"
    return "active_lateral"


def no_at_fault_collisions(ego: EgoTrack, objects: ObjectTrack) -> tuple[float, list[CollisionEvent]]:
    """NC and the first contact with each object (see the module docstring)."""
    corners = ego.corners
    centres = ego.center_xy
    score = 1.0
    ignored: set[int] = set()
    events: dict[int, CollisionEvent] = {}
    for t in range(len(ego.times_s)):
        candidates = [j for j in objects.near(t, centres[t], _EGO_REACH_M) if j not in ignored]
        if not candidates:
            continue
        candidates = np.array(candidates)
        polygons = objects.corners(t, candidates)
        touching = convex_overlap(corners[t], polygons)
        for j, polygon in zip(candidates[touching], polygons[touching]):
            kind = objects.kinds[j]
            ctype = collision_type(
                ego.xy[t], ego.yaw[t], ego.speed_mps[t], corners[t], polygon, objects.speed_mps[t, j], kind
            )
            straddling = bool(ego.multiple_lanes[t] or ego.off_drivable[t])
            at_fault = ctype in ("active_front", "stopped_track") or (straddling and ctype == "active_lateral")
            if at_fault:
                score = min(score, 0.0 if kind in AGENT_KINDS else AT_FAULT_SCORE_OBJECT)
            else:
                ignored.add(int(j))
            events.setdefault(int(j), CollisionEvent(t, int(j), ctype, at_fault))
    return score, sorted(events.values(), key=lambda e: (e.step, e.index))


def drivable_area_compliance(ego: EgoTrack) -> float:
    """DAC: 0 once a corner of the ego box leaves the drivable area, else 1."""
    return 0.0 if ego.off_drivable.any() else 1.0


def time_to_collision_within_bound(ego: EgoTrack, objects: ObjectTrack) -> tuple[float, int | None]:
    """TTC and the first step that fails it (None if none)."""
    corners = ego.corners
    heading = np.stack([np.cos(ego.yaw), np.sin(ego.yaw)], axis=-1)
    ignored: set[int] = set()
    for t in range(len(ego.times_s)):
        if ego.speed_mps[t] < TTC_STOPPED_SPEED_MPS:
            continue
        for lookahead in TTC_LOOKAHEAD_STEPS:
            later = t + lookahead
            if later >= len(ego.times_s):
                break
            shift = heading[t] * ego.speed_mps[t] * lookahead * METRIC_STEP_S
            polygon = corners[t] + shift
            candidates = [j for j in objects.near(later, polygon.mean(axis=0), _EGO_REACH_M) if j not in ignored]
            if not candidates:
                continue
            candidates = np.array(candidates)
            hits = candidates[convex_overlap(polygon, objects.corners(later, candidates))]
            if len(hits) == 0:
                continue
            angles = _relative_angle(ego.xy[t], ego.yaw[t], objects.boxes[later, hits, :2])
            exposed = ego.multiple_lanes[t] or ego.off_drivable[t] or ego.in_junction[t]
            with np.errstate(invalid="ignore"):
                ahead = angles < np.deg2rad(AHEAD_ANGLE_DEG)
                not_behind = ~(angles > np.deg2rad(BEHIND_ANGLE_DEG))
            failing = ahead | (exposed & not_behind)
            if failing.any():
                return 0.0, t
            ignored.update(int(j) for j in hits)
    return 1.0, None


def ego_progress_score(progress_m: float, expert_progress_m: float, multiplier: float) -> float:
    """EP: the ego's route progress (metres) against the expert's, both clipped at 0; `multiplier` is the ego's
    NC * DAC (the expert's is taken as 1)."""
    raw = max(progress_m, 0.0) * multiplier
    best = max(raw, max(expert_progress_m, 0.0))
    if best > PROGRESS_DISTANCE_THRESHOLD_M:
        return raw / best
    return 1.0 if multiplier > 0.0 else 0.0


def _within(values: np.ndarray, low: float, high: float) -> bool:
    return bool(np.all((values > low) & (values < high)))


def _derivative(values: np.ndarray, dt: float, deriv: int, polyorder: int, window: int) -> np.ndarray:
    """NAVSIM's `_approximate_derivatives`: a Savitzky-Golay derivative, window capped at the length."""
    window = min(window, len(values))
    return savgol_filter(values, polyorder=polyorder, window_length=window, deriv=deriv, delta=dt)


def is_comfortable(accel_lon: np.ndarray, accel_lat: np.ndarray, yaw: np.ndarray, dt: float) -> bool:
    """NAVSIM's `ego_is_comfortable` over one window of n >= 4 states (n = 41 in NAVSIM): accelerations (n,) in
    the ego frame (m/s^2), headings (n,) (rad), at `dt` spacing."""
    n = len(yaw)
    if n < 4:
        raise ValueError(f"yaw: expected at least 4 states, got {n}")

    def acceleration(values: np.ndarray, window: int) -> np.ndarray:
        return np.round(savgol_filter(values, polyorder=2, window_length=min(window, n)), 8)

    magnitude = np.hypot(accel_lon, accel_lat)
    heading = np.unwrap(yaw)  # NAVSIM's _phase_unwrap
    checks = (
        _within(acceleration(accel_lon, n), MIN_LON_ACCEL_MPS2, MAX_LON_ACCEL_MPS2),
        _within(acceleration(accel_lat, n), -MAX_ABS_LAT_ACCEL_MPS2, MAX_ABS_LAT_ACCEL_MPS2),
        _within(
            np.round(_derivative(acceleration(magnitude, 8), dt, 1, 2, n), 8), -MAX_ABS_JERK_MPS3, MAX_ABS_JERK_MPS3
        ),
        _within(
            np.round(_derivative(acceleration(accel_lon, 8), dt, 1, 2, n), 8),
            -MAX_ABS_LON_JERK_MPS3,
            MAX_ABS_LON_JERK_MPS3,
        ),
        _within(np.round(_derivative(heading, dt, 2, 3, 5), 8), -MAX_ABS_YAW_ACCEL_RADPS2, MAX_ABS_YAW_ACCEL_RADPS2),
        _within(np.round(_derivative(heading, dt, 1, 2, 5), 8), -MAX_ABS_YAW_RATE_RADPS, MAX_ABS_YAW_RATE_RADPS),
    )
    return all(checks)


def comfort_score(ego: EgoTrack, window_starts_s: Iterable[float]) -> float:
    """C: 1 if every window of COMFORT_WINDOW_S from each start time (that fits in the run) is comfortable; a run
    shorter than one window is judged whole."""
    steps = round(COMFORT_WINDOW_S / METRIC_STEP_S) + 1
    starts = [int(np.searchsorted(ego.times_s, t - 1e-9)) for t in window_starts_s]
    windows = [(s, s + steps) for s in starts if s + steps <= len(ego.times_s)] or [(0, len(ego.times_s))]
    lateral = np.zeros_like(ego.accel_mps2)
    for lo, hi in windows:
        if hi - lo >= 4 and not is_comfortable(ego.accel_mps2[lo:hi], lateral[lo:hi], ego.yaw[lo:hi], METRIC_STEP_S):
            return 0.0
    return 1.0


def pdm_score(nc: float, dac: float, ttc: float, ep: float, comfort: float) -> float:
    """NC * DAC * (5 TTC + 5 EP + 2 C) / 12."""
    weighted = TTC_WEIGHT * ttc + PROGRESS_WEIGHT * ep + COMFORT_WEIGHT * comfort
    return nc * dac * weighted / (TTC_WEIGHT + PROGRESS_WEIGHT + COMFORT_WEIGHT)


# ------------------------------------------------------------------------------------------ Bench2Drive parts


@dataclass(frozen=True)
class Infraction:
    """An infraction of `INFRACTION_PENALTIES` at `time_s` (object index for collisions, else -1)."""

    kind: str
    time_s: float
    index: int = -1


def route_completion(progress_m: float, route_length_m: float) -> float:
    """RC in [0, 1]: the progress along the route over its length (1 for a route shorter than a metre)."""
    if route_length_m < 1.0:
        return 1.0
    return float(np.clip(progress_m / route_length_m, 0.0, 1.0))


def infraction_penalty(infractions: Iterable[Infraction | str]) -> float:
    """The product of the penalties of the infractions (Bench2Drive `compute_route_statistics`)."""
    penalty = 1.0
    for infraction in infractions:
        kind = infraction if isinstance(infraction, str) else infraction.kind
        if kind not in INFRACTION_PENALTIES:
            raise ValueError(f"infractions: unknown kind {kind!r}; expected one of {list(INFRACTION_PENALTIES)}")
        penalty *= INFRACTION_PENALTIES[kind]
    return penalty


def driving_score(route_completion_value: float, penalty: float) -> float:
    """DS = RC * infraction penalty."""
    return route_completion_value * penalty


def red_light_crossings(
    tail_s: np.ndarray, times_s: np.ndarray, stop_line_s: float, signal_state: Sequence[str]
) -> list[float]:
    """Times at which the ego's red-light test point (its route arc lengths (T,), RED_LIGHT_TAIL_FRACTION half-lengths
    behind the box centre) passes the stop line while `signal_state` (T,) is "red"."""
    crossed = (tail_s[:-1] < stop_line_s) & (tail_s[1:] >= stop_line_s)
    return [float(times_s[t + 1]) for t in np.flatnonzero(crossed) if signal_state[t + 1] == "red"]


# ------------------------------------------------------------------------------------------------ one run


@dataclass
class EpisodeMetrics:
    """All scores of one run (see the module docstring)."""

    pdms: float
    nc: float
    dac: float
    ttc: float
    ep: float
    comfort: float
    route_completion: float
    infraction_penalty: float
    driving_score: float
    success: bool
    route_deviation: bool
    progress_m: float
    expert_progress_m: float
    infractions: list[Infraction] = field(default_factory=list)
    collisions: list[CollisionEvent] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def episode_tracks(record: EpisodeRecord, with_objects: bool = True) -> tuple[EgoTrack, ObjectTrack | None]:
    """The ego and every object (agents, then buildings and tree trunks; None unless `with_objects`) of a run at
    METRIC_STEP_S steps."""
    control_dt = float(record.ego_times_s[1] - record.ego_times_s[0]) if len(record.ego_times_s) > 1 else 0.05
    stride = round(METRIC_STEP_S / control_dt)
    if abs(stride * control_dt - METRIC_STEP_S) > 1e-9:
        raise ValueError(f"record: control step {control_dt} s does not divide the metric step {METRIC_STEP_S} s")
    states = record.ego_states[::stride]
    times = record.ego_times_s[::stride]
    xy, yaw = states[:, :2], states[:, 2]
    corners = ego_corners(xy, yaw)
    corner_lanes = lane_ids(record.world, corners)  # (T, 4)
    multiple = np.array([len({int(i) for i in row if i >= 0}) > 1 for row in corner_lanes])
    ego = EgoTrack(
        times_s=times,
        xy=xy,
        yaw=yaw,
        speed_mps=states[:, 3],
        accel_mps2=states[:, 4],
        off_drivable=~drivable(record.world, corners).all(axis=1),
        multiple_lanes=multiple,
        in_junction=in_junction(record.world, xy),
    )
    if not with_objects:
        return ego, None
    # Agents: linear interpolation between simulation steps (headings unwrapped), present at both ends.
    sim_t = record.agent_times_s
    position = np.clip(np.interp(times, sim_t, np.arange(len(sim_t))), 0, len(sim_t) - 1)
    lo = np.floor(position).astype(int)
    hi = np.minimum(lo + 1, len(sim_t) - 1)
    w = (position - lo)[:, None]
    agent_xy = record.agent_xy[lo] * (1 - w[..., None]) + record.agent_xy[hi] * w[..., None]
    yaw_unwrapped = np.unwrap(record.agent_yaw, axis=0)
    agent_yaw = yaw_unwrapped[lo] * (1 - w) + yaw_unwrapped[hi] * w
    agent_speed = record.agent_speed[lo] * (1 - w) + record.agent_speed[hi] * w
    present = record.agent_active[lo] & record.agent_active[hi]
    sizes = record.agent_sizes
    agent_boxes = np.concatenate(
        [agent_xy, np.broadcast_to(sizes[None, :, :2], (len(times), *sizes[:, :2].shape)), agent_yaw[..., None]],
        axis=-1,
    )
    static = record.world.static
    low = static.centers[:, 2] - static.sizes[:, 2] / 2.0 < _EGO_HEIGHT_M
    static_boxes = np.column_stack([static.centers[low, :2], static.sizes[low, :2], static.yaws[low]])
    num_static = len(static_boxes)
    objects = ObjectTrack(
        boxes=np.concatenate([agent_boxes, np.broadcast_to(static_boxes, (len(times), num_static, 5))], axis=1),
        speed_mps=np.concatenate([agent_speed, np.zeros((len(times), num_static))], axis=1),
        present=np.concatenate([present, np.ones((len(times), num_static), dtype=bool)], axis=1),
        kinds=(*record.agent_kinds, *("layout",) * num_static),
    )
    return ego, objects


def route_points_passed(route: Polyline, xy: np.ndarray, start_s: float) -> np.ndarray:
    """(T,) route arc length (m, from `start_s`) passed by a path of points (T, 2), as `RouteCompletionTest` passes
    waypoints: in order, each once the point lies ahead of it along the route, at most ROUTE_WINDOW_M per step."""
    index = int(np.searchsorted(route.s, start_s))
    directions = np.stack([np.cos(route.headings), np.sin(route.headings)], axis=1)
    passed = np.zeros(len(xy))
    for t, point in enumerate(np.asarray(xy, dtype=np.float64)):
        window = np.arange(index + 1, int(np.searchsorted(route.s, route.s[index] + ROUTE_WINDOW_M, side="right")))
        ahead = np.einsum("kd,kd->k", point - route.points[window], directions[window]) > 0.0
        if ahead.any():
            index = int(window[np.flatnonzero(ahead)[-1]])
        passed[t] = max(route.s[index] - start_s, 0.0)
    return passed


def reference_progress(reference: EpisodeRecord, duration_s: float) -> tuple[float, float]:
    """The expert run's route progress (m, NAVSIM's) over `duration_s` from the takeover, and the route length it
    sets: its passed route ROUTE_END_SLACK_S earlier."""
    ego, _ = episode_tracks(reference, with_objects=False)
    centre_s, _ = route_progress(reference.route, ego.center_xy, reference.route_start_s)
    passed = route_points_passed(reference.route, ego.center_xy, reference.route_start_s)
    elapsed = ego.times_s - ego.times_s[0]
    end = min(int(np.searchsorted(elapsed, duration_s - 1e-9)), len(elapsed) - 1)
    route_end = min(int(np.searchsorted(elapsed, duration_s - ROUTE_END_SLACK_S - 1e-9)), len(elapsed) - 1)
    return float(centre_s[end] - centre_s[0]), float(passed[route_end])


def score_episode(record: EpisodeRecord, reference: EpisodeRecord) -> EpisodeMetrics:
    """PDMS parts and the driving score of one run against the expert's run of the same scenario and agent mode
    (`reference`; the expert's own run is its own reference). Comfort windows start at the run's planning ticks."""
    ego, objects = episode_tracks(record)
    nc, collisions = no_at_fault_collisions(ego, objects)
    dac = drivable_area_compliance(ego)
    ttc, _ = time_to_collision_within_bound(ego, objects)
    centre_s, _ = route_progress(record.route, ego.center_xy, record.route_start_s)
    progress_m = float(centre_s[-1] - centre_s[0])
    expert_progress_m, route_length_m = reference_progress(reference, record.scenario.duration_s)
    ep = ego_progress_score(progress_m, expert_progress_m, nc * dac)
    comfort = comfort_score(ego, [t for t, _ in record.plans])
    infractions = [
        Infraction(_COLLISION_INFRACTION[objects.kinds[e.index]], float(ego.times_s[e.step]), e.index)
        for e in collisions
        if e.at_fault
    ]
    if record.stop_line_s is not None:
        signals = [record.world.signal_state(record.approach, float(t)) for t in ego.times_s]
        tail_s = centre_s - RED_LIGHT_TAIL_FRACTION * EGO_LENGTH_M / 2.0
        crossings = red_light_crossings(tail_s, ego.times_s, record.stop_line_s, signals)
        infractions += [Infraction("red_light", t) for t in crossings]
    infractions.sort(key=lambda i: (i.time_s, i.kind, i.index))
    passed = route_points_passed(record.route, ego.center_xy, record.route_start_s)
    rc = route_completion(float(passed[-1]), route_length_m)
    penalty = infraction_penalty(infractions)
    return EpisodeMetrics(
        pdms=pdm_score(nc, dac, ttc, ep, comfort),
        nc=nc,
        dac=dac,
        ttc=ttc,
        ep=ep,
        comfort=comfort,
        route_completion=rc,
        infraction_penalty=penalty,
        driving_score=driving_score(rc, penalty),
        success=rc >= 1.0 and not infractions and record.termination != "route deviation",
        route_deviation=record.termination == "route deviation",
        progress_m=progress_m,
        expert_progress_m=expert_progress_m,
        infractions=infractions,
        collisions=collisions,
    )


def summarize(metrics: Sequence[EpisodeMetrics | None]) -> dict[str, float | int | dict[str, int]]:
    """Means over runs (a failed run, None, counts as 0 in every score and as no success), the success rate, the
    infraction counts per kind, the runs ended by a route deviation and the number of failed runs."""
    keys = ("pdms", "nc", "dac", "ttc", "ep", "comfort", "driving_score", "route_completion", "infraction_penalty")
    n = len(metrics)
    done = [m for m in metrics if m is not None]
    out: dict[str, float | int | dict[str, int]] = {"num_scenarios": n, "num_failed": n - len(done)}
    for key in keys:
        out[key] = float(sum(getattr(m, key) for m in done) / n) if n else 0.0
    out["success_rate"] = float(sum(m.success for m in done) / n) if n else 0.0
    counts = {kind: 0 for kind in INFRACTION_PENALTIES}
    for m in done:
        for infraction in m.infractions:
            counts[infraction.kind] += 1
    out["infractions"] = counts
    out["route_deviations"] = sum(m.route_deviation for m in done)
    return out
