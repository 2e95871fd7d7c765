"""Reasoning annotations from ground truth: the critical objects, the road situation, the decision and its reason.

A pure, deterministic function of one planning row (format in `occvla_hf.data.hub`) and, where known, the state of
the traffic light the ego faces; a leaf module below both `data` and `sim`, like `meta_action`. The text has three
sentences in a fixed template, at most `MAX_CRITICAL_OBJECTS` objects and `REASONING_MAX_WORDS` words:

  Objects: car in CAM_FRONT at (12.0, 0.0) m, 12.0 m away, moving at 7.0 m/s, braking, approaching.
  Road: ego at 10.0 m/s, lead car 12.0 m ahead.
  Decision: decelerate, straight, because the lead car 12.0 m ahead is braking.

(one line, sentences separated by a space). Positions are box centres in the ego frame of the current keyframe (x
forward, y left, metres, origin at the ego origin), distances from the ego origin; both are rounded to
`DISTANCE_STEP_M`, speeds to `SPEED_STEP_MPS`.

Motion of an object, from the boxes of its instance (all in the current ego frame, so displacements are over ground):
  * velocity: displacement from t = 0 to the first later keyframe k holding the instance, over k * WAYPOINT_STEP_S
    (the nominal keyframe spacing; real nuScenes keyframes are 0.4-0.6 s apart); unknown if no later keyframe does;
  * `stopped` (barriers and cones: `static`) below `MOVING_SPEED_MPS`, else `moving at <speed>`;
  * `braking`: present at t = 0, 1, 2, moving over the first interval, and its speed falls faster than
    `BRAKING_DECEL_MPS2` from the first interval to the second;
  * `crossing`: moving, its velocity across the ego path (at the path point nearest to it) exceeds its velocity
    along it; `oncoming`: moving, not crossing, against the path direction;
  * `approaching` / `receding`: the range rate against the ego velocity is below / above -/+`RANGE_RATE_MPS`
    (nothing said in between, or when the ego or the object velocity is unknown).

Critical objects. The corridor is the ego path, i.e. the origin and the valid future waypoints, extended by
`CORRIDOR_EXTENSION_M` along the heading of its last segment longer than `meta_action.MIN_HEADING_SEGMENT_M`
(straight ahead when the ego hardly moves or has no future); during a lane change the current lane straight ahead,
as long as the path, belongs to the corridor too. A position lies in the corridor when its distance to it is at most
`CORRIDOR_HALF_WIDTH_M` plus half the box width. An object is critical when its category has a word in
`CATEGORY_WORDS` (road users, barriers and cones), its current centre is ahead of the ego origin (x > 0) and any of
its annotated positions at t = 0..6 lies in the corridor (agents that appear after t = 0 are not seen yet). The lead
vehicle is the nearest critical `vehicle.*` object whose current position lies in the corridor and that is neither
crossing nor oncoming.

Hazards: what a critical object means for the ego's speed, first match: crossing; oncoming (in the path);
stopped (blocks the path when in the corridor now, else next to it); braking; velocity unknown (in the path);
receding: no hazard; not yet in the corridor: cutting in (vehicles) or entering the path; approaching: slower (in
the path); else no hazard for a vehicle (it moves along with the ego) and in the path for the others. The lead
vehicle is named as such ("the lead car 12.0 m ahead is braking"). A red or amber light is a hazard at its
stop-line distance (after every object when the distance is unknown).

Reason of the speed decision (the meta-action's speed word), first rule that applies:
  * stop, decelerate: because of the nearest hazard; else, on a turn, to make the turn; else "with no hazard in
    the path";
  * keep, accelerate: the lead vehicle when it is no hazard ("as the lead ... pulls away" when it recedes and the
    ego accelerates, else "to follow the lead ..."); else "while" the nearest hazard; else "because the light is
    green" when the light is known green; else "because the path is clear".
A lane change adds "to pass" the nearest critical object in the current lane that is stopped or slower (it replaces
the speed reason when that reason names the same object). A row without future says "Decision: unknown".

The text names the lead vehicle and the objects of the reasons, then the nearest other critical objects, up to
`MAX_CRITICAL_OBJECTS`, nearest first (ties broken by instance token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from .class_labels import CLASS_LABEL_NAMES, is_class_id, label_name, label_names
from .constants import (
    BOX_FIELDS,
    CAMERA_NAMES,
    CAMERA_YAWS_DEG,
    EGO_STATUS_FEATURES,
    EGO_VELOCITY_FEATURES,
    NUM_BOX_STEPS,
    NUM_WAYPOINTS,
    PATH_ACTIONS,
    TRAFFIC_LIGHT_STATES,
    WAYPOINT_STEP_S,
)
from .geometry import wrap_angle
from .meta_action import MIN_HEADING_SEGMENT_M, MetaAction

MAX_CRITICAL_OBJECTS: int = 3
# Whitespace-separated words of the longest text: "Objects:", 3 objects of at most 18 words, a road sentence of
# at most 16 and a decision of at most 27 make 98.
REASONING_MAX_WORDS: int = 100
CORRIDOR_HALF_WIDTH_M: float = 1.25  # the 1.85 m wide ego and a 0.3 m margin: boxes that would touch it
CORRIDOR_EXTENSION_M: float = 20.0
MOVING_SPEED_MPS: float = 0.5
BRAKING_DECEL_MPS2: float = 1.5  # above the noise of 0.5 s finite differences of annotated boxes
RANGE_RATE_MPS: float = 0.5
DISTANCE_STEP_M: float = 0.5
SPEED_STEP_MPS: float = 0.5

# Word of each category with one, matched as a dotted prefix of the full nuScenes name, first match wins; the other
# categories (debris, pushable objects, bicycle racks) are never critical.
CATEGORY_WORDS: tuple[tuple[str, str], ...] = (
    ("vehicle.bus", "bus"),
    ("vehicle.truck", "truck"),
    ("vehicle.trailer", "trailer"),
    ("vehicle.construction", "construction vehicle"),
    ("vehicle.emergency", "emergency vehicle"),
    ("vehicle.motorcycle", "motorcycle"),
    ("vehicle.bicycle", "bicycle"),
    ("vehicle.car", "car"),
    ("human.pedestrian", "pedestrian"),
    ("movable_object.barrier", "barrier"),
    ("movable_object.trafficcone", "traffic cone"),
    ("animal", "animal"),
)
_VEHICLE_PREFIX = "vehicle."
_NON_ROAD_USER_PREFIX = "movable_object."
_X, _Y, _WIDTH = (BOX_FIELDS.index(name) for name in ("x", "y", "width"))
_VELOCITY_INDICES = [EGO_STATUS_FEATURES.index(name) for name in EGO_VELOCITY_FEATURES]
_TURNS: dict[str, str] = {path: f"to make the {path}" for path in PATH_ACTIONS if path.endswith("turn")}
_LANE_CHANGES: tuple[str, ...] = tuple(path for path in PATH_ACTIONS if path.endswith("lane change"))


@dataclass(frozen=True)
class TrafficLight:
    """The traffic light the ego faces: `state` in TRAFFIC_LIGHT_STATES and, when known, the distance (m, >= 0)
    along the road from the ego origin to its stop line."""

    state: str
    stop_line_m: float | None = None

    def __post_init__(self) -> None:
        if self.state not in TRAFFIC_LIGHT_STATES:
            raise ValueError(f"traffic_light.state: expected one of {TRAFFIC_LIGHT_STATES}, got {self.state!r}")
        distance = self.stop_line_m
        valid = isinstance(distance, Real) and not isinstance(distance, bool) and np.isfinite(distance)
        if distance is not None and not (valid and distance >= 0):
            raise ValueError(f"traffic_light.stop_line_m: expected None or a finite number >= 0, got {distance!r}")


@dataclass(frozen=True)
class CriticalObject:
    """A critical object and what it does (see the module docstring); positions and speeds unrounded."""

    word: str
    instance: str
    is_vehicle: bool  # a `vehicle.*` category
    is_road_user: bool  # vehicles, people, animals (not barriers and cones)
    camera: str
    position_m: tuple[float, float]  # (x, y), ego frame
    distance_m: float
    velocity_mps: tuple[float, float] | None  # over ground, ego frame; None: unknown
    braking: bool
    crossing: bool
    oncoming: bool
    range_rate_mps: float | None  # d(distance)/dt against the ego velocity; None: unknown
    in_corridor_now: bool
    in_current_lane: bool  # during a lane change: the current position lies in the current lane

    @property
    def stopped(self) -> bool:
        return self.velocity_mps is not None and float(np.hypot(*self.velocity_mps)) < MOVING_SPEED_MPS

    @property
    def approaching(self) -> bool:
        return self.range_rate_mps is not None and self.range_rate_mps < -RANGE_RATE_MPS

    @property
    def receding(self) -> bool:
        return self.range_rate_mps is not None and self.range_rate_mps > RANGE_RATE_MPS


@dataclass(frozen=True)
class _Row:
    """A validated planning row: boxes (N_t, 7) per step, categories and instances per step, the valid future
    waypoints (K, 2), the ego velocity (2,) or None, and the meta-action or None (no future)."""

    boxes: list[np.ndarray]
    categories: list[list[str]]
    instances: list[list[str]]
    waypoints: np.ndarray
    ego_velocity: np.ndarray | None
    meta_action: MetaAction | None


# ------------------------------------------------------------------------------------------------------ validation


def _field(row: Mapping[str, Any], name: str) -> Any:
    if name not in row:
        raise ValueError(f"row: missing field {name!r}")
    return row[name]


def _float_array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected a float array of shape {shape}, got {type(value).__name__}") from error
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
    return array


def _bool_array(value: Any, name: str, length: int) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != (length,) or array.dtype != bool:
        raise ValueError(f"{name}: expected ({length},) bool, got {array.shape} {array.dtype}")
    return array


def _steps(value: Any, name: str) -> Sequence:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != NUM_BOX_STEPS:
        raise ValueError(f"{name}: expected {NUM_BOX_STEPS} steps (t = 0..{NUM_BOX_STEPS - 1})")
    return value


def _boxes(value: Any) -> list[np.ndarray]:
    out = []
    for t, step in enumerate(_steps(value, "agent_boxes")):
        name = f"agent_boxes[{t}]"
        try:
            boxes = np.asarray(step, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: expected (N, {len(BOX_FIELDS)}) floats {list(BOX_FIELDS)}") from error
        boxes = boxes.reshape(0, len(BOX_FIELDS)) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != len(BOX_FIELDS):
            raise ValueError(f"{name}: expected (N, {len(BOX_FIELDS)}) {list(BOX_FIELDS)}, got shape {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError(f"{name}: values must be finite (NaN or inf found)")
        out.append(boxes)
    return out


def _names(value: Any, name: str, counts: list[int]) -> list[list[str]]:
    out = []
    for t, step in enumerate(_steps(value, name)):
        names = list(step) if not isinstance(step, (str, bytes)) else None
        if names is not None and name in CLASS_LABEL_NAMES:
            try:
                names = label_names(name, names)  # the class ids of a built dataset, or names
            except (TypeError, ValueError) as error:
                raise ValueError(f"{name}[{t}]: {error}") from error
        if names is None or len(names) != counts[t] or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{name}[{t}]: expected {counts[t]} strings, one per box of agent_boxes[{t}]")
        out.append([str(n) for n in names])
    return out


def _parse_row(row: Mapping[str, Any]) -> _Row:
    boxes = _boxes(_field(row, "agent_boxes"))
    counts = [len(step) for step in boxes]
    categories = _names(_field(row, "agent_categories"), "agent_categories", counts)
    instances = _names(_field(row, "agent_instances"), "agent_instances", counts)
    for t, tokens in enumerate(instances):
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"agent_instances[{t}]: instance tokens must be unique within a step")
    status = _float_array(_field(row, "ego_status"), "ego_status", (len(EGO_STATUS_FEATURES),))
    status_valid = _bool_array(_field(row, "ego_status_valid"), "ego_status_valid", len(EGO_STATUS_FEATURES))
    if not np.isfinite(status[status_valid]).all():
        raise ValueError("ego_status: valid entries must be finite (NaN or inf found)")
    trajectory = _float_array(_field(row, "trajectory"), "trajectory", (NUM_WAYPOINTS, 2))
    mask = _bool_array(_field(row, "trajectory_mask"), "trajectory_mask", NUM_WAYPOINTS)
    if not np.isfinite(trajectory[mask]).all():
        raise ValueError("trajectory: valid waypoints must be finite (NaN or inf found)")
    text = _field(row, "meta_action")
    if is_class_id(text):
        text = label_name("meta_action", text)  # the class id of a built dataset
    if not isinstance(text, str):
        raise TypeError(
            f"meta_action: expected a string ('<speed>, <path>' or '') or its class id, got {type(text).__name__}"
        )
    try:
        meta_action = MetaAction.from_text(text) if text.strip() else None
    except ValueError as error:
        raise ValueError(f"meta_action: expected '<speed>, <path>' of the vocabulary or '', got {text!r}") from error
    if status_valid[_VELOCITY_INDICES].all():
        ego_velocity = status[_VELOCITY_INDICES]
    elif mask.any():
        first = int(np.flatnonzero(mask)[0])
        ego_velocity = trajectory[first] / ((first + 1) * WAYPOINT_STEP_S)
    else:
        ego_velocity = None
    return _Row(
        boxes=boxes,
        categories=categories,
        instances=instances,
        waypoints=trajectory[mask],
        ego_velocity=ego_velocity,
        meta_action=meta_action,
    )


# -------------------------------------------------------------------------------------------------------- geometry


def _extended(points: np.ndarray) -> np.ndarray:
    """A polyline (M, 2) starting at the origin extended by CORRIDOR_EXTENSION_M along its last heading."""
    segments = np.diff(points, axis=0)
    lengths = np.linalg.norm(segments, axis=1)
    long_enough = np.flatnonzero(lengths > MIN_HEADING_SEGMENT_M)
    direction = segments[long_enough[-1]] / lengths[long_enough[-1]] if long_enough.size else np.array([1.0, 0.0])
    return np.concatenate([points, points[-1:] + CORRIDOR_EXTENSION_M * direction])


def _corridor(row: _Row) -> list[np.ndarray]:
    """Polylines of the corridor: the extended ego path and, during a lane change, the current lane."""
    path = _extended(np.concatenate([np.zeros((1, 2)), row.waypoints]))
    lines = [path]
    if row.meta_action is not None and row.meta_action.path in _LANE_CHANGES:
        length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        lines.append(np.array([[0.0, 0.0], [length, 0.0]]))
    return lines


def _nearest_on(points: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of points (P, 2) to a polyline (M, 2) and the unit direction of its nearest segment (P, 2)."""
    start, end = line[:-1], line[1:]
    keep = np.linalg.norm(end - start, axis=1) > 1e-9
    start, end = start[keep], end[keep]
    along = end - start  # (S, 2)
    rel = points[:, None, :] - start[None]  # (P, S, 2)
    fraction = np.clip((rel * along).sum(-1) / (along * along).sum(-1), 0.0, 1.0)  # (P, S)
    distance = np.linalg.norm(rel - fraction[..., None] * along, axis=-1)
    nearest = np.argmin(distance, axis=1)  # first minimum: deterministic
    direction = along[nearest] / np.linalg.norm(along[nearest], axis=1, keepdims=True)
    return distance[np.arange(len(points)), nearest], direction


def _in_corridor(points: np.ndarray, half_width_m: float, corridor: list[np.ndarray]) -> np.ndarray:
    return np.any([_nearest_on(points, line)[0] <= CORRIDOR_HALF_WIDTH_M + half_width_m for line in corridor], axis=0)


def camera_of(position_m: Sequence[float]) -> str:
    """The camera (CAMERA_NAMES) whose optical axis (CAMERA_YAWS_DEG) is nearest the bearing of an ego-frame point
    (x, y); ties go to the camera listed first. Sectors: front +-27.5 deg, front left/right to +-82.5, back
    left/right to +-145, back beyond."""
    bearing = np.arctan2(position_m[1], position_m[0])
    offsets = np.abs(wrap_angle(np.deg2rad(np.asarray(CAMERA_YAWS_DEG)) - bearing))
    return CAMERA_NAMES[int(np.argmin(offsets))]


def category_word(category: str) -> str | None:
    """The word of a full nuScenes category name (CATEGORY_WORDS), None for categories that are never critical."""
    for prefix, word in CATEGORY_WORDS:
        if category == prefix or category.startswith(prefix + "."):
            return word
    return None


# ---------------------------------------------------------------------------------------------------------- objects


def _object(
    row: _Row, index: int, word: str, corridor: list[np.ndarray], rows_by_token: list[dict[str, int]]
) -> CriticalObject | None:
    """The object `index` of t = 0 described, or None when it is not critical."""
    box, token, category = row.boxes[0][index], row.instances[0][index], row.categories[0][index]
    track = [  # xy (2,) of the instance at each step t = 0..6, None where it is not annotated
        boxes[rows[token], [_X, _Y]] if token in rows else None
        for boxes, rows in zip(row.boxes, rows_by_token, strict=True)
    ]
    position = track[0]
    if position[0] <= 0.0:
        return None
    seen = np.stack([p for p in track if p is not None])
    half_width = box[_WIDTH] / 2.0
    if not _in_corridor(seen, half_width, corridor).any():
        return None
    later = next((k for k in range(1, NUM_BOX_STEPS) if track[k] is not None), None)
    velocity = None if later is None else (track[later] - position) / (later * WAYPOINT_STEP_S)
    speed = 0.0 if velocity is None else float(np.linalg.norm(velocity))
    braking = False
    if later == 1 and track[2] is not None and speed >= MOVING_SPEED_MPS:
        second_mps = float(np.linalg.norm(track[2] - track[1])) / WAYPOINT_STEP_S
        braking = (second_mps - speed) / WAYPOINT_STEP_S < -BRAKING_DECEL_MPS2
    _, direction = _nearest_on(position[None], corridor[0])
    along = 0.0 if velocity is None else float(velocity @ direction[0])
    across = 0.0 if velocity is None else abs(float(velocity[0] * direction[0, 1] - velocity[1] * direction[0, 0]))
    moving = speed >= MOVING_SPEED_MPS
    distance = float(np.linalg.norm(position))
    range_rate = None
    if velocity is not None and row.ego_velocity is not None:
        range_rate = float(position @ (velocity - row.ego_velocity)) / distance
    return CriticalObject(
        word=word,
        instance=token,
        is_vehicle=category.startswith(_VEHICLE_PREFIX),
        is_road_user=not category.startswith(_NON_ROAD_USER_PREFIX),
        camera=camera_of(position),
        position_m=(float(position[0]), float(position[1])),
        distance_m=distance,
        velocity_mps=None if velocity is None else (float(velocity[0]), float(velocity[1])),
        braking=braking,
        crossing=moving and across > abs(along),
        oncoming=moving and across <= abs(along) and along < 0.0,
        range_rate_mps=range_rate,
        in_corridor_now=bool(_in_corridor(position[None], half_width, corridor)[0]),
        in_current_lane=len(corridor) > 1 and bool(_in_corridor(position[None], half_width, corridor[1:])[0]),
    )


def _critical(row: _Row) -> list[CriticalObject]:
    corridor = _corridor(row)
    rows_by_token = [{token: i for i, token in enumerate(tokens)} for tokens in row.instances]
    found = []
    for index, category in enumerate(row.categories[0]):
        word = category_word(category)
        described = None if word is None else _object(row, index, word, corridor, rows_by_token)
        if described is not None:
            found.append(described)
    return sorted(found, key=lambda o: (o.distance_m, o.instance))


def critical_objects(row: Mapping[str, Any]) -> list[CriticalObject]:
    """Every critical object of a planning row, nearest first (selection rules in the module docstring)."""
    return _critical(_parse_row(row))


def _lead(objects: list[CriticalObject]) -> CriticalObject | None:
    return next((o for o in objects if o.is_vehicle and o.in_corridor_now and not (o.crossing or o.oncoming)), None)


# ------------------------------------------------------------------------------------------------------------- text


def _rounded(value: float, step: float) -> str:
    """`value` rounded half up to a multiple of `step`, one decimal ("12.0", "-3.5"; never "-0.0")."""
    return f"{float(np.floor(value / step + 0.5) * step) + 0.0:.1f}"


def _metres(value: float) -> str:
    return f"{_rounded(value, DISTANCE_STEP_M)} m"


def _article(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _describe(obj: CriticalObject) -> str:
    """`car in CAM_FRONT at (12.0, 0.0) m, 12.0 m away, moving at 7.0 m/s, braking, approaching`."""
    x, y = obj.position_m
    parts = [f"{obj.word} in {obj.camera} at ({_rounded(x, DISTANCE_STEP_M)}, {_rounded(y, DISTANCE_STEP_M)}) m"]
    parts.append(f"{_metres(obj.distance_m)} away")
    if obj.velocity_mps is None:
        parts.append("motion unknown")
    elif obj.stopped:
        parts.append("stopped" if obj.is_road_user else "static")
    else:
        parts.append(f"moving at {_rounded(float(np.hypot(*obj.velocity_mps)), SPEED_STEP_MPS)} m/s")
    flags = (("braking", obj.braking), ("crossing", obj.crossing), ("oncoming", obj.oncoming))
    flags += (("approaching", obj.approaching), ("receding", obj.receding))
    parts += [word for word, on in flags if on]
    return ", ".join(parts)


def _stopped(obj: CriticalObject) -> str:
    """The object as a stopped one: `stopped car`, but `traffic cone` (barriers and cones never move)."""
    return f"stopped {obj.word}" if obj.is_road_user else obj.word


def _hazard(obj: CriticalObject, lead: CriticalObject | None) -> str | None:
    """Why the object matters to the ego's speed, or None when it is no hazard (rules in the module docstring)."""
    where = f"{_metres(obj.distance_m)} ahead"
    if obj is lead:
        state = "stopped" if obj.stopped else "braking" if obj.braking else "slower" if obj.approaching else None
        return None if state is None else f"the lead {obj.word} {where} is {state}"
    if obj.crossing:
        return f"{_article(obj.word)} is crossing {where}"
    if obj.oncoming:
        return f"{_article('oncoming ' + obj.word)} is in the path {where}"
    if obj.stopped:
        verb = "blocks the path" if obj.in_corridor_now else "is next to the path"
        return f"{_article(_stopped(obj))} {verb} {where}"
    if obj.braking:
        return f"{_article(obj.word)} {where} is braking"
    if obj.velocity_mps is None:
        return f"{_article(obj.word)} is in the path {where}"
    if obj.receding:
        return None
    if not obj.in_corridor_now:
        return f"{_article(obj.word)} is {'cutting in' if obj.is_vehicle else 'entering the path'} {where}"
    if obj.approaching:
        return f"{_article('slower ' + obj.word)} is in the path {where}"
    return None if obj.is_vehicle else f"{_article(obj.word)} is in the path {where}"


def _light_hazard(light: TrafficLight | None) -> tuple[float, str] | None:
    if light is None or light.state == "green":
        return None
    if light.stop_line_m is None:
        return np.inf, f"the light is {light.state}"
    return light.stop_line_m, f"the light {_metres(light.stop_line_m)} ahead is {light.state}"


def _road(row: _Row, lead: CriticalObject | None, light: TrafficLight | None) -> str:
    if row.ego_velocity is None:
        parts = ["ego speed unknown"]
    else:
        speed = float(np.linalg.norm(row.ego_velocity))
        parts = ["ego stopped" if speed < MOVING_SPEED_MPS else f"ego at {_rounded(speed, SPEED_STEP_MPS)} m/s"]
    parts.append("no lead vehicle" if lead is None else f"lead {lead.word} {_metres(lead.distance_m)} ahead")
    if light is not None:
        where = "" if light.stop_line_m is None else f" {_metres(light.stop_line_m)} ahead"
        parts.append(f"light {light.state}{where}")
    return f"Road: {', '.join(parts)}."


def _speed_reason(
    action: MetaAction, objects: list[CriticalObject], lead: CriticalObject | None, light: TrafficLight | None
) -> tuple[str, CriticalObject | None]:
    """The clause explaining the speed decision and the object it names (None when it names none)."""
    hazards = [(o.distance_m, text, o) for o in objects if (text := _hazard(o, lead)) is not None]
    light_hazard = _light_hazard(light)
    if light_hazard is not None:
        hazards.append((*light_hazard, None))
    nearest = min(hazards, key=lambda h: h[0]) if hazards else None  # first minimum: objects before the light
    if action.speed in ("stop", "decelerate"):
        if nearest is not None:
            return f"because {nearest[1]}", nearest[2]
        return _TURNS.get(action.path, "with no hazard in the path"), None
    if lead is not None and _hazard(lead, lead) is None:
        where = f"{lead.word} {_metres(lead.distance_m)} ahead"
        if action.speed == "accelerate" and lead.receding:
            return f"as the lead {where} pulls away", lead
        return f"to follow the lead {where}", lead
    if nearest is not None:
        return f"while {nearest[1]}", nearest[2]
    if light is not None and light.state == "green":
        return "because the light is green", None
    return "because the path is clear", None


def _blocker(action: MetaAction, objects: list[CriticalObject]) -> CriticalObject | None:
    """During a lane change, the nearest object in the current lane that is stopped or slower."""
    if action.path not in _LANE_CHANGES:
        return None
    slower = [o.approaching and not (o.crossing or o.oncoming) for o in objects]
    return next((o for o, s in zip(objects, slower, strict=True) if o.in_current_lane and (o.stopped or s)), None)


def generate_reasoning(row: Mapping[str, Any], traffic_light: TrafficLight | None = None) -> str:
    """The reasoning text of a planning row (template and rules in the module docstring).

    Args:
        row: a planning row in either dataset format (lists or numpy): `agent_boxes`, `agent_categories`,
            `agent_instances` (7 steps each), `ego_status` (6,) with `ego_status_valid` (6,) bool, `trajectory`
            (6, 2) with `trajectory_mask` (6,) bool, and `meta_action` ("<speed>, <path>" or "" without future);
            other fields are ignored.
        traffic_light: the light the ego faces, when known (sim rows).

    Raises:
        ValueError: naming the field, for a missing field, a wrong shape or value, or NaN/inf in used values.
        TypeError: naming the field, for a `meta_action` that is no string or a `traffic_light` of another type.
    """
    if traffic_light is not None and not isinstance(traffic_light, TrafficLight):
        raise TypeError(f"traffic_light: expected a TrafficLight or None, got {type(traffic_light).__name__}")
    parsed = _parse_row(row)
    objects = _critical(parsed)
    lead = _lead(objects)
    named = [lead]
    action = parsed.meta_action
    if action is None:
        decision = "Decision: unknown, no future trajectory."
    else:
        reason, cause = _speed_reason(action, objects, lead, traffic_light)
        blocker = _blocker(action, objects)
        clauses = [reason]
        if blocker is not None:
            passing = _stopped(blocker) if blocker.stopped else f"slower {blocker.word}"
            pass_clause = f"to pass the {passing} {_metres(blocker.distance_m)} ahead"
            clauses = [pass_clause] if cause is blocker else [reason, f"and {pass_clause}"]
        named += [cause, blocker]
        decision = f"Decision: {action.to_text()}, {', '.join(clauses)}."
    required = [o for o in objects if any(o is n for n in named)]
    others = [o for o in objects if not any(o is r for r in required)]
    shown = sorted(required + others[: MAX_CRITICAL_OBJECTS - len(required)], key=objects.index)
    listed = "; ".join(_describe(o) for o in shown) if shown else "none"
    return f"Objects: {listed}. {_road(parsed, lead, traffic_light)} {decision}"


# ------------------------------------------------------------------------------------------- planning answer text


def join_reasoning(reasoning: str, meta_action: str) -> str:
    """The planning answer of the `reasoning` target: the reasoning text (one line), a newline, the meta-action."""
    if "\n" in reasoning or "\n" in meta_action:
        raise ValueError("reasoning/meta_action: expected one line each (the answer separates them by a newline)")
    return f"{reasoning}\n{meta_action}"


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, meta_action) of a generated `join_reasoning` answer: the last non-empty line is the meta-action,
    the lines before it the reasoning ("" for both when the text is empty)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "", ""
    return " ".join(lines[:-1]), lines[-1]
