"""The closed-loop world: a scenario stepped at `sim_step_s` with the ego driven by a planner's trajectories.

Per planning tick (every `LoopConfig.planning_interval_s`): the six cameras are rendered at the ego's actual pose
(`render`), a planner turns them and the ego history (`ego_poses`) into waypoints, and `drive(plan)` runs the world
to the next tick. Within a tick, each simulation step (i) takes the agents' snapshot at time t with the ego's row
at its driven pose, (ii) advances the agents to t + dt by the behaviour model (`reactive`) or from the log
(non-reactive: everyone else replays the behaviour model's drive with the expert ego, as NAVSIM's background
agents replay their recorded motion), and (iii) advances the ego by the tracker and the kinematic bicycle
(`vehicle`) at `control_step_s`. The ego's own behaviour-model state (its lane, its lane-change decisions) follows
the driven ego along its route; `expert_plan` rolls that model forward for the planning horizon: the privileged
expert. Everything is deterministic: the same scenario and commands give the same run.

`EpisodeRecord` is the ground truth of a run for the metrics: the ego states at every control step, every agent at
every simulation step, the route and the map (`drivable`, `lane_ids`, `in_junction`, `route_progress`).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from occvla_hf.constants import CAMERA_NAMES, WAYPOINT_STEP_S
from occvla_hf.geometry import wrap_angle
from occvla_hf.sim.agents import EGO_CENTER_AHEAD_M, Traffic
from occvla_hf.sim.cameras import camera_rays
from occvla_hf.sim.closed_loop.scenarios import PLANNING_HORIZON_S, Scenario, ScenarioScene
from occvla_hf.sim.closed_loop.vehicle import WHEELBASE_M, EgoState, TrajectoryTracker, VehicleLimits, bicycle_step
from occvla_hf.sim.geometry import Polyline, world_to_frame_2d
from occvla_hf.sim.layout import DRIVEABLE, World
from occvla_hf.sim.render import TEXTURE_SEED, cast_camera, jpeg_bytes, noise_texture, shade_camera
from occvla_hf.sim.scene import frame_boxes, sun_in_ego_frame

ROUTE_DEVIATION_M: float = 30.0  # the run ends farther than this from the route (CARLA's InRouteTest offroad_max)
OUTSIDE_LANES: int = -1  # `lane_ids` of points on no lane
JUNCTION: int = -2  # `lane_ids` of points inside the junction box
_PROJECTION_WINDOW_M: tuple[float, float] = (-10.0, 40.0)  # route search window around the last progress


@dataclass(frozen=True)
class LoopConfig:
    """How the closed loop runs.

    Args:
        planning_interval_s: Time between planning ticks (2 Hz by default); a multiple of the simulation step.
        control_step_s: Integration step of the ego's controller and bicycle model; divides the simulation step.
        limits: Actuator limits of the ego.
        expert_radius_m: Agents the reactive expert's rollout steps (farther ones cannot reach the ego in time).
    """

    planning_interval_s: float = 0.5
    control_step_s: float = 0.05
    limits: VehicleLimits = field(default_factory=VehicleLimits)
    expert_radius_m: float = 100.0


@dataclass
class EpisodeRecord:
    """Ground truth of one run from the takeover (t0) to its end. C control steps, S simulation steps, N agents.

    Agents are the scene's others (the ego excluded) in `ScenarioScene.agents[1:]` order; `agent_kinds` are the
    behaviour model's kinds ("vehicle", "cycle", "pedestrian", "object").
    """

    scenario: Scenario
    reactive: bool
    world: World
    route: Polyline
    route_start_s: float
    ego_times_s: np.ndarray  # (C,)
    ego_states: np.ndarray  # (C, 6) x, y, yaw, speed, accel, steer (origin, world frame)
    agent_times_s: np.ndarray  # (S,)
    agent_xy: np.ndarray  # (S, N, 2) box centres
    agent_yaw: np.ndarray  # (S, N)
    agent_speed: np.ndarray  # (S, N)
    agent_active: np.ndarray  # (S, N) bool
    agent_sizes: np.ndarray  # (N, 3) length, width, height
    agent_kinds: list[str]  # (N,)
    stop_line_s: float | None  # route arc length of the ego approach's stop line (None off junctions)
    approach: int | None  # junction approach of the route (its signal)
    termination: str  # "time limit", "route deviation" or "running"
    plans: list[tuple[float, np.ndarray]]  # (tick time, (6, 2) world-frame waypoints) of every planning tick


class ClosedLoopWorld:
    """One closed-loop run of a scenario (see the module docstring)."""

    def __init__(self, scene: ScenarioScene, reactive: bool = True, config: LoopConfig | None = None) -> None:
        self.scene, self.reactive = scene, reactive
        self.config = config = config or LoopConfig()
        dt = scene.config.sim_step_s
        self.steps_per_tick = _ratio(config.planning_interval_s, dt, "planning_interval_s", divisor=False)
        self.substeps = _ratio(dt, config.control_step_s, "control_step_s", divisor=True)
        self.dt = dt
        self.agents = scene.fresh_agents()
        self.traffic = Traffic(scene.world, self.agents)
        for step in range(scene.start_step):  # the warm-up: identical to the log
            t = step * dt
            self.traffic.step(t, dt, self.traffic.observe(t))
        self.step_index = scene.start_step
        log, i = scene.log, scene.start_step
        previous = max(i - 1, 0)
        # Ego origin poses at every simulation step so far: the log's (computed as the open-loop track computes its
        # keyframe poses), then the driven ones. They give the ego status.
        heading = np.stack([np.cos(log.yaw[:, 0]), np.sin(log.yaw[:, 0])], axis=1)
        self._pose_xy = list((log.xy[:, 0] - EGO_CENTER_AHEAD_M * heading)[: i + 1])
        self._pose_yaw = list(log.yaw[: i + 1, 0])
        speed = float(log.speed[i, 0])
        yaw_rate = float(wrap_angle(log.yaw[i, 0] - log.yaw[previous, 0])) / dt
        self.ego = EgoState(
            x=float(self._pose_xy[i][0]),
            y=float(self._pose_xy[i][1]),
            yaw=float(log.yaw[i, 0]),
            speed_mps=speed,
            accel_mps2=float(log.speed[i, 0] - log.speed[previous, 0]) / dt,
            steer_rad=float(np.arctan(yaw_rate * WHEELBASE_M / speed)) if speed > 0.5 else 0.0,
        )
        self.route_s = float(log.s[i, 0])
        self.termination: str | None = None
        self.snapshot = self._snapshot(i)
        self._ego_times, self._ego_states = [self.time_s], [self._state_row()]
        self._agent_rows = [self._agent_row()]
        self.plans: list[tuple[float, np.ndarray]] = []

    # ------------------------------------------------------------------------------------------------ queries

    @property
    def time_s(self) -> float:
        return self.step_index * self.dt

    @property
    def done(self) -> bool:
        return self.termination is not None

    def ego_poses(self, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ego origins (K, 2) and yaws (K,) at past simulation-step times (K,), world frame."""
        steps = np.round(np.asarray(times_s) / self.dt).astype(int)
        if steps.min() < 0 or steps.max() > self.step_index:
            raise ValueError(f"times_s: expected times in [0, {self.time_s}] s, got {times_s}")
        return np.stack([self._pose_xy[k] for k in steps]), np.array([self._pose_yaw[k] for k in steps])

    def render(self, cameras: tuple[str, ...] = CAMERA_NAMES) -> list[np.ndarray]:
        """(H, W, 3) uint8 images of `cameras` (in CAMERA_NAMES order) at the ego's pose, through the dataset's JPEG
        encoding."""
        unknown = sorted(set(cameras) - set(CAMERA_NAMES))
        if unknown:
            raise ValueError(f"cameras: unknown names {unknown}; expected some of {CAMERA_NAMES}")
        scene, snap = self.scene, self.snapshot
        others = np.flatnonzero(snap.active[1:])
        sizes = self.traffic.sizes[others + 1]
        boxes = np.column_stack([snap.xy[others + 1], sizes[:, 2] / 2.0, sizes, snap.yaw[others + 1]])
        categories = [a.category for a in self.agents[1:]]
        brightness = np.array([a.brightness for a in self.agents[1:]])
        ego_xy, ego_yaw = self.ego.xy, self.ego.yaw
        frame = frame_boxes(scene.world, ego_xy, ego_yaw, others, boxes, categories, brightness)
        sun = sun_in_ego_frame(scene.sun_world, ego_yaw)
        texture = _texture()
        images = []
        for rays in camera_rays(scene.config.scale):
            if rays.name not in cameras:
                continue
            cast = cast_camera(rays, frame)
            image = shade_camera(rays, cast, frame, scene.world.ground, ego_xy, ego_yaw, sun, texture)
            encoded = jpeg_bytes(image, scene.config.jpeg_quality)
            images.append(np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")))
        return images

    # ---------------------------------------------------------------------------------------------- stepping

    def drive(self, plan: np.ndarray) -> None:
        """Follow `plan` ((6, 2) waypoints, metres, in the current ego frame) until the next planning tick."""
        if self.done:
            raise RuntimeError("drive: the run has ended")
        tracker = TrajectoryTracker(plan, self.ego)
        self.plans.append((self.time_s, tracker.waypoints_world))
        dc = self.config.control_step_s
        for k in range(self.steps_per_tick):
            self._step_agents()
            for sub in range(self.substeps):
                elapsed = (k * self.substeps + sub) * dc
                accel, steer = tracker.command(self.ego, elapsed)
                self.ego = bicycle_step(self.ego, accel, steer, dc, self.config.limits)
                self._ego_times.append(self.scene.start_step * self.dt + len(self._ego_states) * dc)
                self._ego_states.append(self._state_row())
            self.step_index += 1
            self._pose_xy.append(self.ego.xy)
            self._pose_yaw.append(self.ego.yaw)
            self._follow_route()
            self.snapshot = self._snapshot(self.step_index)
            self._agent_rows.append(self._agent_row())
            if self.done:
                return
            if self.step_index >= self.scene.end_step:
                self.termination = "time limit"
                return

    def expert_plan(self) -> np.ndarray:
        """(6, 2) waypoints in the current ego frame: the behaviour model driving the ego from now over the planning
        horizon. It sees every agent and the signals; the others' future is the log (non-reactive runs) or, with
        reactive agents, each agent within `expert_radius_m` going on along its path at its current speed."""
        dt, t0 = self.dt, self.time_s
        horizon = round(PLANNING_HORIZON_S / dt)
        every = round(WAYPOINT_STEP_S / dt)
        ego = copy.copy(self.agents[0])
        if self.reactive:
            near = np.hypot(*(self.snapshot.xy - self.ego.center_xy).T) < self.config.expert_radius_m
            members = [ego] + [copy.copy(self.agents[j]) for j in np.flatnonzero(near) if j > 0]
        else:
            members = [ego] + self.agents[1:]
        rollout = Traffic(self.scene.world, members)
        centres, yaws = [], []
        for h in range(horizon + 1):
            t = t0 + h * dt
            if self.reactive:
                snap = rollout.observe(t)
            else:
                self._replay(self.step_index + h)
                xy, yaw = rollout.pose(0, t)
                snap = self._log_snapshot(self.step_index + h, rollout, xy, yaw, ego.v)
            if h > 0 and h % every == 0:
                centres.append(snap.xy[0].copy())
                yaws.append(snap.yaw[0])
            if h < horizon:
                rollout.step(t, dt, snap, update=(0,))
                if self.reactive:
                    for other in members[1:]:
                        if other.moving and other.active:
                            other.s = min(other.s + other.v * dt, other.path.length)
        if not self.reactive:
            self._replay(self.step_index)
        yaws = np.array(yaws)
        origins = np.stack(centres) - EGO_CENTER_AHEAD_M * np.stack([np.cos(yaws), np.sin(yaws)], axis=1)
        return world_to_frame_2d(origins, self.ego.xy, self.ego.yaw)

    def record(self) -> EpisodeRecord:
        """The ground truth of the run so far."""
        scene, rows = self.scene, self._agent_rows
        start, end = scene.start_step, self.step_index
        lane = scene.ego_lane
        return EpisodeRecord(
            scenario=scene.scenario,
            reactive=self.reactive,
            world=scene.world,
            route=scene.route,
            route_start_s=scene.route_start_s,
            ego_times_s=np.array(self._ego_times),
            ego_states=np.array(self._ego_states),
            agent_times_s=np.arange(start, end + 1) * self.dt,
            agent_xy=np.stack([r[0] for r in rows]),
            agent_yaw=np.stack([r[1] for r in rows]),
            agent_speed=np.stack([r[2] for r in rows]),
            agent_active=np.stack([r[3] for r in rows]),
            agent_sizes=self.traffic.sizes[1:].copy(),
            agent_kinds=[a.kind for a in self.agents[1:]],
            stop_line_s=lane.stop_s,
            approach=lane.approach,
            termination=self.termination or "running",
            plans=list(self.plans),
        )

    # ------------------------------------------------------------------------------------------------ internals

    def _state_row(self) -> list[float]:
        e = self.ego
        return [e.x, e.y, e.yaw, e.speed_mps, e.accel_mps2, e.steer_rad]

    def _agent_row(self) -> tuple[np.ndarray, ...]:
        snap = self.snapshot
        return snap.xy[1:].copy(), snap.yaw[1:].copy(), snap.speed[1:].copy(), snap.active[1:].copy()

    def _snapshot(self, step: int):
        """Everyone at simulation step `step`, the ego's row at its driven pose."""
        center = self.ego.center_xy
        if self.reactive:
            snap = self.traffic.observe(step * self.dt)
            snap.xy[0], snap.yaw[0], snap.speed[0] = center, self.ego.yaw, self.ego.speed_mps
            return snap
        return self._log_snapshot(step, self.traffic, center, self.ego.yaw, self.ego.speed_mps)

    def _log_snapshot(self, step: int, traffic: Traffic, ego_xy: np.ndarray, ego_yaw: float, ego_speed: float):
        log = self.scene.log
        snap = traffic.snapshot(
            log.xy[step].copy(), log.yaw[step].copy(), log.speed[step].copy(), log.active[step].copy()
        )
        snap.xy[0], snap.yaw[0], snap.speed[0], snap.active[0] = ego_xy, ego_yaw, ego_speed, True
        return snap

    def _replay(self, step: int) -> None:
        """Set every other agent to its logged state at `step` (non-reactive runs)."""
        log = self.scene.log
        for j in range(1, len(self.agents)):
            agent = self.agents[j]
            agent.s, agent.v, agent.active = float(log.s[step, j]), float(log.speed[step, j]), bool(log.active[step, j])

    def _step_agents(self) -> None:
        """Advance the agents from the current step to the next against the current snapshot."""
        t = self.time_s
        if self.reactive:
            self.traffic.step(t, self.dt, self.snapshot, kinematic=(0,))
        else:
            self._replay(self.step_index)
            self.traffic.step(t, self.dt, self.snapshot, update=(0,), kinematic=(0,))

    def _follow_route(self) -> None:
        """Move the ego's behaviour-model state to the driven ego (its box centre projected on the route, its speed);
        end the run if the ego left its route."""
        lo, hi = _PROJECTION_WINDOW_M
        route = self.scene.route
        s, lateral = route.project(self.ego.center_xy[None], max(self.route_s + lo, 0.0), self.route_s + hi)
        if abs(lateral[0]) > ROUTE_DEVIATION_M:
            self.termination = "route deviation"
            return
        self.route_s = float(s[0])
        self.agents[0].s, self.agents[0].v = self.route_s, self.ego.speed_mps


def route_progress(route: Polyline, xy: np.ndarray, start_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Arc lengths (T,) and lateral offsets (T,) of a path of points (T, 2) along `route`, each searched near the
    previous one (from `start_s`), so that a route passing a place twice is followed in order."""
    lo, hi = _PROJECTION_WINDOW_M
    s_out, lateral_out = np.zeros(len(xy)), np.zeros(len(xy))
    current = start_s
    for t, point in enumerate(np.asarray(xy, dtype=np.float64)):
        s, lateral = route.project(point[None], max(current + lo, 0.0), current + hi)
        current = float(s[0])
        s_out[t], lateral_out[t] = current, float(lateral[0])
    return s_out, lateral_out


def drivable(world: World, xy: np.ndarray) -> np.ndarray:
    """(...,) bool: points (..., 2) lie on the driveable surface (roads, parking strips, the junction)."""
    classes, _ = world.ground.lookup(np.asarray(xy, dtype=np.float64))
    return classes == DRIVEABLE


def in_junction(world: World, xy: np.ndarray) -> np.ndarray:
    """(...,) bool: points (..., 2) lie inside the junction box (all False without a junction)."""
    xy = np.asarray(xy, dtype=np.float64)
    if world.junction is None:
        return np.zeros(xy.shape[:-1], dtype=bool)
    return np.all(np.abs(xy - world.junction.center) <= world.junction.half_size_m, axis=-1)


def lane_ids(world: World, xy: np.ndarray) -> np.ndarray:
    """(...,) int: the driving lane under each point (..., 2), `JUNCTION` inside the junction box, `OUTSIDE_LANES`
    elsewhere (parking strips, off the road). Lane ids are 100 * road + 10 * (left of its centre line) + lane."""
    xy = np.asarray(xy, dtype=np.float64)
    flat = xy.reshape(-1, 2)
    ids = np.full(len(flat), OUTSIDE_LANES, dtype=np.int64)
    best = np.full(len(flat), np.inf)
    width = world.section.lane_width_m
    lanes_width = world.section.lanes_per_direction * width
    for r, road in enumerate(world.roads):
        s, lateral = road.centerline.project(flat)
        inside = (s > 0.0) & (s < road.centerline.length) & (np.abs(lateral) < lanes_width) & (np.abs(lateral) < best)
        lane = np.minimum(np.floor(np.abs(lateral) / width), world.section.lanes_per_direction - 1).astype(np.int64)
        ids = np.where(inside, 100 * r + 10 * (lateral > 0) + lane, ids)
        best = np.where(inside, np.abs(lateral), best)
    ids = np.where(in_junction(world, flat), JUNCTION, ids)
    return ids.reshape(xy.shape[:-1])


def _ratio(long_s: float, short_s: float, name: str, divisor: bool) -> int:
    """The whole number long_s / short_s; ValueError naming `name` (the short one if `divisor`) otherwise."""
    ratio = round(long_s / short_s)
    if ratio < 1 or abs(ratio * short_s - long_s) > 1e-9:
        if divisor:
            raise ValueError(f"{name}: expected a divisor of the simulation step {long_s} s, got {short_s}")
        raise ValueError(f"{name}: expected a multiple of the simulation step {short_s} s, got {long_s}")
    return ratio


@lru_cache(maxsize=1)
def _texture() -> np.ndarray:
    return noise_texture(TEXTURE_SEED)
