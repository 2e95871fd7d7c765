"""Road layouts, ground map and static geometry of the procedural world."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.geometry import wrap_angle
from occvla_hf.sim.geometry import box_corners
from occvla_hf.sim.layout import (
    DRIVEABLE,
    MANMADE,
    MARK_YELLOW,
    SIDEWALK,
    TERRAIN,
    build_world,
)


@pytest.fixture(scope="module")
def straight():
    return build_world(np.random.default_rng(1), "straight")


@pytest.fixture(scope="module")
def intersection():
    return build_world(np.random.default_rng(2), "intersection")


def test_ground_bands_across_a_straight_road(straight):
    sec = straight.section
    half = sec.driveable_half_width_m
    probes = np.array(
        [
            [-50.0, 0.1],  # double yellow centre line
            [-50.0, -sec.lane_offset_m(0)],  # lane centre
            [-50.0, half + sec.sidewalk_width_m / 2],  # sidewalk
            [-50.0, -(half + sec.sidewalk_width_m + 30.0)],  # far off the road
        ]
    )
    classes, marks = straight.ground.lookup(probes)
    assert classes.tolist() == [DRIVEABLE, DRIVEABLE, SIDEWALK, TERRAIN]
    assert marks[0] == MARK_YELLOW and marks[1] == 0


def test_buildings_stand_on_terrain(straight, intersection):
    for world in (straight, intersection):
        static = world.static
        buildings = np.flatnonzero(static.occ_classes == MANMADE)
        assert len(buildings) > 5
        for b in buildings:
            footprint = box_corners(static.centers[b], static.sizes[b], static.yaws[b])[:4, :2]
            classes, _ = world.ground.lookup(footprint)
            assert np.all(classes == TERRAIN)


def test_junction_paths_turn_by_a_quarter_and_cross_the_stop_line(intersection):
    junction = intersection.junction
    for lane in intersection.lane_paths:
        if lane.turn is None:
            continue
        start, end = lane.path.headings[0], lane.path.headings[-1]
        expected = {"straight": 0.0, "left": np.pi / 2, "right": -np.pi / 2}[lane.turn]
        assert wrap_angle(end - start - expected) == pytest.approx(0.0, abs=1e-6)
        stop_xy, _ = lane.path.interpolate(lane.stop_s)
        arm = np.array([np.cos(junction.arm_headings[lane.approach]), np.sin(junction.arm_headings[lane.approach])])
        assert (stop_xy - junction.center) @ arm == pytest.approx(junction.stop_distance_m, abs=1e-6)
        assert lane.stop_s < lane.entry_s < lane.exit_s


def test_signal_never_gives_green_to_crossing_approaches(intersection):
    times = np.arange(0.0, 60.0, 0.1)
    green = np.array([[intersection.signal_is_green(a, t) for a in range(4)] for t in times])
    assert not np.any(green[:, 0] & green[:, 1])
    assert np.array_equal(green[:, 0], green[:, 2]) and np.array_equal(green[:, 1], green[:, 3])
    assert green[:, 0].any() and green[:, 1].any()
    for t, row in zip(times, green):
        if not row[0]:  # waiting time is positive exactly when red
            assert intersection.signal_time_to_green(0, t) > 0.0
