"""Traffic behaviour: car following, signals, and the variety of ego manoeuvres planning training needs."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.sim import SimConfig, dataset_scene
from occvla_hf.sim.agents import EGO_CENTER_AHEAD_M, EGO_SIZE_M, Agent, _idm, simulate, spawn_agents
from occvla_hf.sim.geometry import world_to_frame_2d
from occvla_hf.sim.layout import build_world


def car(speed: float) -> Agent:
    return Agent("car", np.array([4.5, 1.9, 1.7]), "vehicle", v=speed, desired_speed_mps=10.0, max_accel_mps2=1.5)


def test_idm_accelerates_on_a_free_road_and_brakes_for_a_standing_obstacle():
    assert _idm(car(0.0), 10.0, []) == pytest.approx(1.5)
    assert _idm(car(10.0), 10.0, []) == pytest.approx(0.0, abs=1e-9)
    assert _idm(car(10.0), 10.0, [(10.0, 0.0)]) < -5.0
    assert _idm(car(10.0), 10.0, [(60.0, 10.0)]) > -0.5  # a leader at the same speed far ahead
    assert _idm(car(0.0), 10.0, [(1.0, 0.0)]) < 0.0  # queued: stays put


def test_ego_stops_before_the_stop_line_at_a_red_signal():
    config = SimConfig(scene_duration_s=20.0)
    world = build_world(np.random.default_rng(5), "intersection")
    world.signal_cycle = (0.0, 1.0, 1.0)  # never green
    ego = spawn_agents(world, np.random.default_rng(0), config.scene_duration_s)[0]
    ego.crossing_s.clear()
    track = simulate(world, [ego], config)
    heading = np.stack([np.cos(track.ego_yaw), np.sin(track.ego_yaw)], axis=1)
    front = track.ego_xy + heading * (EGO_SIZE_M[0] / 2 + 0.5)
    stop_xy, _ = ego.lane.path.interpolate(ego.lane.stop_s)
    along = (front - stop_xy) @ heading[0]  # signed distance past the stop line (straight approach)
    assert along.max() < 0.0
    assert np.hypot(*track.ego_velocity[-1]) < 0.05
    # Stopped short of the line under a light that never turns green: the ego faces it, red or amber, throughout.
    assert all(signal is not None and signal[0] in ("amber", "red") for signal in track.ego_signal)
    stop_line_m = np.array([signal[1] for signal in track.ego_signal])
    np.testing.assert_allclose(stop_line_m, -along + EGO_SIZE_M[0] / 2 + EGO_CENTER_AHEAD_M, atol=1e-6)


def test_the_ego_signal_is_the_state_of_its_approach_until_its_front_passes_the_stop_line():
    config = SimConfig(scene_duration_s=20.0)
    world = build_world(np.random.default_rng(5), "intersection")
    world.signal_cycle, world.signal_offset_s = (3.0, 2.5, 2.0), 0.0  # turns amber at 3 s, red at 5.5 s, green 15
    ego = spawn_agents(world, np.random.default_rng(0), config.scene_duration_s)[0]
    ego.crossing_s.clear()
    track = simulate(world, [ego], config)
    heading = np.stack([np.cos(track.ego_yaw), np.sin(track.ego_yaw)], axis=1)
    front = track.ego_xy + heading * (EGO_SIZE_M[0] / 2 + EGO_CENTER_AHEAD_M)
    stop_xy, _ = ego.lane.path.interpolate(ego.lane.stop_s)
    short_of_line = (front - stop_xy) @ heading[0] < 0.0  # straight approach
    assert short_of_line.any() and not short_of_line.all()
    for k, signal in enumerate(track.ego_signal):
        assert (signal is not None) == short_of_line[k]
        if signal is not None:
            assert signal[0] == world.signal_state(ego.lane.approach, float(track.times_s[k]))
    assert {signal[0] for signal in track.ego_signal if signal is not None} >= {"green", "amber", "red"}


def test_roads_without_a_junction_have_no_ego_signal():
    for layout in ("straight", "curve"):
        world = build_world(np.random.default_rng(1), layout)
        agents = spawn_agents(world, np.random.default_rng(1), 4.0)
        assert all(signal is None for signal in simulate(world, agents, SimConfig(scene_duration_s=4.0)).ego_signal)


def test_ego_behaviour_covers_the_meta_action_vocabulary():
    """Default 20 s scenes of generate_dataset(seed=0) contain stops, speed changes, turns and lane changes."""
    seen: set[str] = set()
    for index in range(10):
        track = dataset_scene(0, index, SimConfig()).track
        speed = np.hypot(*track.ego_velocity.T)
        yaw = np.unwrap(track.ego_yaw)
        for k in range(track.num_keyframes - 6):
            end = world_to_frame_2d(track.ego_xy[k + 6], track.ego_xy[k], track.ego_yaw[k])
            turn = np.degrees(yaw[k + 6] - yaw[k])
            seen |= {
                name
                for name, hit in (
                    ("stop", speed[k + 6] < 0.2),
                    ("accelerate", speed[k + 6] - speed[k] > 2.0),
                    ("decelerate", speed[k + 6] - speed[k] < -2.0),
                    ("left turn", turn > 45.0),
                    ("right turn", turn < -45.0),
                    ("lane change", abs(turn) < 10.0 and abs(end[1]) > 2.5),
                )
                if hit
            }
    assert seen == {"stop", "accelerate", "decelerate", "left turn", "right turn", "lane change"}
