"""Traffic participants and their behaviour: spawning, car following, signals, crossings, lane changes.

Vehicles (the ego included) follow `LanePath`s longitudinally with the intelligent driver model (IDM), treating as
obstacles whatever lies in their corridor ahead (leaders, crossing pedestrians, oncoming traffic in a turn) and
virtual standing obstacles: red signals at stop lines, an occupied junction (conflicting movements inside it, or
oncoming traffic for a left turn), crosswalks in use, and brief stops in lane. Lane changes move a lateral offset
along the path with a quintic profile once the target lane has a gap. Pedestrians walk sidewalk paths with the
same model and cross at crosswalks once approaching vehicles can stop (at junctions: while the crossed arm has red).
Parked vehicles, cones, barriers and idle people are static.
The result of `simulate` is a `SceneTrack`: poses, velocities and nuScenes attributes of every agent at keyframes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from occvla_hf.geometry import wrap_angle
from occvla_hf.sim.categories import AGENT_TYPES
from occvla_hf.sim.config import SimConfig
from occvla_hf.sim.geometry import Polyline
from occvla_hf.sim.layout import LANE_WIDTH_M, Crosswalk, LanePath, Road, World

# Ego box (the design's collision protocol): 4.084 m x 1.85 m, centre 0.5 m ahead of the ego origin.
EGO_SIZE_M: tuple[float, float, float] = (4.084, 1.85, 1.6)
EGO_CENTER_AHEAD_M: float = 0.5

LOOKAHEAD_M: float = 50.0
MAX_DECEL_MPS2: float = 8.0
LATERAL_ACCEL_LIMIT_MPS2: float = 2.0
MOVING_SPEED_MPS: float = 0.5  # vehicles above it are "moving", below "stopped"
WALKING_SPEED_MPS: float = 0.3


@dataclass
class Agent:
    """One participant. Moving agents follow `path` (arc length `s`, speed `v`, lateral offset `d`); static ones
    keep `pose` (x, y, yaw). `kind` is "vehicle", "cycle", "pedestrian" or "object" (cones, barriers);
    `static_attribute` fixes the nuScenes attribute of static agents."""

    type_name: str
    size: np.ndarray  # (length, width, height) metres
    kind: str
    brightness: float = 1.0
    path: Polyline | None = None
    lane: LanePath | None = None
    s: float = 0.0
    v: float = 0.0
    d: float = 0.0
    desired_speed_mps: float = 0.0
    max_accel_mps2: float = 1.5
    comfort_decel_mps2: float = 2.0
    min_gap_m: float = 2.0
    headway_s: float = 1.2
    pose: tuple[float, float, float] | None = None
    static_attribute: str | None = None
    lane_change: tuple[float, float, float, float] | None = None  # (t0, d0, d1, duration_s)
    planned_lane_change: tuple[float, float] | None = None  # (earliest t, target d)
    stop_event: tuple[float, float] | None = None  # (t_start, duration_s): pull up in lane, then go on
    stop_point_s: float | None = None
    wait_s: float | None = None  # pedestrians: curb position before a crossing
    crossing_end_s: float | None = None  # pedestrians: where the crossing leg reaches the far curb
    crosswalk: int | None = None
    crossing_s: dict[int, float] = field(default_factory=dict)  # vehicles: where the path crosses crosswalk i
    curve_speed_mps: np.ndarray | None = None  # per path vertex, from curvature
    active: bool = True

    @property
    def category(self) -> str:
        return AGENT_TYPES[self.type_name].category if self.type_name != "ego" else "vehicle.car"

    @property
    def moving(self) -> bool:
        return self.path is not None


@dataclass
class SceneTrack:
    """Ground-truth motion at keyframes. K keyframes, N agents (the ego is separate and never annotated).

    Positions are world-frame box centres; velocities come from the simulated motion (central differences at the
    simulation step), not from keyframe positions. `attributes[k][n]` is a nuScenes attribute name or None.
    """

    times_s: np.ndarray  # (K,)
    ego_xy: np.ndarray  # (K, 2) ego origin (box centre minus EGO_CENTER_AHEAD_M along the heading)
    ego_yaw: np.ndarray  # (K,)
    ego_velocity: np.ndarray  # (K, 2) of the ego origin
    categories: list[str]  # (N,)
    sizes: np.ndarray  # (N, 3) length, width, height
    brightness: np.ndarray  # (N,)
    present: np.ndarray  # (K, N) bool
    xy: np.ndarray  # (K, N, 2)
    yaw: np.ndarray  # (K, N)
    velocity: np.ndarray  # (K, N, 2)
    attributes: list[list[str | None]]  # (K, N)
    # (K,) the signal the ego faces (its front short of the stop line): state in TRAFFIC_LIGHT_STATES and the distance
    # along the route from the ego origin to the stop line (m); None without a signal ahead
    ego_signal: list[tuple[str, float] | None]

    @property
    def num_keyframes(self) -> int:
        return len(self.times_s)

    def boxes_at(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (M,) of agents present at keyframe k and their world boxes (M, 7) in BOX_FIELDS order."""
        idx = np.flatnonzero(self.present[k])
        z = self.sizes[idx, 2] / 2.0
        boxes = np.column_stack([self.xy[k, idx], z, self.sizes[idx], self.yaw[k, idx]])
        return idx, boxes


# ----------------------------------------------------------------------------------------------------------- spawn


def _sized(rng: np.random.Generator, type_name: str) -> np.ndarray:
    """(length, width, height) of a new agent: the type's mean size with clipped Gaussian jitter."""
    t = AGENT_TYPES[type_name]
    scale = 1.0 + t.jitter * np.clip(rng.standard_normal(3), -2.0, 2.0)
    return np.array([t.length_m, t.width_m, t.height_m]) * scale


def new_vehicle(rng: np.random.Generator, type_name: str, lane: LanePath, s: float, d: float = 0.0) -> Agent:
    """A vehicle of `type_name` on `lane` at arc length `s` (lateral offset `d`) with drawn speeds and style; call
    `prepare_path` once it is placed."""
    speeds = {
        "car": (8.0, 13.0),
        "truck": (7.0, 11.0),
        "bus": (7.0, 10.0),
        "motorcycle": (9.0, 14.0),
        "bicycle": (4.0, 6.0),
    }[type_name]
    desired = float(rng.uniform(*speeds))
    kind = "cycle" if type_name in ("bicycle", "motorcycle") else "vehicle"
    return Agent(
        type_name,
        _sized(rng, type_name),
        kind,
        brightness=float(rng.uniform(0.85, 1.1)),
        path=lane.path,
        lane=lane,
        s=s,
        v=desired * float(rng.uniform(0.6, 1.0)),
        d=d,
        desired_speed_mps=desired,
        max_accel_mps2=float(rng.uniform(1.2, 2.0)),
        headway_s=float(rng.uniform(1.0, 1.6)),
    )


def _static(
    rng: np.random.Generator, type_name: str, kind: str, x: float, y: float, yaw: float, attribute: str | None
) -> Agent:
    return Agent(
        type_name,
        _sized(rng, type_name),
        kind,
        brightness=float(rng.uniform(0.85, 1.1)),
        pose=(x, y, yaw),
        static_attribute=attribute,
    )


def new_pedestrian(rng: np.random.Generator, path: Polyline, s: float) -> Agent:
    """A walker (an adult, sometimes a child) on `path` at arc length `s` with a drawn walking speed."""
    type_name = "child" if rng.random() < 0.1 else "pedestrian"
    speed = float(rng.uniform(1.0, 1.6))
    return Agent(
        type_name,
        _sized(rng, type_name),
        "pedestrian",
        brightness=float(rng.uniform(0.85, 1.1)),
        path=path,
        s=s,
        v=speed,
        desired_speed_mps=speed,
        max_accel_mps2=1.0,
        comfort_decel_mps2=1.5,
        min_gap_m=0.6,
        headway_s=0.8,
    )


def spawn_agents(world: World, rng: np.random.Generator, duration_s: float) -> list[Agent]:
    """The ego (index 0) and every other agent of a scene lasting `duration_s`, in their initial state."""
    agents = [_spawn_ego(world, rng)]
    _spawn_traffic(world, rng, agents)
    _spawn_pedestrians(world, rng, agents, duration_s)
    _spawn_static(world, rng, agents)
    for agent in agents:
        prepare_path(world, agent)
    return agents


def prepare_path(world: World, agent: Agent) -> None:
    """Set what a moving vehicle derives from its path: the curve speed limits and where it meets each crosswalk
    (`curve_speed_mps`, `crossing_s`); nothing for walkers and static agents."""
    if agent.kind in ("vehicle", "cycle") and agent.path is not None:
        curvature = np.abs(agent.path.curvature())
        agent.curve_speed_mps = np.sqrt(LATERAL_ACCEL_LIMIT_MPS2 / np.maximum(curvature, 1e-4))
        agent.crossing_s = {}
        for i, cw in enumerate(world.crosswalks):
            s, lateral = agent.path.project(cw.center[None])
            if abs(lateral[0]) < cw.half_length_m + 1.0 and 0.5 < s[0] < agent.path.length - 0.5:
                agent.crossing_s[i] = float(s[0])


def _spawn_ego(world: World, rng: np.random.Generator) -> Agent:
    lanes = world.section.lanes_per_direction
    ego_lane = int(rng.integers(lanes))
    if world.junction is not None:
        turn = str(rng.choice(["straight", "left", "right"], p=[0.3, 0.35, 0.35]))
        path_lane = {"straight": ego_lane, "left": 0, "right": lanes - 1}[turn]
        lane = next(p for p in world.ego_lane_paths if p.lane == path_lane and p.turn == turn)
        s0 = 110.0 + float(rng.uniform(-5.0, 5.0))
    else:
        path_lane = ego_lane
        lane = next(p for p in world.ego_lane_paths if p.lane == path_lane)
        s0 = 120.0 + float(rng.uniform(-5.0, 5.0))
    desired = float(rng.uniform(7.0, 12.5))
    speed = 0.0 if rng.random() < 0.2 else desired * float(rng.uniform(0.5, 1.0))
    ego = Agent(
        "ego",
        np.array(EGO_SIZE_M),
        "vehicle",
        path=lane.path,
        lane=lane,
        s=s0,
        v=speed,
        d=(path_lane - ego_lane) * LANE_WIDTH_M,  # starting in another lane than the route's
        desired_speed_mps=desired,
        max_accel_mps2=float(rng.uniform(1.3, 2.0)),
    )
    if ego.d != 0.0:  # must reach the turning lane
        ego.planned_lane_change = (float(rng.uniform(0.5, 3.0)), 0.0)
    elif lanes > 1 and world.junction is None and rng.random() < 0.6:
        ego.planned_lane_change = (float(rng.uniform(2.0, 12.0)), (path_lane - (1 - ego_lane)) * LANE_WIDTH_M)
    return ego


def _spawn_traffic(world: World, rng: np.random.Generator, agents: list[Agent]) -> None:
    """Vehicles along every lane (one draw of positions per physical lane), plus a stop event ahead of the ego."""
    ego = agents[0]
    groups: dict[tuple, list[LanePath]] = {}
    for lp in world.lane_paths:
        key = (lp.approach, lp.lane) if lp.turn is not None else (id(lp),)
        groups.setdefault(key, []).append(lp)
    ego_xy, _ = ego.path.interpolate(ego.s)
    placed: list[np.ndarray] = [ego_xy]
    density = float(rng.uniform(0.6, 2.2))  # vehicles per 100 m of lane
    for variants in groups.values():
        lo, hi = variants[0].spawn_range_m
        s = lo + float(rng.exponential(100.0 / density))
        while s < hi:
            lane = variants[int(rng.integers(len(variants)))]
            outer = lane.lane == lane.lanes - 1
            type_name = str(
                rng.choice(
                    ["car", "truck", "bus", "motorcycle", "bicycle"],
                    p=[0.72, 0.08, 0.06, 0.06, 0.08] if outer else [0.84, 0.1, 0.0, 0.06, 0.0],
                )
            )
            xy, _ = lane.path.interpolate(s)
            if min(np.hypot(*(xy - p)) for p in placed) > 14.0:
                d = -0.85 if type_name == "bicycle" else 0.0
                agent = new_vehicle(rng, type_name, lane, s, d)
                if (
                    lane.lanes > 1
                    and type_name != "bicycle"
                    and lane.turn in (None, "straight")
                    and rng.random() < 0.12
                ):
                    target = lane.lane + (1 if lane.lane == 0 else -1)
                    agent.planned_lane_change = (float(rng.uniform(1.0, 15.0)), (lane.lane - target) * LANE_WIDTH_M)
                agents.append(agent)
                placed.append(xy)
            s += 8.0 + float(rng.exponential(100.0 / density))
    # A vehicle ahead of the ego in its lane pulls up for a while (the ego must brake, maybe change lanes).
    ahead = [a for a in agents[1:] if a.path is ego.path and ego.s + 10.0 < a.s < ego.s + 70.0]
    if ahead and rng.random() < 0.45:
        leader = min(ahead, key=lambda a: a.s)
        leader.stop_event = (float(rng.uniform(1.0, 8.0)), float(rng.uniform(3.0, 8.0)))


def _sidewalk_segments(world: World) -> list[tuple[Road, float, float]]:
    """(road, s_from, s_to) stretches of sidewalk that do not enter the junction box."""
    out = []
    for road in world.roads:
        if world.junction is None:
            out.append((road, 60.0, road.centerline.length - 60.0))
            continue
        s_j, _ = road.centerline.project(world.junction.center[None])
        gap = world.junction.stop_distance_m + 1.0  # keep clear of the crosswalks
        out.append((road, max(s_j[0] - 120.0, 0.0), s_j[0] - gap))
        out.append((road, s_j[0] + gap, min(s_j[0] + 120.0, road.centerline.length)))
    return out


def _spawn_pedestrians(world: World, rng: np.random.Generator, agents: list[Agent], duration_s: float) -> None:
    sec = world.section
    for road, s_from, s_to in _sidewalk_segments(world):
        for side in (1, -1):
            s = s_from + float(rng.exponential(20.0))
            while s < s_to - 2.0:
                if rng.random() < 0.15:  # idle on the verge beside the sidewalk
                    xy, heading = road.centerline.offset_point(
                        s, side * (sec.driveable_half_width_m + sec.sidewalk_width_m + 0.6)
                    )
                    sitting = rng.random() < 0.25
                    attribute = "pedestrian.sitting_lying_down" if sitting else "pedestrian.standing"
                    agent = _static(
                        rng, "pedestrian", "pedestrian", *xy, heading + float(rng.uniform(-3, 3)), attribute
                    )
                    if sitting:
                        agent.size[2] = float(rng.uniform(1.0, 1.3))
                    agents.append(agent)
                else:  # walk a direction in which the sidewalk lasts the whole scene
                    walker = new_pedestrian(rng, road.sidewalk_path(side).slice(s_from, s_to), 0.0)
                    need = walker.desired_speed_mps * duration_s + 2.0
                    ways = [d for d, room in ((1, s_to - s), (-1, s - s_from)) if room >= need]
                    if ways:
                        direction = ways[int(rng.integers(len(ways)))]
                        base = walker.path if direction > 0 else walker.path.reversed()
                        walker.path = base.offset(-0.5)
                        walker.s = s - s_from if direction > 0 else s_to - s
                        agents.append(walker)
                s += 4.0 + float(rng.exponential(20.0))
    for i, cw in enumerate(world.crosswalks):
        for _ in range(int(rng.integers(0, 4))):
            path, wait_s, end_s = crossing_path(world, cw, rng)
            s = float(rng.uniform(0.0, 0.6)) * wait_s
            start = path.interpolate(s)[0]
            if all(np.hypot(*(start - initial_position(a))) > 1.5 for a in agents if a.kind == "pedestrian"):
                agent = new_pedestrian(rng, path, s)
                agent.wait_s, agent.crossing_end_s, agent.crosswalk = wait_s, end_s, i
                agents.append(agent)


def initial_position(agent: Agent) -> np.ndarray:
    """Initial box-centre position (lateral offsets aside)."""
    if agent.path is None:
        return np.array(agent.pose[:2])
    return agent.path.interpolate(agent.s)[0]


def crossing_path(world: World, cw: Crosswalk, rng: np.random.Generator) -> tuple[Polyline, float, float]:
    """Sidewalk -> across the crosswalk -> sidewalk, keeping right; returns the path, its near and far curb points."""
    side_from = 1.0 if rng.random() < 0.5 else -1.0
    if world.junction is not None:  # come from, and leave to, the outer side of the arm
        a0, a1 = float(rng.uniform(5.0, 25.0)), float(rng.uniform(5.0, 25.0))
    else:
        a0, a1 = (
            float(rng.choice([-1, 1]) * rng.uniform(5.0, 25.0)),
            float(rng.choice([-1, 1]) * rng.uniform(5.0, 25.0)),
        )
    b = cw.sidewalk_offset_m
    local = np.array([[a0, side_from * b], [0.0, side_from * b], [0.0, -side_from * b], [a1, -side_from * b]])
    c, s = np.cos(cw.road_heading), np.sin(cw.road_heading)
    pts = local @ np.array([[c, s], [-s, c]]) + cw.center
    raw = Polyline.from_points(
        np.concatenate([np.linspace(pts[i], pts[i + 1], 12, endpoint=False) for i in range(3)] + [pts[3:]])
    )
    path = raw.offset(-0.5)
    curb_s = abs(a0) + (b - cw.half_length_m) - 0.5
    return path, curb_s, curb_s + 2.0 * cw.half_length_m + 1.5


def _spawn_static(world: World, rng: np.random.Generator, agents: list[Agent]) -> None:
    """Parked vehicles in parking lanes, a construction zone, parked bicycles on the verge."""
    sec = world.section
    lanes_w = sec.lanes_per_direction * sec.lane_width_m
    static_xy = world.static.centers[:, :2]
    moving_xy = [a.path.interpolate(a.s)[0] for a in agents if a.path is not None]

    def free(xy: np.ndarray, radius: float) -> bool:
        near_static = len(static_xy) and np.min(np.hypot(*(static_xy - xy).T)) < radius + 1.0
        near_agent = any(np.hypot(*(xy - p)) < radius + 1.5 for p in moving_xy)
        near_placed = any(
            np.hypot(xy[0] - a.pose[0], xy[1] - a.pose[1]) < radius + np.hypot(*a.size[:2]) / 2 + 0.3
            for a in agents
            if a.pose is not None
        )
        return not (near_static or near_agent or near_placed) and _clear_of_junction(world, xy, radius)

    ego = agents[0]
    main = world.roads[0]
    ego_s_main, _ = main.centerline.project(ego.path.interpolate(ego.s)[0][None])
    if rng.random() < 0.4:
        _construction_zone(world, rng, agents, main, float(ego_s_main[0] + rng.uniform(15.0, 70.0)), free)
    for road, s_from, s_to in _sidewalk_segments(world):
        for side in (1, -1):
            if sec.parking_width_m > 0:
                s = s_from + float(rng.uniform(0.0, 8.0))
                while s < s_to - 6.0:
                    type_name = str(rng.choice(["car", "truck", "trailer", "motorcycle"], p=[0.8, 0.08, 0.05, 0.07]))
                    size = _sized(rng, type_name)
                    xy, heading = road.centerline.offset_point(
                        s + size[0] / 2, side * (lanes_w + sec.parking_width_m / 2)
                    )
                    yaw = heading if side < 0 else heading + np.pi
                    if rng.random() < 0.55 and free(xy, size[0] / 2):
                        attribute = "cycle.without_rider" if type_name == "motorcycle" else "vehicle.parked"
                        kind = "cycle" if type_name == "motorcycle" else "vehicle"
                        agent = _static(rng, type_name, kind, *xy, float(wrap_angle(yaw)), attribute)
                        agent.size = size
                        agents.append(agent)
                    s += size[0] + float(rng.uniform(1.5, 8.0))
            for _ in range(int(rng.integers(0, 3))):
                s = float(rng.uniform(s_from, s_to))
                xy, heading = road.centerline.offset_point(
                    s, side * (sec.driveable_half_width_m + sec.sidewalk_width_m + 1.0)
                )
                if free(xy, 1.0):
                    agents.append(
                        _static(
                            rng, "bicycle", "cycle", *xy, float(wrap_angle(heading + np.pi / 2)), "cycle.without_rider"
                        )
                    )


def _clear_of_junction(world: World, xy: np.ndarray, radius: float) -> bool:
    """True if a footprint of `radius` at `xy` keeps off the junction approaches and the crosswalks."""
    if world.junction is not None:
        if np.all(np.abs(xy - world.junction.center) < world.junction.stop_distance_m + radius + 2.0):
            return False
    return all(np.hypot(*(xy - cw.center)) > cw.half_length_m + radius + 4.0 for cw in world.crosswalks)


def _construction_zone(
    world: World,
    rng: np.random.Generator,
    agents: list[Agent],
    road: Road,
    s: float,
    free: Callable[[np.ndarray, float], bool],
) -> None:
    """Cones along the lane edge, barriers, a construction vehicle and workers on the right side of `road`."""
    sec = world.section
    lanes_w = sec.lanes_per_direction * sec.lane_width_m
    if sec.parking_width_m > 0:
        edge, inner = lanes_w + 0.3, lanes_w + sec.parking_width_m / 2
    else:
        edge = sec.driveable_half_width_m + sec.sidewalk_width_m + 0.5
        inner = edge + 2.0
    length = float(rng.uniform(12.0, 22.0))
    for a in np.arange(0.0, length, 2.5):
        xy, heading = road.centerline.offset_point(s + a, -edge)
        if free(xy, 0.3):
            agents.append(_static(rng, "traffic_cone", "object", *xy, heading, None))
    for a in (-1.5, length + 1.5):
        xy, heading = road.centerline.offset_point(s + a, -inner)
        if free(xy, 1.2):
            agents.append(_static(rng, "barrier", "object", *xy, float(wrap_angle(heading + np.pi / 2)), None))
    xy, heading = road.centerline.offset_point(s + length * 0.4, -(inner + 0.3))
    if free(xy, 3.0):
        agents.append(_static(rng, "construction_vehicle", "vehicle", *xy, heading, "vehicle.parked"))
    for _ in range(int(rng.integers(1, 3))):
        xy, heading = road.centerline.offset_point(s + float(rng.uniform(0.8, 0.95)) * length, -inner)
        if free(xy, 0.5):
            agents.append(
                _static(rng, "construction_worker", "pedestrian", *xy, float(rng.uniform(-3, 3)), "pedestrian.standing")
            )


# -------------------------------------------------------------------------------------------------------- simulate


@dataclass
class _Snapshot:
    """Current poses of all agents, for obstacle queries (N agents)."""

    xy: np.ndarray  # (N, 2) box centres
    yaw: np.ndarray  # (N,)
    speed: np.ndarray  # (N,)
    active: np.ndarray  # (N,) bool
    is_pedestrian: np.ndarray  # (N,) bool
    is_static: np.ndarray  # (N,) bool
    sizes: np.ndarray  # (N, 3)
    left_turn_approach: np.ndarray  # (N,) int: junction approach of left turners, -1 for everyone else


def _lateral_offset(agent: Agent, t: float) -> tuple[float, float]:
    """Lateral offset d and its time derivative under the current lane change (quintic profile)."""
    if agent.lane_change is None:
        return agent.d, 0.0
    t0, d0, d1, duration = agent.lane_change
    tau = np.clip((t - t0) / duration, 0.0, 1.0)
    shape = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    rate = (30 * tau**2 - 60 * tau**3 + 30 * tau**4) / duration
    return d0 + (d1 - d0) * shape, (d1 - d0) * rate


def _pose(agent: Agent, t: float) -> tuple[np.ndarray, float]:
    """Box centre (2,) and yaw at time t; vehicles yaw into their lane changes."""
    if agent.path is None:
        x, y, yaw = agent.pose
        return np.array([x, y]), yaw
    xy, heading = agent.path.interpolate(agent.s)
    d, d_rate = _lateral_offset(agent, t)
    xy = xy + d * np.array([-np.sin(heading), np.cos(heading)])
    yaw = heading + np.arctan2(d_rate, max(agent.v, 1.0)) if agent.kind != "pedestrian" else heading
    return xy, float(wrap_angle(yaw))


def _obstacle_gaps(i: int, agent: Agent, snap: _Snapshot, t: float) -> list[tuple[float, float]]:
    """(gap, speed along my path) of agents in my corridor ahead within LOOKAHEAD_M."""
    me = snap.xy[i]
    rel = snap.xy - me
    dist = np.hypot(rel[:, 0], rel[:, 1])
    heading = snap.yaw[i]
    ahead = rel[:, 0] * np.cos(heading) + rel[:, 1] * np.sin(heading) > -1.0
    cand = snap.active & (dist < LOOKAHEAD_M) & ahead
    cand[i] = False
    if agent.kind == "pedestrian":  # walkers only mind other walkers; vehicles yield to them
        cand &= snap.is_pedestrian & ~snap.is_static
    if agent.lane is not None and agent.lane.turn == "left":  # opposite left turns pass each other
        cand &= snap.left_turn_approach != (agent.lane.approach + 2) % 4
    idx = np.flatnonzero(cand)
    if len(idx) == 0:
        return []
    s_hi = min(agent.s + LOOKAHEAD_M, agent.path.length)
    s_proj, lateral = agent.path.project(snap.xy[idx], agent.s, s_hi)
    path_heading = agent.path.interpolate(s_proj)[1]
    delta = snap.yaw[idx] - path_heading
    cos_d, sin_d = np.abs(np.cos(delta)), np.abs(np.sin(delta))
    length, width = snap.sizes[idx, 0], snap.sizes[idx, 1]
    half_long = 0.5 * (length * cos_d + width * sin_d)
    half_lat = 0.5 * (length * sin_d + width * cos_d)
    d_now, _ = _lateral_offset(agent, t)
    d_lo, d_hi = d_now, d_now
    if agent.lane_change is not None:
        d_lo, d_hi = min(agent.lane_change[1:3]), max(agent.lane_change[1:3])
    margin = 0.3 if agent.kind != "pedestrian" else 0.0
    reach = agent.size[1] / 2 + half_lat + margin
    in_corridor = (lateral >= d_lo - reach) & (lateral <= d_hi + reach)
    valid = in_corridor & (s_proj > agent.s + 0.1) & (s_proj < s_hi - 0.05)
    if agent.kind == "pedestrian":  # oncoming walkers pass by on their right
        valid &= np.cos(delta) > -0.3
    gaps = s_proj - agent.s - agent.size[0] / 2 - half_long
    along = snap.speed[idx] * np.cos(delta)
    return [(float(g), float(v)) for g, v in zip(gaps[valid], along[valid])]


def _idm(agent: Agent, v0: float, obstacles: list[tuple[float, float]]) -> float:
    """Intelligent driver model acceleration against the most constraining obstacle."""
    v = agent.v
    a, b = agent.max_accel_mps2, agent.comfort_decel_mps2
    free = 1.0 - (v / max(v0, 0.1)) ** 4 if v0 > 0.05 else -1.0
    interaction = 0.0
    for gap, lead_speed in obstacles:
        dv = v - lead_speed
        s_star = agent.min_gap_m + max(0.0, v * agent.headway_s + v * dv / (2.0 * np.sqrt(a * b)))
        interaction = max(interaction, (s_star / max(gap, 0.05)) ** 2)
    return float(np.clip(a * (free - interaction), -MAX_DECEL_MPS2, a))


def _vehicle_constraints(
    agent: Agent, agents: list[Agent], world: World, t: float, busy_crosswalks: set[int]
) -> list[tuple[float, float]]:
    """Virtual standing obstacles (gap, speed 0): crosswalks in use, red signals, junction conflicts, stop events."""
    out = []
    front = agent.s + agent.size[0] / 2
    for i, crossing_s in agent.crossing_s.items():
        to_edge = crossing_s - world.crosswalks[i].width_m / 2 - 0.5 - front
        if i in busy_crosswalks and to_edge > agent.v**2 / (2.0 * 6.0):
            out.append((to_edge, 0.0))
    lane = agent.lane
    if lane is not None and lane.stop_s is not None and front < lane.stop_s + 0.5:
        to_line = lane.stop_s - front
        if not world.signal_is_green(lane.approach, t):
            if agent.v**2 / (2.0 * max(to_line, 0.1)) < 4.0 or agent.v < 1.0:  # can stop; else clears the amber
                out.append((to_line + agent.min_gap_m - 0.5, 0.0))
        elif _junction_conflict(agent, agents, world, t):
            out.append((to_line + agent.min_gap_m - 0.5, 0.0))
    elif lane is not None and lane.entry_s is not None and front < lane.entry_s - 0.5:
        if _junction_conflict(agent, agents, world, t):
            out.append((lane.entry_s - front, 0.0))
    if agent.stop_event is not None:
        t_start, duration = agent.stop_event
        if t_start <= t < t_start + duration:
            if agent.stop_point_s is None:
                agent.stop_point_s = agent.s + agent.v**2 / (2.0 * agent.comfort_decel_mps2) + agent.min_gap_m
            out.append((agent.stop_point_s - agent.s, 0.0))
    return out


def _conflicts(mine: LanePath, theirs: LanePath) -> bool:
    """Whether two junction movements cross (right-hand traffic)."""
    if (theirs.approach - mine.approach) % 2 == 1:
        return True  # perpendicular approaches
    if theirs.approach == mine.approach:
        return False  # same approach: car following handles it
    return "left" in (mine.turn, theirs.turn) and (mine.turn, theirs.turn) != ("left", "left")


def _junction_conflict(agent: Agent, agents: list[Agent], world: World, t: float) -> bool:
    """Whether a vehicle about to enter the junction must wait: a conflicting movement is inside the junction, an
    opposite long vehicle turns left beside its own left turn, or (turning left) oncoming traffic arrives soon."""
    mine = agent.lane
    for other in agents:
        lane = other.lane
        if other is agent or not other.active or lane is None or lane.entry_s is None:
            continue
        to_entry = lane.entry_s - (other.s + other.size[0] / 2)
        inside = -(lane.exit_s - lane.entry_s + other.size[0]) < to_entry <= 0.0
        if inside and _conflicts(mine, lane):
            return True
        if lane.approach != (mine.approach + 2) % 4:
            continue
        if mine.turn == "left" and lane.turn == "left":  # pass each other, unless a long vehicle sweeps wide
            if inside and max(other.size[0], agent.size[0]) > 6.0:
                return True
        elif mine.turn == "left":
            arriving = 0.0 < to_entry < 30.0 and to_entry / max(other.v, 0.5) < 3.0
            if arriving and world.signal_is_green(lane.approach, t):
                return True
    return False


def _crossing_safe(ped: Agent, agents: list[Agent], world: World, t: float) -> bool:
    """Start crossing only if every approaching vehicle can stop comfortably before the crosswalk; at a junction
    also only while the crossed arm has red long enough to get across."""
    cw = world.crosswalks[ped.crosswalk]
    if world.junction is not None:
        crossing_time_s = (ped.crossing_end_s - ped.wait_s) / max(ped.desired_speed_mps, 0.5)
        if world.signal_time_to_green(ped.crosswalk, t) < crossing_time_s:
            return False
    for other in agents:
        if not other.active or ped.crosswalk not in other.crossing_s:
            continue
        to_cw = other.crossing_s[ped.crosswalk] - cw.width_m / 2 - (other.s + other.size[0] / 2)
        if to_cw < -(cw.width_m + other.size[0]):
            continue  # already past
        if other.v < 0.3:
            if to_cw < 1.0:
                return False
        elif to_cw < other.v**2 / (2.0 * 2.5) + 4.0:
            return False
    return True


def _try_lane_change(agent: Agent, snap: _Snapshot, i: int, t: float) -> None:
    """Start the planned lane change once it is due, allowed here, and the target lane has a gap around us."""
    earliest, target = agent.planned_lane_change
    if t < earliest or not agent.lane.lane_change_allowed(agent.s):
        return
    s_lo, s_hi = max(agent.s - 30.0, 0.0), min(agent.s + 30.0, agent.path.length)
    others = snap.active & ~snap.is_pedestrian
    others[i] = False
    idx = np.flatnonzero(others & (np.hypot(*(snap.xy - snap.xy[i]).T) < 40.0))
    if len(idx):
        s_proj, lateral = agent.path.project(snap.xy[idx], s_lo, s_hi)
        in_lane = np.abs(lateral - target) < 2.2
        ds = s_proj - agent.s
        blocked = in_lane & (ds > -(10.0 + agent.v)) & (ds < 8.0 + agent.v * 0.8)
        if blocked.any():
            return
    agent.lane_change = (t, agent.d, target, float(np.clip(2.5 + agent.v * 0.15, 3.0, 4.5)))
    agent.planned_lane_change = None


class Traffic:
    """One step of the behaviour model at a time, for every agent of a scene (agents[0] is the ego).

    `observe(t)` poses every active agent at time t (inactive ones keep their last pose) and returns the snapshot
    the obstacle queries read; `step(t, dt, snapshot)` then computes the IDM accelerations (with signals, junction
    and crosswalk rules, lane-change decisions) and integrates the agents over `dt`. The open-loop `simulate` runs
    these two over a scene; the closed loop edits a snapshot row (the ego at its driven pose) before `step` and
    integrates some agents itself (`kinematic`).
    """

    def __init__(self, world: World, agents: list[Agent]) -> None:
        self.world, self.agents = world, agents
        self.is_pedestrian = np.array([a.kind == "pedestrian" for a in agents])
        self.is_static = np.array([a.path is None for a in agents])
        self.sizes = np.stack([a.size for a in agents])
        self.left_turn_approach = np.array(
            [a.lane.approach if a.lane is not None and a.lane.turn == "left" else -1 for a in agents]
        )
        self.xy = np.zeros((len(agents), 2))
        self.yaw = np.zeros(len(agents))

    def observe(self, t: float) -> _Snapshot:
        """Poses (box centres), speeds and activity of all agents at time t."""
        speed = np.zeros(len(self.agents))
        active = np.zeros(len(self.agents), dtype=bool)
        for j, agent in enumerate(self.agents):
            if agent.active:
                self.xy[j], self.yaw[j] = _pose(agent, t)
            speed[j] = agent.v
            active[j] = agent.active
        return self.snapshot(self.xy.copy(), self.yaw.copy(), speed, active)

    def pose(self, j: int, t: float) -> tuple[np.ndarray, float]:
        """Box centre (2,) and yaw of agent j at time t."""
        return _pose(self.agents[j], t)

    def snapshot(self, xy: np.ndarray, yaw: np.ndarray, speed: np.ndarray, active: np.ndarray) -> _Snapshot:
        """The snapshot `step` reads, from given box centres (N, 2), yaws, speeds and activity (N,)."""
        return _Snapshot(
            xy, yaw, speed, active, self.is_pedestrian, self.is_static, self.sizes, self.left_turn_approach
        )

    def step(
        self,
        t: float,
        dt: float,
        snap: _Snapshot,
        update: Collection[int] | None = None,
        kinematic: Collection[int] = (),
    ) -> None:
        """Advance the moving agents in `update` (default: all) from t to t + dt against `snap`.

        Agents in `kinematic` get their decisions (lane changes) and bookkeeping but keep `s` and `v`: whoever
        moves them sets those.
        """
        agents, world = self.agents, self.world
        indices = range(len(agents)) if update is None else sorted(update)
        accel = np.zeros(len(agents))
        busy = {a.crosswalk for a in agents if a.crosswalk is not None and a.wait_s <= a.s <= a.crossing_end_s}
        for j in indices:
            agent = agents[j]
            if not agent.moving or not agent.active:
                continue
            obstacles = _obstacle_gaps(j, agent, snap, t)
            v0 = agent.desired_speed_mps
            if agent.kind == "pedestrian":
                if agent.wait_s is not None and agent.s < agent.wait_s:
                    if agent.wait_s - agent.s < 3.0 and not _crossing_safe(agent, agents, world, t):
                        obstacles.append((agent.wait_s - agent.s, 0.0))
            else:
                obstacles += _vehicle_constraints(agent, agents, world, t, busy)
                k0 = int(np.searchsorted(agent.path.s, agent.s))
                k1 = int(np.searchsorted(agent.path.s, agent.s + 40.0))
                if k1 > k0:
                    ahead = agent.path.s[k0:k1] - agent.s
                    limit = np.sqrt(agent.curve_speed_mps[k0:k1] ** 2 + 2.0 * agent.comfort_decel_mps2 * ahead)
                    v0 = min(v0, float(limit.min()))
                if agent.planned_lane_change is not None:
                    _try_lane_change(agent, snap, j, t)
            accel[j] = _idm(agent, v0, obstacles)
        for j in indices:
            agent = agents[j]
            if not agent.moving or not agent.active:
                continue
            if j not in kinematic:
                v_new = max(agent.v + accel[j] * dt, 0.0)
                agent.s += 0.5 * (agent.v + v_new) * dt
                agent.v = v_new
            if agent.lane_change is not None and t + dt >= agent.lane_change[0] + agent.lane_change[3]:
                agent.d = agent.lane_change[2]
                agent.lane_change = None
            if agent.stop_event is not None and t + dt >= sum(agent.stop_event):
                agent.stop_event, agent.stop_point_s = None, None
            if agent.s >= agent.path.length - agent.size[0] / 2:
                agent.active = agent is agents[0]  # the ego's routes are long enough; others leave the map
                agent.s = min(agent.s, agent.path.length)


@dataclass
class StepHistory:
    """The state of every agent (N, the ego first) at every simulation step (S steps of `dt` from t = 0)."""

    xy: np.ndarray  # (S, N, 2) box centres
    yaw: np.ndarray  # (S, N)
    speed: np.ndarray  # (S, N)
    active: np.ndarray  # (S, N) bool
    s: np.ndarray  # (S, N) arc length along the path (0 for static agents)


def simulate_steps(world: World, agents: list[Agent], dt: float, num_steps: int) -> StepHistory:
    """Run the behaviour model for `num_steps` steps of `dt` seconds from t = 0; agents[0] is the ego."""
    n = len(agents)
    history = StepHistory(
        xy=np.zeros((num_steps, n, 2)),
        yaw=np.zeros((num_steps, n)),
        speed=np.zeros((num_steps, n)),
        active=np.zeros((num_steps, n), dtype=bool),
        s=np.zeros((num_steps, n)),
    )
    traffic = Traffic(world, agents)
    for step in range(num_steps):
        t = step * dt
        snap = traffic.observe(t)
        history.xy[step], history.yaw[step], history.speed[step] = snap.xy, snap.yaw, snap.speed
        history.active[step] = snap.active
        history.s[step] = [a.s for a in agents]
        traffic.step(t, dt, snap)
    return history


def simulate(world: World, agents: list[Agent], config: SimConfig) -> SceneTrack:
    """Run the scene and sample it at keyframes. agents[0] is the ego."""
    num_steps = (config.num_keyframes - 1) * config.steps_per_keyframe + 2  # one past the last keyframe
    history = simulate_steps(world, agents, config.sim_step_s, num_steps)
    steps = np.arange(config.num_keyframes) * config.steps_per_keyframe
    ego_s, times_s = history.s[steps, 0], steps * config.sim_step_s
    signals = [_ego_signal(world, agents[0], float(s), float(t)) for s, t in zip(ego_s, times_s, strict=True)]
    return _keyframe_track(agents, config, history.xy, history.yaw, history.speed, history.active, signals)


def _ego_signal(world: World, ego: Agent, s: float, t: float) -> tuple[str, float] | None:
    """The signal the ego faces at arc length `s` (its box centre) and time `t`: (state, stop-line distance from
    the ego origin, m), or None when its route has no stop line or its front has passed it."""
    lane = ego.lane
    if lane is None or lane.stop_s is None or s + ego.size[0] / 2 >= lane.stop_s:
        return None
    return world.signal_state(lane.approach, t), float(lane.stop_s - (s - EGO_CENTER_AHEAD_M))


def _keyframe_track(
    agents: list[Agent],
    config: SimConfig,
    xy_hist: np.ndarray,
    yaw_hist: np.ndarray,
    speed_hist: np.ndarray,
    active_hist: np.ndarray,
    ego_signal: list[tuple[str, float] | None],
) -> SceneTrack:
    dt = config.sim_step_s
    steps = np.arange(config.num_keyframes) * config.steps_per_keyframe
    prev = np.maximum(steps - 1, 0)
    span_s = ((steps + 1 - prev) * dt)[:, None, None]
    velocity_all = (xy_hist[steps + 1] - xy_hist[prev]) / span_s
    present = active_hist[steps] & active_hist[steps + 1]  # agents leaving the map drop out a step early
    ego_heading = np.stack([np.cos(yaw_hist[:, 0]), np.sin(yaw_hist[:, 0])], axis=1)
    ego_origin = xy_hist[:, 0] - EGO_CENTER_AHEAD_M * ego_heading  # (steps, 2)
    ego_velocity = (ego_origin[steps + 1] - ego_origin[prev]) / span_s[:, :, 0]
    others = list(range(1, len(agents)))
    attributes = [[_attribute(agents[j], speed_hist[step, j]) for j in others] for step in steps]
    return SceneTrack(
        times_s=steps * dt,
        ego_xy=ego_origin[steps],
        ego_yaw=yaw_hist[steps, 0],
        ego_velocity=ego_velocity,
        categories=[agents[j].category for j in others],
        sizes=np.stack([agents[j].size for j in others]) if others else np.zeros((0, 3)),
        brightness=np.array([agents[j].brightness for j in others]),
        present=present[:, 1:],
        xy=xy_hist[steps][:, 1:],
        yaw=yaw_hist[steps][:, 1:],
        velocity=velocity_all[:, 1:],
        attributes=attributes,
        ego_signal=ego_signal,
    )


def _attribute(agent: Agent, speed: float) -> str | None:
    """nuScenes attribute from the agent kind and current speed."""
    if agent.static_attribute is not None or agent.kind == "object":
        return agent.static_attribute
    if agent.kind == "pedestrian":
        return "pedestrian.moving" if speed > WALKING_SPEED_MPS else "pedestrian.standing"
    if agent.kind == "cycle":
        return "cycle.with_rider"
    return "vehicle.moving" if speed > MOVING_SPEED_MPS else "vehicle.stopped"
