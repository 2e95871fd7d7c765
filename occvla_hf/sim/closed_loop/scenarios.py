"""The closed-loop scenario set: typed situations built from fixed seeds on the sim's own worlds and traffic.

A scenario is a world of `build_world`, the traffic of `spawn_agents`, and an edit that stages one situation for
the ego (the rest of the traffic stays as spawned). Each has a route (the ego's lane path from where the planner
takes over) and a time limit. Types (`SCENARIO_TYPES`):

| type                | layout            | what the ego meets                                               | limit |
|---------------------|-------------------|------------------------------------------------------------------|-------|
| lead_vehicle_brakes | straight, curve   | the car 18-26 m ahead brakes to a stop 1.5-3.5 s in, stays       | 10 s  |
| stopped_car_in_lane | straight, curve   | a car stands in its lane 35-50 m ahead for 5-8 s, drives off     | 10 s  |
| red_light           | junction          | its light turns amber 35-40 m (at its speed) before the line     | 10 s  |
| pedestrian_crossing | straight, zebra   | a pedestrian steps onto the zebra 30-40 m ahead                  | 10 s  |
| unprotected_turn    | junction          | a left turn on green across two oncoming cars (junction clear)   | 14 s  |
| lane_change         | junction, 2 lanes | the route turns right from the other lane: change, turn on green | 12 s  |
| free_driving        | any               | the generator's scene as spawned                                 | 10 s  |

Scenario i of a type under seed s is built from `SeedSequence([s, SCENARIO_SEED_DOMAIN, type index, i, attempt])`,
the first attempt whose world fits the type (a crosswalk, two lanes per direction); `standard_scenarios()` (seed 0,
six per type: 42) is the standard set. The ego drives under the behaviour model for `WARMUP_S` before the planner
takes over, so its first ego status has a velocity and an acceleration; `ScenarioScene.log` holds that drive run
on to the end of the time limit plus the planning horizon: what non-reactive runs replay.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from occvla_hf.constants import NUM_WAYPOINTS, WAYPOINT_STEP_S
from occvla_hf.sim.agents import (
    EGO_SIZE_M,
    Agent,
    StepHistory,
    crossing_path,
    initial_position,
    new_pedestrian,
    new_vehicle,
    prepare_path,
    simulate_steps,
)
from occvla_hf.sim.config import SimConfig
from occvla_hf.sim.geometry import Polyline
from occvla_hf.sim.layout import LANE_WIDTH_M, LAYOUTS, LanePath, World
from occvla_hf.sim.scene import scene_setup

SCENARIO_SEED_DOMAIN: int = 17  # keeps scenario seeds apart from the dataset scenes' (seed, index)
WARMUP_S: float = 1.0
SCENARIOS_PER_TYPE: int = 6
MAX_ATTEMPTS: int = 20
PLANNING_HORIZON_S: float = NUM_WAYPOINTS * WAYPOINT_STEP_S
GREEN_THROUGHOUT_S: float = 20.0  # the green phase of scenarios that are not about the signal
_EGO_LENGTH_M = EGO_SIZE_M[0]


class _UnfitWorld(Exception):
    """The drawn world cannot stage the scenario type; the builder draws the next attempt."""


@dataclass(frozen=True)
class ScenarioType:
    """A kind of situation: its time limit and the function that stages it (rng, world, agents -> edits)."""

    name: str
    duration_s: float
    layouts: tuple[str, ...]
    stage: Callable[[np.random.Generator, World, list[Agent]], None] | None


@dataclass(frozen=True)
class Scenario:
    """Scenario `index` of `scenario_type` under `seed`."""

    scenario_type: str
    index: int
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.scenario_type}_{self.index:02d}"

    @property
    def duration_s(self) -> float:
        return SCENARIO_TYPES[self.scenario_type].duration_s


@dataclass
class ScenarioScene:
    """A built scenario. `agents` is the initial state (ego first) that every run copies; it is never stepped.

    `log` covers the simulation steps from t = 0 to the time limit plus the planning horizon; the planner takes
    over at step `start_step` (t = WARMUP_S) and the time limit ends at step `end_step`. Route progress is the arc
    length of the ego box centre along `route` (the ego's lane path) from `route_start_s`.
    """

    scenario: Scenario
    config: SimConfig
    world: World
    agents: list[Agent]
    sun_world: np.ndarray
    log: StepHistory
    start_step: int
    end_step: int
    route: Polyline
    route_start_s: float

    @property
    def ego_lane(self) -> LanePath:
        return self.agents[0].lane

    @property
    def command(self) -> str:
        """The route at the next junction: "straight", "left" or "right"."""
        return self.ego_lane.turn or "straight"

    def fresh_agents(self) -> list[Agent]:
        """Copies of the initial agents to step (their paths and lanes are shared, never mutated)."""
        return [copy.copy(agent) for agent in self.agents]


# ----------------------------------------------------------------------------------------------------- editing


def _place_ego(world: World, ego: Agent, lane: LanePath, s_at_start: float, speed: float, d: float = 0.0) -> None:
    """Put the ego on `lane` so that, driving at `speed`, it reaches arc length `s_at_start` when the planner
    takes over; it keeps that speed as its desired speed."""
    ego.path, ego.lane = lane.path, lane
    ego.s, ego.v, ego.d = s_at_start - speed * WARMUP_S, speed, d
    ego.desired_speed_mps = speed
    ego.planned_lane_change, ego.lane_change = None, None
    prepare_path(world, ego)


def _clear_lane(agents: list[Agent], lane: LanePath, s_from: float, s_to: float) -> list[Agent]:
    """The agents without the moving vehicles whose start lies in `lane` between two of its arc lengths."""
    kept = [agents[0]]
    for agent in agents[1:]:
        if agent.moving and agent.kind != "pedestrian":
            s, lateral = lane.path.project(initial_position(agent)[None])
            if s_from <= s[0] <= s_to and abs(lateral[0]) < LANE_WIDTH_M / 2 + 0.5:
                continue
        kept.append(agent)
    return kept


def _clear_around(agents: list[Agent], center: np.ndarray, radius_m: float) -> list[Agent]:
    """The agents without the moving vehicles that start within `radius_m` of `center`."""
    return [
        agent
        for j, agent in enumerate(agents)
        if j == 0
        or not (agent.moving and agent.kind != "pedestrian")
        or np.hypot(*(initial_position(agent) - center)) > radius_m
    ]


def _insert_vehicle(
    rng: np.random.Generator, world: World, agents: list[Agent], lane: LanePath, s_at_start: float, speed: float
) -> Agent:
    """A car on `lane` reaching `s_at_start` at the takeover at `speed` (its desired speed too)."""
    car = new_vehicle(rng, "car", lane, s_at_start - speed * WARMUP_S)
    car.v = car.desired_speed_mps = speed
    car.planned_lane_change = None
    prepare_path(world, car)
    agents.append(car)
    return car


def _lane(world: World, approach: int | None, lane: int, turn: str | None) -> LanePath:
    paths = world.ego_lane_paths if approach in (None, 0) else world.lane_paths
    return next(p for p in paths if p.lane == lane and p.turn == turn and (approach is None or p.approach == approach))


def _green_throughout(world: World) -> None:
    """Keep the ego's (and the opposite) arm green from before the takeover to past any time limit."""
    world.signal_cycle = (GREEN_THROUGHOUT_S, 2.5, 2.0)
    world.signal_offset_s = 1.0  # the ego's green began 1 s before t = 0


def _stage_lead_vehicle_brakes(rng: np.random.Generator, world: World, agents: list[Agent]) -> None:
    ego = agents[0]
    lane = world.ego_lane_paths[int(rng.integers(len(world.ego_lane_paths)))]
    speed, s_start = float(rng.uniform(8.0, 11.0)), 125.0
    _place_ego(world, ego, lane, s_start, speed)
    agents[:] = _clear_lane(agents, lane, ego.s - 20.0, s_start + 150.0)
    gap = float(rng.uniform(18.0, 26.0))  # bumper to bumper at the takeover
    leader = _insert_vehicle(rng, world, agents, lane, s_start + gap + (_EGO_LENGTH_M + 4.6) / 2, speed)
    leader.comfort_decel_mps2 = float(rng.uniform(2.5, 3.5))
    leader.stop_event = (WARMUP_S + float(rng.uniform(1.5, 3.5)), 60.0)


def _stage_stopped_car(rng: np.random.Generator, world: World, agents: list[Agent]) -> None:
    ego = agents[0]
    lane = world.ego_lane_paths[int(rng.integers(len(world.ego_lane_paths)))]
    speed, s_start = float(rng.uniform(8.0, 11.0)), 125.0
    _place_ego(world, ego, lane, s_start, speed)
    car_s = s_start + float(rng.uniform(35.0, 50.0))
    agents[:] = _clear_lane(agents, lane, ego.s - 20.0, car_s + 80.0)
    car = new_vehicle(rng, "car", lane, car_s)
    car.v = 0.0
    car.planned_lane_change = None
    car.stop_event = (0.0, WARMUP_S + float(rng.uniform(5.0, 8.0)))
    prepare_path(world, car)
    agents.append(car)


def _stage_red_light(rng: np.random.Generator, world: World, agents: list[Agent]) -> None:
    ego = agents[0]
    lane = _lane(world, 0, int(rng.integers(world.section.lanes_per_direction)), "straight")
    speed = float(rng.uniform(8.0, 9.5))
    amber_distance = float(rng.uniform(35.0, 40.0))  # front to stop line when the signal turns amber
    start_distance = amber_distance + float(rng.uniform(8.0, 15.0))
    _place_ego(world, ego, lane, lane.stop_s - start_distance - _EGO_LENGTH_M / 2, speed)
    agents[:] = _clear_lane(agents, lane, ego.s - 20.0, lane.exit_s + 20.0)
    amber_at_s = WARMUP_S + (start_distance - amber_distance) / speed
    green = world.signal_cycle[0]
    world.signal_offset_s = float((green - amber_at_s) % (2 * sum(world.signal_cycle)))


def _stage_pedestrian_crossing(rng: np.random.Generator, world: World, agents: list[Agent]) -> None:
    if not world.crosswalks:
        raise _UnfitWorld("no crosswalk")
    ego = agents[0]
    lane = world.ego_lane_paths[int(rng.integers(len(world.ego_lane_paths)))]
    cw = world.crosswalks[0]
    cw_s = float(lane.path.project(cw.center[None])[0][0])
    speed = float(rng.uniform(8.0, 10.0))
    s_start = cw_s - cw.width_m / 2 - float(rng.uniform(30.0, 40.0)) - _EGO_LENGTH_M / 2
    _place_ego(world, ego, lane, s_start, speed)
    agents[:] = _clear_lane(agents, lane, ego.s - 20.0, cw_s + 30.0)
    path, wait_s, end_s = crossing_path(world, cw, rng)
    walker = new_pedestrian(rng, path, max(wait_s - float(rng.uniform(0.5, 2.0)), 0.0))
    walker.wait_s, walker.crossing_end_s, walker.crosswalk = wait_s, end_s, 0
    agents.append(walker)


def _stage_unprotected_turn(rng: np.random.Generator, world: World, agents: list[Agent]) -> None:
    ego = agents[0]
    lane = _lane(world, 0, 0, "left")
    speed = float(rng.uniform(6.0, 8.0))
    entry_distance = float(rng.uniform(22.0, 32.0))
    _place_ego(world, ego, lane, lane.entry_s - entry_distance - _EGO_LENGTH_M / 2, speed)
    agents[:] = _clear_lane(agents, lane, ego.s - 20.0, lane.exit_s + 20.0)
    _green_throughout(world)
    oncoming = _lane(world, 2, 0, "straight")
    agents[:] = _clear_around(agents, world.junction.center, world.junction.stop_distance_m + 40.0)
    ego_arrival_s = entry_distance / speed
    oncoming_speed = float(rng.uniform(8.0, 10.0))
    first_s = oncoming.entry_s - oncoming_speed * (ego_arrival_s - float(rng.uniform(1.0, 2.0))) - 2.3
    for s_start in (first_s, first_s - float(rng.uniform(10.0, 14.0))):  # a platoon of two
        _insert_vehicle(rng, world, agents, oncoming, s_start, oncoming_speed)


def _stage_lane_change(rng: np.random.Generator, world: World, agents: list[Agent]) -> None:
    if world.section.lanes_per_direction != 2:
        raise _UnfitWorld("one lane per direction")
    ego = agents[0]
    route = _lane(world, 0, 1, "right")
    speed = float(rng.uniform(8.0, 10.0))
    s_start = route.stop_s - float(rng.uniform(60.0, 75.0))
    _place_ego(world, ego, route, s_start, speed, d=LANE_WIDTH_M)  # starts in lane 0, left of the route
    ego.planned_lane_change = (WARMUP_S + float(rng.uniform(0.0, 1.0)), 0.0)
    agents[:] = _clear_lane(agents, route, ego.s - 20.0, route.exit_s + 20.0)
    agents[:] = _clear_lane(agents, _lane(world, 0, 0, "straight"), ego.s - 20.0, ego.s + 40.0)
    _green_throughout(world)
    _insert_vehicle(rng, world, agents, _lane(world, 0, 1, "straight"), s_start + float(rng.uniform(25.0, 35.0)), speed)


SCENARIO_TYPES: dict[str, ScenarioType] = {
    t.name: t
    for t in (
        ScenarioType("lead_vehicle_brakes", 10.0, ("straight", "curve"), _stage_lead_vehicle_brakes),
        ScenarioType("stopped_car_in_lane", 10.0, ("straight", "curve"), _stage_stopped_car),
        ScenarioType("red_light", 10.0, ("intersection",), _stage_red_light),
        ScenarioType("pedestrian_crossing", 10.0, ("straight",), _stage_pedestrian_crossing),
        ScenarioType("unprotected_turn", 14.0, ("intersection",), _stage_unprotected_turn),
        ScenarioType("lane_change", 12.0, ("intersection",), _stage_lane_change),
        ScenarioType("free_driving", 10.0, LAYOUTS, None),
    )
}


# ----------------------------------------------------------------------------------------------------- building


def standard_scenarios(
    seed: int = 0, types: tuple[str, ...] | None = None, per_type: int = SCENARIOS_PER_TYPE
) -> list[Scenario]:
    """`per_type` scenarios of each of `types` (default: every type) under `seed`; seed 0 is the standard set."""
    types = tuple(SCENARIO_TYPES) if types is None else types
    unknown = [t for t in types if t not in SCENARIO_TYPES]
    if unknown:
        raise ValueError(f"types: unknown scenario types {unknown}; expected some of {list(SCENARIO_TYPES)}")
    if per_type < 1:
        raise ValueError(f"per_type: expected >= 1, got {per_type}")
    return [Scenario(t, i, seed) for t in types for i in range(per_type)]


def build_scenario(scenario: Scenario, config: SimConfig) -> ScenarioScene:
    """Draw the world and traffic of `scenario`, stage its situation and log the behaviour model driving it.

    `config` gives the image scale, JPEG quality and simulation step (scene duration: see `logged_scene`).
    """
    kind = SCENARIO_TYPES[scenario.scenario_type]
    type_index = list(SCENARIO_TYPES).index(kind.name)
    spawn_config = replace(config, scene_duration_s=WARMUP_S + kind.duration_s + PLANNING_HORIZON_S)
    for attempt in range(MAX_ATTEMPTS):
        seq = np.random.SeedSequence([scenario.seed, SCENARIO_SEED_DOMAIN, type_index, scenario.index, attempt])
        stage_rng = np.random.default_rng(seq.spawn(1)[0])
        layout = kind.layouts[int(stage_rng.integers(len(kind.layouts)))]
        world, agents, sun = scene_setup(seq, spawn_config, layout)
        try:
            if kind.stage is not None:
                kind.stage(stage_rng, world, agents)
        except _UnfitWorld:
            continue
        return logged_scene(scenario, config, world, agents, sun)
    raise RuntimeError(f"scenario {scenario.name}: no fitting world in {MAX_ATTEMPTS} attempts")


def logged_scene(
    scenario: Scenario, config: SimConfig, world: World, agents: list[Agent], sun_world: np.ndarray
) -> ScenarioScene:
    """The scenario of a staged world: the behaviour model's drive of it (`log`) and the ego's route.

    With the world and agents of `scene_setup(seed, config)` unstaged, the log's first steps are the traffic of the
    open-loop scene `simulate_scene(seed, config)`: its keyframe k lies at step k * config.steps_per_keyframe.
    """
    dt = config.sim_step_s
    duration_s = scenario.duration_s
    start_step, end_step = round(WARMUP_S / dt), round((WARMUP_S + duration_s) / dt)
    num_steps = round((WARMUP_S + duration_s + PLANNING_HORIZON_S) / dt) + 2
    log = simulate_steps(world, [copy.copy(agent) for agent in agents], dt, num_steps)
    return ScenarioScene(
        scenario=scenario,
        config=config,
        world=world,
        agents=agents,
        sun_world=sun_world,
        log=log,
        start_step=start_step,
        end_step=end_step,
        route=agents[0].path,
        route_start_s=float(log.s[start_step, 0]),
    )
