"""Closed-loop metrics on constructed cases: each PDMS part (NAVSIM pdm_scorer.py / pdm_comfort_metrics.py) and the
Bench2Drive route completion, penalties and driving score (statistics_manager.py)."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.evaluation.closed_loop_metrics import (
    EgoTrack,
    Infraction,
    ObjectTrack,
    collision_type,
    comfort_score,
    convex_overlap,
    drivable_area_compliance,
    driving_score,
    ego_corners,
    ego_progress_score,
    infraction_penalty,
    is_comfortable,
    no_at_fault_collisions,
    pdm_score,
    red_light_crossings,
    route_completion,
    route_points_passed,
    time_to_collision_within_bound,
)
from occvla_hf.sim.closed_loop import drivable
from occvla_hf.sim.geometry import Polyline
from occvla_hf.sim.layout import build_world

DT = 0.1


def _ego(x: np.ndarray, y: np.ndarray | None = None, yaw: np.ndarray | None = None, **flags: np.ndarray) -> EgoTrack:
    """An ego track along x (origins), speeds and accelerations from finite differences."""
    n = len(x)
    y = np.zeros(n) if y is None else y
    yaw = np.zeros(n) if yaw is None else yaw
    speed = np.hypot(np.gradient(x, DT), np.gradient(y, DT))
    defaults = {k: np.zeros(n, dtype=bool) for k in ("off_drivable", "multiple_lanes", "in_junction")}
    defaults.update(flags)
    return EgoTrack(np.arange(n) * DT, np.stack([x, y], 1), yaw, speed, np.gradient(speed, DT), **defaults)


def _objects(boxes: np.ndarray, speeds: np.ndarray, kinds: tuple[str, ...]) -> ObjectTrack:
    """Objects (T, N, 5) boxes (x, y, length, width, yaw), (T, N) speeds, all present."""
    return ObjectTrack(boxes, speeds, np.ones(speeds.shape, dtype=bool), kinds)


def _still(box: tuple[float, ...], steps: int, kind: str = "vehicle") -> ObjectTrack:
    return _objects(np.tile(np.array(box, dtype=np.float64), (steps, 1, 1)), np.zeros((steps, 1)), (kind,))


def test_convex_overlap_counts_touching_and_handles_segments():
    square = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    others = np.stack([square + [2.0, 0.0], square + [2.01, 0.0], square + [1.0, 1.0]])
    np.testing.assert_array_equal(convex_overlap(square, others), [True, False, True])
    segment = np.array([[1.5, -3.0], [1.5, 3.0]])
    np.testing.assert_array_equal(convex_overlap(segment, np.stack([square, square + [3.0, 0.0]])), [False, False])
    np.testing.assert_array_equal(convex_overlap(segment + [-1.0, 0.0], square[None]), [True])


def test_rear_end_crash_into_a_stopped_car_gives_nc_0():
    x = np.linspace(0.0, 10.0, 21)  # 10 m/s for 2 s
    car = _still((12.0, 0.0, 4.6, 1.9, 0.0), 21)  # its rear at 9.7 m; the ego front reaches 2.5 + x
    score, events = no_at_fault_collisions(_ego(x), car)
    assert score == 0.0
    assert events[0].collision_type == "stopped_track" and events[0].at_fault
    assert events[0].step == int(np.argmax(x + 0.5 + 4.084 / 2 >= 9.7))


def test_front_collision_with_a_slower_car_is_at_fault_and_an_object_costs_half():
    x = np.linspace(0.0, 10.0, 21)
    leader = np.zeros((21, 1, 5))
    leader[:, 0] = [[8.0 + 2.0 * k * DT, 0.0, 4.6, 1.9, 0.0] for k in range(21)]  # 2 m/s ahead
    score, events = no_at_fault_collisions(_ego(x), _objects(leader, np.full((21, 1), 2.0), ("vehicle",)))
    assert score == 0.0 and events[0].collision_type == "active_front"
    cone = _still((8.0, 0.0, 0.4, 0.4, 0.0), 21, kind="object")
    assert no_at_fault_collisions(_ego(x), cone)[0] == 0.5


def test_being_rear_ended_or_hit_while_stopped_is_not_at_fault():
    follower = np.zeros((21, 1, 5))
    follower[:, 0] = [[-12.0 + 8.0 * k * DT, 0.0, 4.6, 1.9, 0.0] for k in range(21)]  # closes in from behind
    rear = _objects(follower, np.full((21, 1), 8.0), ("vehicle",))
    slow = _ego(np.linspace(0.0, 4.0, 21))
    score, events = no_at_fault_collisions(slow, rear)
    assert score == 1.0 and events[0].collision_type == "active_rear" and not events[0].at_fault
    parked = _ego(np.zeros(21))
    score, events = no_at_fault_collisions(parked, rear)
    assert score == 1.0 and events[0].collision_type == "stopped_ego"


def test_lateral_collision_is_at_fault_only_while_straddling_lanes():
    x = np.linspace(0.0, 5.0, 21)  # 2.5 m/s
    beside = np.zeros((21, 1, 5))
    beside[:, 0] = [[xk + 0.5, 1.2, 2.1, 0.8, 0.0] for xk in x]  # a motorcycle squeezing along the ego's left side
    cycle = _objects(beside, np.full((21, 1), 2.5), ("cycle",))
    ego = _ego(x)
    polygon = cycle.corners(0, np.array([0]))[0]
    assert collision_type(ego.xy[0], 0.0, 2.5, ego.corners[0], polygon, 2.5, "cycle") == "active_lateral"
    in_lane = no_at_fault_collisions(ego, cycle)
    assert in_lane[0] == 1.0 and in_lane[1][0].at_fault is False  # a plain bool: reports are JSON
    straddling = no_at_fault_collisions(_ego(x, multiple_lanes=np.ones(21, dtype=bool)), cycle)
    assert straddling[0] == 0.0 and straddling[1][0].at_fault is True


def test_leaving_the_road_gives_dac_0():
    world = build_world(np.random.default_rng(3), "straight")
    lane_y = -world.section.lane_offset_m(0)
    x = np.linspace(0.0, 30.0, 31)
    for drift, expected in ((0.0, 1.0), (1.2, 0.0)):  # drift: metres to the right per metre driven
        y = lane_y - drift * x
        yaw = np.full(31, np.arctan2(-drift, 1.0))
        corners = ego_corners(np.stack([x, y], 1), yaw)
        ego = _ego(x, y, yaw, off_drivable=~drivable(world, corners).all(axis=1))
        assert drivable_area_compliance(ego) == expected


def test_ttc_fails_when_a_stopped_car_is_less_than_a_second_ahead():
    x = np.linspace(0.0, 10.0, 21)
    near = _still((12.5, 0.0, 4.6, 1.9, 0.0), 21)  # the ego front stops short of it only by the run's end
    far = _still((40.0, 0.0, 4.6, 1.9, 0.0), 21)
    assert time_to_collision_within_bound(_ego(x), near)[0] == 0.0
    assert time_to_collision_within_bound(_ego(x), far) == (1.0, None)
    assert time_to_collision_within_bound(_ego(np.zeros(21)), near)[0] == 1.0  # standing still


def test_harsh_brake_and_fast_turn_fail_comfort_gentle_driving_passes():
    n = 41
    yaw = np.zeros(n)
    lateral = np.zeros(n)
    gentle = np.full(n, -1.0)
    harsh = np.where(np.arange(n) < 15, -6.0, 0.0)  # 1.5 s at -6 m/s^2
    assert is_comfortable(gentle, lateral, yaw, DT)
    assert not is_comfortable(harsh, lateral, yaw, DT)
    assert not is_comfortable(np.zeros(n), lateral, 1.2 * DT * np.arange(n), DT)  # yaw rate 1.2 rad/s
    ego = EgoTrack(
        np.arange(81) * DT,
        np.zeros((81, 2)),
        np.zeros(81),
        np.ones(81),
        np.where(np.arange(81) > 60, -6.0, 0.0),
        *(np.zeros(81, dtype=bool),) * 3,
    )
    assert comfort_score(ego, [0.0]) == 1.0  # the 4 s window from t = 0 ends before the brake
    assert comfort_score(ego, [0.0, 3.5]) == 0.0


def test_ego_progress_standing_still_gives_0_and_short_routes_1():
    assert ego_progress_score(0.0, 40.0, 1.0) == 0.0
    assert ego_progress_score(20.0, 40.0, 1.0) == 0.5
    assert ego_progress_score(50.0, 40.0, 1.0) == 1.0  # normalised by the larger progress
    assert ego_progress_score(2.0, 3.0, 1.0) == 1.0  # both below NAVSIM's 5 m threshold
    assert ego_progress_score(2.0, 3.0, 0.0) == 0.0
    assert ego_progress_score(50.0, 40.0, 0.0) == 0.0  # a crash masks the progress


def test_pdm_score_weights():
    assert pdm_score(1.0, 1.0, 1.0, 1.0, 1.0) == 1.0
    assert pdm_score(1.0, 1.0, 0.0, 1.0, 1.0) == pytest.approx(7 / 12)
    assert pdm_score(0.5, 1.0, 1.0, 0.5, 0.0) == pytest.approx(0.5 * 7.5 / 12)
    assert pdm_score(0.0, 1.0, 1.0, 1.0, 1.0) == 0.0 and pdm_score(1.0, 0.0, 1.0, 1.0, 1.0) == 0.0


def test_route_completion_penalties_and_driving_score_on_a_hand_made_list():
    infractions = [
        Infraction("collision_pedestrian", 1.0, 3),
        Infraction("red_light", 2.0),
        Infraction("collision_vehicle", 3.0, 4),
        Infraction("collision_static", 4.0, 5),
    ]
    penalty = infraction_penalty(infractions)
    assert penalty == pytest.approx(0.5 * 0.7 * 0.6 * 0.65)
    assert infraction_penalty([]) == 1.0 and infraction_penalty(["red_light", "red_light"]) == pytest.approx(0.49)
    rc = route_completion(30.0, 40.0)
    assert rc == 0.75 and route_completion(50.0, 40.0) == 1.0 and route_completion(-1.0, 40.0) == 0.0
    assert driving_score(rc, penalty) == pytest.approx(0.75 * penalty)
    with pytest.raises(ValueError, match="infractions"):
        infraction_penalty(["speeding"])


def test_route_points_are_passed_in_order_and_red_lights_on_crossing():
    route = Polyline.from_points(np.stack([np.linspace(0.0, 100.0, 201), np.zeros(201)], 1))
    path = np.stack([np.linspace(0.0, 30.0, 31), np.full(31, 2.0)], 1)
    passed = route_points_passed(route, path, 0.0)
    assert passed[-1] == pytest.approx(29.5, abs=0.6) and np.all(np.diff(passed) >= 0)
    jump = np.array([[0.0, 0.0], [60.0, 0.0]])  # a point far ahead passes at most one window per step
    assert route_points_passed(route, jump, 0.0)[-1] <= 10.0
    tail = np.array([10.0, 19.0, 20.5, 22.0])
    times = np.arange(4) * DT
    assert red_light_crossings(tail, times, 20.0, ["red"] * 4) == [pytest.approx(0.2)]
    assert red_light_crossings(tail, times, 20.0, ["green", "green", "amber", "red"]) == []
