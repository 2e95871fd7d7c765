"""occvla_hf.sim.closed_loop: the sim as a simulator. A planner drives the ego through typed scenarios.

`build_scenario(Scenario(type, index, seed), config)` stages a scenario (`standard_scenarios()` lists the standard
set); `ClosedLoopWorld(scene, reactive)` runs it: `render()` the cameras at the ego's pose, `drive(plan)` to the next
planning tick, `expert_plan()` for the privileged expert, `record()` for the metrics' ground truth.
"""

from occvla_hf.sim.closed_loop.scenarios import (
    SCENARIO_TYPES,
    Scenario,
    ScenarioScene,
    build_scenario,
    logged_scene,
    standard_scenarios,
)
from occvla_hf.sim.closed_loop.vehicle import EgoState, TrajectoryTracker, VehicleLimits, bicycle_step
from occvla_hf.sim.closed_loop.world import (
    ClosedLoopWorld,
    EpisodeRecord,
    LoopConfig,
    drivable,
    in_junction,
    lane_ids,
    route_progress,
)

__all__ = [
    "SCENARIO_TYPES",
    "ClosedLoopWorld",
    "EgoState",
    "EpisodeRecord",
    "LoopConfig",
    "Scenario",
    "ScenarioScene",
    "TrajectoryTracker",
    "VehicleLimits",
    "bicycle_step",
    "build_scenario",
    "drivable",
    "in_junction",
    "lane_ids",
    "logged_scene",
    "route_progress",
    "standard_scenarios",
]
