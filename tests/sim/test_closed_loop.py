"""The closed-loop sim: bicycle and tracker, the scenario set, the world (rendering, replay, expert, routes)."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from PIL import Image

from occvla_hf.constants import CAMERA_NAMES, NUM_WAYPOINTS, WAYPOINT_STEP_S
from occvla_hf.sim import SimConfig
from occvla_hf.sim.closed_loop import (
    SCENARIO_TYPES,
    ClosedLoopWorld,
    EgoState,
    LoopConfig,
    Scenario,
    TrajectoryTracker,
    VehicleLimits,
    bicycle_step,
    build_scenario,
    drivable,
    lane_ids,
    logged_scene,
    standard_scenarios,
)
from occvla_hf.sim.closed_loop.scenarios import WARMUP_S
from occvla_hf.sim.closed_loop.world import JUNCTION, OUTSIDE_LANES
from occvla_hf.sim.geometry import world_to_frame_2d
from occvla_hf.sim.scene import scene_setup
from tests.sim.conftest import CONFIG, SEED

SMALL = SimConfig(scale=0.05)


def _straight_plan(speed_mps: float) -> np.ndarray:
    t = WAYPOINT_STEP_S * np.arange(1, NUM_WAYPOINTS + 1)
    return np.stack([speed_mps * t, np.zeros_like(t)], axis=1)


def test_bicycle_respects_acceleration_jerk_and_steering_limits():
    limits = VehicleLimits()
    state = EgoState(0.0, 0.0, 0.0, 10.0, 0.0, 0.0)
    for _ in range(4):  # 0.2 s of a full brake and a full steer request
        state = bicycle_step(state, -100.0, 2.0, 0.05, limits)
    assert state.accel_mps2 == pytest.approx(-limits.max_jerk_mps3 * 0.2)
    assert state.steer_rad == pytest.approx(limits.max_steer_rate_radps * 0.2)
    for _ in range(200):
        state = bicycle_step(state, -100.0, 2.0, 0.05, limits)
    assert state.accel_mps2 == 0.0 and state.speed_mps == 0.0  # stopped, not reversing
    assert state.steer_rad == pytest.approx(limits.max_steer_rad)


def test_bicycle_drives_the_circle_of_its_steering_angle():
    state = EgoState(0.0, 0.0, 0.0, 5.0, 0.0, 0.3)
    for _ in range(400):
        state = bicycle_step(state, 0.0, 0.3, 0.01)
    radius = 2.588 / np.tan(0.3)
    assert np.hypot(state.x, state.y - radius) == pytest.approx(radius, rel=1e-3)


def test_tracker_follows_a_constant_speed_plan_and_stops_on_a_standing_plan():
    state = EgoState(0.0, 0.0, 0.0, 8.0, 0.0, 0.0)
    tracker = TrajectoryTracker(_straight_plan(8.0), state)
    for k in range(40):  # 2 s
        state = bicycle_step(state, *tracker.command(state, k * 0.05), 0.05)
    assert state.x == pytest.approx(16.0, abs=0.2) and abs(state.y) < 1e-6 and state.speed_mps == pytest.approx(8.0)
    standing = TrajectoryTracker(np.zeros((NUM_WAYPOINTS, 2)), state)
    for k in range(100):
        state = bicycle_step(state, *standing.command(state, k * 0.05), 0.05)
    assert state.speed_mps == 0.0
    with pytest.raises(ValueError, match="plan"):
        TrajectoryTracker(np.full((NUM_WAYPOINTS, 2), np.nan), state)


def test_standard_set_has_every_type_and_at_least_40_scenarios():
    scenarios = standard_scenarios()
    assert len(scenarios) >= 40 and len({s.name for s in scenarios}) == len(scenarios)
    assert {s.scenario_type for s in scenarios} == set(SCENARIO_TYPES)
    assert [s.name for s in standard_scenarios(types=("red_light",), per_type=2)] == ["red_light_00", "red_light_01"]
    with pytest.raises(ValueError, match="types"):
        standard_scenarios(types=("rush_hour",))


def test_scenarios_build_deterministically_and_differ_by_seed():
    first, again = (
        build_scenario(Scenario("lead_vehicle_brakes", 0), SMALL),
        build_scenario(Scenario("lead_vehicle_brakes", 0), SMALL),
    )
    np.testing.assert_array_equal(first.log.xy, again.log.xy)
    other = build_scenario(Scenario("lead_vehicle_brakes", 0, seed=1), SMALL)
    assert other.log.xy.shape != first.log.xy.shape or not np.array_equal(other.log.xy, first.log.xy)
    assert first.log.xy.shape[0] * SMALL.sim_step_s >= WARMUP_S + first.scenario.duration_s


def test_log_of_an_unstaged_scene_is_the_open_loop_track(scenes):
    world, agents, sun = scene_setup(np.random.SeedSequence([SEED, 0]), CONFIG)
    logged = logged_scene(Scenario("free_driving", 0, SEED), CONFIG, world, agents, sun)
    track = scenes[0].track
    steps = np.arange(track.num_keyframes) * CONFIG.steps_per_keyframe
    np.testing.assert_array_equal(logged.log.xy[steps, 1:], track.xy)
    np.testing.assert_array_equal(logged.log.yaw[steps, 0], track.ego_yaw)


def test_rendered_cameras_at_the_logged_pose_equal_the_dataset_frame(dataroot, nusc: NuScenes):
    """The world at the takeover (keyframe 2 of the log) renders the dataset's JPEGs of that keyframe, bit for bit."""
    world, agents, sun = scene_setup(np.random.SeedSequence([SEED, 0]), CONFIG)
    closed = ClosedLoopWorld(logged_scene(Scenario("free_driving", 0, SEED), CONFIG, world, agents, sun))
    keyframe = round(WARMUP_S * CONFIG.keyframe_rate_hz)
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    for _ in range(keyframe):
        sample = nusc.get("sample", sample["next"])
    for name, image in zip(CAMERA_NAMES, closed.render()):
        path = dataroot / nusc.get("sample_data", sample["data"][name])["filename"]
        np.testing.assert_array_equal(image, np.asarray(Image.open(path).convert("RGB")), err_msg=name)


@pytest.mark.parametrize("reactive", [True, False])
def test_same_commands_give_the_same_run_and_the_expert_follows_its_route(reactive):
    scene = build_scenario(Scenario("stopped_car_in_lane", 1), SMALL)
    records = []
    for _ in range(2):
        world = ClosedLoopWorld(scene, reactive=reactive)
        while not world.done:
            world.drive(world.expert_plan())
        records.append(world.record())
    np.testing.assert_array_equal(records[0].ego_states, records[1].ego_states)
    np.testing.assert_array_equal(records[0].agent_xy, records[1].agent_xy)
    assert records[0].termination == "time limit"
    end = scene.end_step
    logged_progress = scene.log.s[end, 0] - scene.log.s[scene.start_step, 0]
    driven = world.route_s - scene.route_start_s
    assert driven == pytest.approx(logged_progress, rel=0.1)  # the expert re-plans close to the logged behaviour


def test_non_reactive_agents_replay_their_log_and_reactive_ones_answer_the_ego():
    scene = build_scenario(Scenario("free_driving", 0), SMALL)
    records = []
    for reactive in (False, True):
        world = ClosedLoopWorld(scene, reactive=reactive)
        for _ in range(8):
            world.drive(np.zeros((NUM_WAYPOINTS, 2)))  # the ego stands still for 4 s
        records.append(world.record())
    steps = np.arange(scene.start_step, world.step_index + 1)
    np.testing.assert_array_equal(records[0].agent_xy, scene.log.xy[steps, 1:])
    # Reactive: the traffic behind stops behind the standing ego instead of driving on as logged.
    assert np.abs(records[1].agent_xy - records[0].agent_xy).max() > 5.0


def test_driving_away_from_the_route_ends_the_run():
    scene = build_scenario(Scenario("free_driving", 0), SMALL)
    world = ClosedLoopWorld(scene)
    target = world.ego.xy + 300.0 * np.array([-np.sin(world.ego.yaw), np.cos(world.ego.yaw)])  # far to the left
    t = WAYPOINT_STEP_S * np.arange(1, NUM_WAYPOINTS + 1)
    while not world.done:
        local = world_to_frame_2d(target, world.ego.xy, world.ego.yaw)
        world.drive(np.outer(6.0 * t, local / np.linalg.norm(local)))
    assert world.termination == "route deviation"
    assert world.time_s < WARMUP_S + scene.scenario.duration_s


def test_bad_loop_settings_are_rejected():
    scene = build_scenario(Scenario("free_driving", 1), SMALL)
    with pytest.raises(ValueError, match="planning_interval_s"):
        ClosedLoopWorld(scene, config=LoopConfig(planning_interval_s=0.3))
    with pytest.raises(ValueError, match="control_step_s"):
        ClosedLoopWorld(scene, config=LoopConfig(control_step_s=0.07))
    world = ClosedLoopWorld(scene)
    with pytest.raises(ValueError, match="plan"):
        world.drive(np.zeros((3, 2)))


def test_map_queries_tell_lanes_junction_and_drivable_area():
    scene = build_scenario(Scenario("red_light", 0), SMALL)
    world, lane = scene.world, scene.ego_lane
    on_lane, _ = lane.path.interpolate(lane.stop_s - 20.0)
    in_box = world.junction.center
    off_road = on_lane + np.array([0.0, -(world.section.driveable_half_width_m + 3.0)])
    assert drivable(world, np.stack([on_lane, in_box])).all() and not drivable(world, off_road[None])[0]
    ids = lane_ids(world, np.stack([on_lane, in_box, off_road]))
    assert ids[0] >= 0 and ids[1] == JUNCTION and ids[2] == OUTSIDE_LANES
    neighbour = on_lane + np.array([0.0, world.section.lane_width_m])  # the next lane to the left
    assert lane_ids(world, neighbour[None])[0] not in (ids[0], OUTSIDE_LANES, JUNCTION)
