"""Reasoning annotations on hand-made planning rows (objects, distances, decisions, reasons), their bounds and
errors, and on every row of the tiny sim dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from occvla_hf.class_labels import label_name
from occvla_hf.constants import (
    CAMERA_NAMES,
    CAMERA_YAWS_DEG,
    NUM_BOX_STEPS,
    NUM_WAYPOINTS,
    TRAFFIC_LIGHT_STATES,
    WAYPOINT_STEP_S,
)
from occvla_hf.data.load import load_configs
from occvla_hf.meta_action import PATH_ACTIONS, meta_action_from_trajectory
from occvla_hf.reasoning import (
    MAX_CRITICAL_OBJECTS,
    REASONING_MAX_WORDS,
    TrafficLight,
    camera_of,
    category_word,
    critical_objects,
    generate_reasoning,
)
from occvla_hf.sim.cameras import CAMERA_SPECS
from occvla_hf.sim.categories import NUSCENES_CATEGORIES

TIMES_S = WAYPOINT_STEP_S * np.arange(NUM_BOX_STEPS)  # t = 0..6 keyframes


def motion(x0: float, y0: float, vx: float = 0.0, vy: float = 0.0, decel_mps2: float = 0.0) -> np.ndarray:
    """(7, 2) positions at the keyframes of a point moving from (x0, y0) at (vx, vy), braking to a stop."""
    speed = math.hypot(vx, vy)
    direction = np.array([vx, vy]) / speed if speed > 0 else np.zeros(2)
    stop_s = speed / decel_mps2 if decel_mps2 > 0 else np.inf
    t = np.minimum(TIMES_S, stop_s)
    travelled = speed * t - 0.5 * decel_mps2 * t**2
    return np.array([x0, y0]) + travelled[:, None] * direction


def agent(token: str, positions: np.ndarray, category: str = "vehicle.car", size=(4.6, 1.9, 1.7), present=None):
    """One agent: its positions (7, 2) and the steps it is annotated at (default: all)."""
    present = [True] * NUM_BOX_STEPS if present is None else present
    return {"token": token, "positions": positions, "category": category, "size": size, "present": present}


def make_row(agents=(), *, ego_speed_mps: float = 10.0, ego_decel_mps2: float = 0.0, lateral_m=None) -> dict:
    """A planning row in the list format: the ego drives along x (optionally braking, optionally shifting sideways
    by `lateral_m` (6,)), its meta-action labelled from that trajectory as the dataset does."""
    trajectory = motion(0.0, 0.0, ego_speed_mps, 0.0, ego_decel_mps2)[1:]
    if lateral_m is not None:
        trajectory[:, 1] = lateral_m
    boxes = [[] for _ in range(NUM_BOX_STEPS)]
    categories = [[] for _ in range(NUM_BOX_STEPS)]
    instances = [[] for _ in range(NUM_BOX_STEPS)]
    for a in agents:
        for t in range(NUM_BOX_STEPS):
            if a["present"][t]:
                x, y = a["positions"][t]
                boxes[t].append([float(x), float(y), 0.8, *a["size"], 0.0])
                categories[t].append(a["category"])
                instances[t].append(a["token"])
    return {
        "agent_boxes": boxes,
        "agent_categories": categories,
        "agent_instances": instances,
        "ego_status": [ego_speed_mps, 0.0, -ego_decel_mps2, 0.0, 0.0, 0.0],
        "ego_status_valid": [True] * 6,
        "trajectory": trajectory.tolist(),
        "trajectory_mask": [True] * NUM_WAYPOINTS,
        "meta_action": meta_action_from_trajectory(trajectory, current_speed_mps=ego_speed_mps).to_text(),
    }


# ------------------------------------------------------------------------------------------------ hand-made rows


@pytest.mark.parametrize(("x0_m", "y0_m", "shown"), [(12.0, 0.0, "12.0"), (12.2, 0.4, "12.0"), (12.3, 0.0, "12.5")])
def test_a_braking_lead_car_is_named_with_its_distance_and_is_the_reason_to_decelerate(x0_m, y0_m, shown) -> None:
    lead = agent("lead", motion(x0_m, y0_m, 8.0, 0.0, decel_mps2=4.0))
    row = make_row([lead], ego_speed_mps=10.0, ego_decel_mps2=3.0)
    assert row["meta_action"] == "decelerate, straight"
    text = generate_reasoning(row)
    y_shown = "0.5" if y0_m == 0.4 else "0.0"
    described = f"car in CAM_FRONT at ({shown}, {y_shown}) m, {shown} m away, moving at 7.0 m/s, braking, approaching"
    assert described in text
    assert f"Road: ego at 10.0 m/s, lead car {shown} m ahead." in text
    assert text.endswith(f"Decision: decelerate, straight, because the lead car {shown} m ahead is braking.")
    (car,) = critical_objects(row)
    assert car.braking and car.in_corridor_now and car.velocity_mps == pytest.approx((7.0, 0.0))
    assert car.distance_m == pytest.approx(math.hypot(x0_m, y0_m))
    assert car.range_rate_mps == pytest.approx(-3.0, abs=0.05)


def test_positions_and_distances_round_half_up_to_half_metres() -> None:
    text = generate_reasoning(make_row([agent("car", motion(12.25, -0.2))], ego_speed_mps=5.0))
    assert "car in CAM_FRONT at (12.5, 0.0) m, 12.5 m away, stopped, approaching" in text  # not 12.0, not -0.0


def test_a_lead_car_at_steady_speed_is_followed_not_a_reason_to_brake() -> None:
    row = make_row([agent("lead", motion(20.0, 0.0, 10.0))], ego_speed_mps=10.0)
    (car,) = critical_objects(row)
    assert not car.braking and car.range_rate_mps == pytest.approx(0.0, abs=1e-9)
    assert generate_reasoning(row) == (
        "Objects: car in CAM_FRONT at (20.0, 0.0) m, 20.0 m away, moving at 10.0 m/s. "
        "Road: ego at 10.0 m/s, lead car 20.0 m ahead. Decision: keep, straight, to follow the lead car 20.0 m ahead."
    )


def test_a_pedestrian_crossing_ahead_is_the_reason_and_pedestrians_off_the_path_are_not_named() -> None:
    person = {"category": "human.pedestrian.adult", "size": (0.75, 0.7, 1.75)}
    crossing = agent("crossing", motion(15.0, 3.5, 0.0, -1.5), **person)
    on_sidewalk = agent("sidewalk", motion(10.0, 6.0, 1.4, 0.0), **person)
    behind = agent("behind", motion(-5.0, 3.5, 0.0, -1.5), **person)
    row = make_row([on_sidewalk, crossing, behind], ego_speed_mps=8.0, ego_decel_mps2=2.0)
    assert row["meta_action"] == "decelerate, straight"
    text = generate_reasoning(row)
    assert text.startswith(
        "Objects: pedestrian in CAM_FRONT at (15.0, 3.5) m, 15.5 m away, moving at 1.5 m/s, crossing, approaching. "
        "Road: ego at 8.0 m/s, no lead vehicle."
    )
    assert text.endswith("Decision: decelerate, straight, because a pedestrian is crossing 15.5 m ahead.")
    (pedestrian,) = critical_objects(row)
    assert pedestrian.instance == "crossing" and pedestrian.crossing and not pedestrian.in_corridor_now


def test_an_empty_road_is_free_driving() -> None:
    row = make_row([], ego_speed_mps=10.0)
    assert generate_reasoning(row) == (
        "Objects: none. Road: ego at 10.0 m/s, no lead vehicle. Decision: keep, straight, because the path is clear."
    )
    start = make_row([], ego_speed_mps=0.0)
    start["trajectory"] = motion(0.0, 0.0, 0.0, 0.0)[1:].tolist()
    start["trajectory"] = [[1.0 * t**2, 0.0] for t in TIMES_S[1:]]  # pulling away at 2 m/s^2
    start["meta_action"] = "accelerate, straight"
    assert generate_reasoning(start, TrafficLight("green")) == (
        "Objects: none. Road: ego stopped, no lead vehicle, light green. "
        "Decision: accelerate, straight, because the light is green."
    )


def test_objects_behind_beside_or_parked_off_the_path_are_not_critical() -> None:
    follower = agent("follower", motion(-10.0, 0.0, 10.0))  # drives where the ego drives, but behind it
    next_lane = agent("next_lane", motion(20.0, 3.5, 10.0))
    parked = agent("parked", motion(15.0, -3.0))
    row = make_row([follower, next_lane, parked], ego_speed_mps=10.0)
    assert critical_objects(row) == []
    assert generate_reasoning(row).startswith("Objects: none. Road: ego at 10.0 m/s, no lead vehicle.")


def test_a_red_light_stops_the_ego_unless_a_nearer_hazard_explains_it() -> None:
    row = make_row([], ego_speed_mps=8.0, ego_decel_mps2=2.5)
    text = generate_reasoning(row, TrafficLight("red", stop_line_m=20.2))
    assert "Road: ego at 8.0 m/s, no lead vehicle, light red 20.0 m ahead." in text
    assert text.endswith("because the light 20.0 m ahead is red.")
    assert generate_reasoning(row, TrafficLight("amber")).endswith("because the light is amber.")
    queue = make_row([agent("queued", motion(9.0, 0.0))], ego_speed_mps=8.0, ego_decel_mps2=2.5)
    assert generate_reasoning(queue, TrafficLight("red", 20.0)).endswith("because the lead car 9.0 m ahead is stopped.")
    assert generate_reasoning(row).endswith("Decision: decelerate, straight, with no hazard in the path.")


def test_a_lane_change_passes_the_stopped_car_in_the_current_lane() -> None:
    lateral_m = 3.5 / (1.0 + np.exp(-(TIMES_S[1:] - 1.5) * 4.0))  # into the left lane
    row = make_row([agent("broken_down", motion(25.0, 0.0))], ego_speed_mps=8.0, lateral_m=lateral_m)
    assert row["meta_action"] == "keep, left lane change"
    (car,) = critical_objects(row)
    assert car.in_current_lane and car.in_corridor_now
    assert generate_reasoning(row).endswith("Decision: keep, left lane change, to pass the stopped car 25.0 m ahead.")


def test_the_text_names_the_lead_and_the_cause_before_nearer_bystanders() -> None:
    platoon = [agent(f"p{i}", motion(10.0 * i, 0.0, 8.0)) for i in (1, 2, 3)]  # moving along with the ego
    stopped = agent("stopped", motion(36.0, 0.0))
    row = make_row([*platoon, stopped], ego_speed_mps=8.0, ego_decel_mps2=1.5)
    assert [o.instance for o in critical_objects(row)] == ["p1", "p2", "p3", "stopped"]
    text = generate_reasoning(row)
    assert text.count(" m away") == MAX_CRITICAL_OBJECTS
    assert "(10.0, 0.0)" in text and "(20.0, 0.0)" in text and "(30.0, 0.0)" not in text and "(36.0, 0.0)" in text
    assert text.endswith("because a stopped car blocks the path 36.0 m ahead.")


def test_velocity_comes_from_the_next_keyframe_holding_the_instance() -> None:
    flicker = agent("flicker", motion(20.0, 0.0, 6.0), present=[True, False, True, True, True, True, True])
    unseen = agent("gone", motion(30.0, 0.0, 6.0), present=[True] + [False] * 6)
    late = agent("late", motion(8.0, 0.0), present=[False] + [True] * 6)  # appears after t = 0: not seen yet
    flicker_obj, gone_obj = critical_objects(make_row([flicker, unseen, late]))
    assert flicker_obj.velocity_mps == pytest.approx((6.0, 0.0)) and not flicker_obj.braking
    assert gone_obj.velocity_mps is None and gone_obj.range_rate_mps is None
    assert "30.0 m away, motion unknown" in generate_reasoning(make_row([flicker, unseen, late]))


def test_a_row_without_future_has_no_decision() -> None:
    row = make_row([agent("lead", motion(15.0, 0.0, 5.0))])
    row.update(trajectory=[[0.0, 0.0]] * NUM_WAYPOINTS, trajectory_mask=[False] * NUM_WAYPOINTS, meta_action="")
    row["ego_status_valid"] = [False] * 6
    assert generate_reasoning(row) == (
        "Objects: car in CAM_FRONT at (15.0, 0.0) m, 15.0 m away, moving at 5.0 m/s. "
        "Road: ego speed unknown, lead car 15.0 m ahead. Decision: unknown, no future trajectory."
    )


@pytest.mark.parametrize(
    ("bearing_deg", "camera"),
    [
        (0.0, "CAM_FRONT"),
        (27.4, "CAM_FRONT"),
        (27.6, "CAM_FRONT_LEFT"),
        (-30.0, "CAM_FRONT_RIGHT"),
        (82.4, "CAM_FRONT_LEFT"),
        (90.0, "CAM_BACK_LEFT"),
        (-84.0, "CAM_BACK_RIGHT"),
        (144.0, "CAM_BACK_LEFT"),
        (146.0, "CAM_BACK"),
        (-150.0, "CAM_BACK"),
        (180.0, "CAM_BACK"),
    ],
)
def test_camera_sectors_follow_the_nearest_optical_axis(bearing_deg: float, camera: str) -> None:
    angle = math.radians(bearing_deg)
    assert camera_of((10.0 * math.cos(angle), 10.0 * math.sin(angle))) == camera


def test_road_users_barriers_and_cones_have_words_the_rest_is_never_critical() -> None:
    words = {name: category_word(name) for name, _, _ in NUSCENES_CATEGORIES}
    assert words["vehicle.bus.bendy"] == words["vehicle.bus.rigid"] == "bus"
    assert words["vehicle.emergency.police"] == "emergency vehicle" and words["vehicle.car"] == "car"
    assert words["human.pedestrian.police_officer"] == "pedestrian"
    assert words["movable_object.trafficcone"] == "traffic cone"
    assert {name for name, word in words.items() if word is None} == {
        "movable_object.pushable_pullable",
        "movable_object.debris",
        "static_object.bicycle_rack",
    }
    assert category_word("vehicle.carriage") is None  # prefixes match whole dotted parts
    row = make_row([agent("debris", motion(12.0, 0.0), category="movable_object.debris", size=(0.5, 0.5, 0.2))])
    assert critical_objects(row) == []


def test_camera_yaws_are_the_rig_of_the_sim() -> None:
    assert len(CAMERA_YAWS_DEG) == len(CAMERA_NAMES)
    assert [CAMERA_SPECS[name].yaw_deg for name in CAMERA_NAMES] == list(CAMERA_YAWS_DEG)


# ------------------------------------------------------------------------------------------ determinism, bounds


def test_same_row_same_text_in_any_format_and_agent_order() -> None:
    agents = [
        agent("lead", motion(12.0, 0.2, 8.0, 0.0, decel_mps2=4.0)),
        agent("walker", motion(18.0, -3.5, 0.0, 1.5), category="human.pedestrian.child", size=(0.5, 0.5, 1.2)),
        agent("cone", motion(30.0, 0.5), category="movable_object.trafficcone", size=(0.4, 0.4, 0.9)),
        agent("twin_a", motion(25.0, 0.0, 8.0)),
        agent("twin_b", motion(25.0, 0.0, 8.0)),
    ]
    row = make_row(agents, ego_speed_mps=10.0, ego_decel_mps2=3.0)
    text = generate_reasoning(row)
    assert generate_reasoning(row) == text
    reordered = make_row(agents[::-1], ego_speed_mps=10.0, ego_decel_mps2=3.0)
    assert generate_reasoning(reordered) == text
    as_numpy = {key: np.asarray(value) for key, value in row.items() if key not in ("agent_boxes", "meta_action")}
    as_numpy["agent_boxes"] = [np.asarray(step, dtype=np.float32) for step in row["agent_boxes"]]
    as_numpy["meta_action"] = row["meta_action"]
    assert generate_reasoning(as_numpy) == text


def test_random_rows_stay_within_the_word_budget() -> None:
    rng = np.random.default_rng(0)
    categories = [name for name, _, _ in NUSCENES_CATEGORIES]
    longest = 0
    for _ in range(150):
        agents = []
        for i in range(int(rng.integers(0, 12))):
            start = rng.uniform([0.5, -6.0], [50.0, 6.0])
            velocity = rng.normal(0.0, 5.0, 2) * (rng.random() < 0.7)
            category = str(rng.choice(categories))
            agents.append(agent(f"a{i}", motion(*start, *velocity, decel_mps2=float(rng.uniform(0, 6))), category))
        lateral = None if rng.random() < 0.5 else np.linspace(0.3, 1.0, NUM_WAYPOINTS) * rng.choice([-3.5, 3.5])
        row = make_row(agents, ego_speed_mps=float(rng.uniform(0, 15)), ego_decel_mps2=float(rng.uniform(0, 4)),
                       lateral_m=lateral)  # fmt: skip
        state = rng.choice([None, *TRAFFIC_LIGHT_STATES])
        light = None if state is None else TrafficLight(str(state), float(rng.uniform(0, 40)))
        text = generate_reasoning(row, light)
        assert text.count(" m away") <= MAX_CRITICAL_OBJECTS and f"Decision: {row['meta_action']}," in text
        longest = max(longest, len(text.split()))
    assert 40 < longest <= REASONING_MAX_WORDS


def test_the_longest_template_fits_the_word_budget() -> None:
    """Every phrase at its longest: three two-word classes braking across the path, a lead, an amber light at a
    distance, a lane change past a stopped object and an oncoming hazard."""
    big = {"category": "vehicle.construction", "size": (6.5, 2.8, 3.2)}
    lead = agent("lead", motion(12.0, 0.0, 9.0, 0.0, decel_mps2=5.0), **big)
    across = [agent(f"x{i}", motion(14.0 + i, 4.0, 1.0, -8.0, decel_mps2=5.0), **big) for i in range(3)]
    oncoming = agent("oncoming", motion(40.0, 3.5, -9.0), **big)
    lateral_m = np.linspace(0.5, 3.5, NUM_WAYPOINTS)
    row = make_row([lead, *across, oncoming], ego_speed_mps=12.0, ego_decel_mps2=3.0, lateral_m=lateral_m)
    text = generate_reasoning(row, TrafficLight("amber", 35.0))
    assert "lead construction vehicle" in text and "light amber 35.0 m ahead" in text
    assert len(text.split()) <= REASONING_MAX_WORDS


# ------------------------------------------------------------------------------------------------------- bad input


def _bad(field: str, value) -> dict:
    row = make_row([agent("lead", motion(12.0, 0.0, 8.0))])
    row[field] = value
    return row


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_bad("agent_boxes", [[]] * 6), r"agent_boxes: expected 7 steps"),
        (_bad("agent_boxes", [[[12.0, 0.0, 0.8, 4.6, 1.9, 1.7]]] * 7), r"agent_boxes\[0\]: expected \(N, 7\)"),
        (_bad("agent_boxes", [[[12.0, 0.0, 0.8, 4.6, 1.9, 1.7, 0.0], [1.0]]] * 7), r"agent_boxes\[0\]: expected"),
        (_bad("agent_boxes", [[[np.nan, 0.0, 0.8, 4.6, 1.9, 1.7, 0.0]]] * 7), r"agent_boxes\[0\]: .*finite"),
        (_bad("agent_categories", [["vehicle.car", "vehicle.car"]] * 7), r"agent_categories\[0\]: expected 1 str"),
        (_bad("agent_categories", [[3.0]] * 7), r"agent_categories\[0\]: .*class id \(int\) or a name"),
        (_bad("agent_categories", [[99]] * 7), r"agent_categories\[0\]: .*class id 99 outside"),
        (_bad("agent_instances", "lead"), r"agent_instances: expected 7 steps"),
        (_bad("ego_status", [10.0, 0.0, 0.0]), r"ego_status: expected shape \(6,\)"),
        (_bad("ego_status", [np.nan, 0.0, 0.0, 0.0, 0.0, 0.0]), r"ego_status: valid entries must be finite"),
        (_bad("ego_status_valid", [1, 1, 1, 1, 1, 1]), r"ego_status_valid: expected \(6,\) bool"),
        (_bad("trajectory", [[1.0, 0.0]] * 5), r"trajectory: expected shape \(6, 2\)"),
        (_bad("trajectory", [[np.inf, 0.0]] * 6), r"trajectory: valid waypoints must be finite"),
        (_bad("trajectory_mask", [True] * 5), r"trajectory_mask: expected \(6,\) bool"),
        (_bad("meta_action", "fast, straight"), r"meta_action: expected '<speed>, <path>'"),
    ],
)
def test_bad_rows_raise_naming_the_field(row: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_reasoning(row)


def test_inputs_of_the_wrong_type_raise_naming_the_field() -> None:
    with pytest.raises(TypeError, match=r"meta_action: expected a string"):
        generate_reasoning(_bad("meta_action", None))
    with pytest.raises(TypeError, match=r"traffic_light: expected a TrafficLight"):
        generate_reasoning(make_row(), "red")


def test_duplicate_instances_and_missing_fields_raise_naming_them() -> None:
    row = make_row([agent("a", motion(12.0, 0.0)), agent("b", motion(20.0, 0.0))])
    row["agent_instances"] = [["a", "a"]] * NUM_BOX_STEPS
    with pytest.raises(ValueError, match=r"agent_instances\[0\]: instance tokens must be unique"):
        generate_reasoning(row)
    row = make_row()
    del row["trajectory_mask"]
    with pytest.raises(ValueError, match=r"row: missing field 'trajectory_mask'"):
        critical_objects(row)


def test_invalid_entries_may_hold_anything() -> None:
    row = make_row([], ego_speed_mps=10.0)
    row["ego_status"][5], row["ego_status_valid"][5] = np.nan, False  # steering without CAN bus
    row["trajectory"][5], row["trajectory_mask"][5] = [np.nan, np.nan], False
    assert generate_reasoning(row).startswith("Objects: none. Road: ego at 10.0 m/s, no lead vehicle.")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrafficLight("blue"), r"traffic_light.state: expected one of"),
        (lambda: TrafficLight("red", -1.0), r"traffic_light.stop_line_m"),
        (lambda: TrafficLight("red", float("nan")), r"traffic_light.stop_line_m"),
    ],
)
def test_bad_traffic_lights_raise(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------------------------------------ sim rows


def test_every_sim_row_gets_a_reasoning_text(training_data_dir: Path) -> None:
    planning = load_configs(training_data_dir)["planning"]
    count = 0
    for split in planning.values():
        for row, numpy_row in zip(split, split.with_format("numpy"), strict=True):
            text = generate_reasoning(row)
            assert generate_reasoning(numpy_row) == text
            assert text.startswith("Objects: ") and " Road: ego " in text
            meta_action = label_name("meta_action", row["meta_action"])  # stored as its class id
            decision = f"Decision: {meta_action}," if meta_action else "Decision: unknown"
            assert decision in text and len(text.split()) <= REASONING_MAX_WORDS
            assert any(path in text for path in PATH_ACTIONS) or not meta_action
            count += 1
    assert count == sum(len(split) for split in planning.values()) > 0
