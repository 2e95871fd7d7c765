"""Static world: road layouts (straight, curved, four-way intersection), the ground map and static geometry.

A layout is built in a local frame where the ego starts near the origin driving along +x. The ground is a raster of
Occ3D classes (driveable_surface, sidewalk, terrain, other_flat) with a second raster of painted markings (lane
lines, crosswalk stripes, stop lines); buildings (manmade) and trees (vegetation) are oriented boxes. Lanes are
exposed as `LanePath`s (dense polylines with junction metadata) for the traffic model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occvla_hf.constants import OCC_CLASS_NAMES
from occvla_hf.geometry import wrap_angle
from occvla_hf.sim.geometry import Polyline, arc_points, concat_polylines, line_points

DRIVEABLE: int = OCC_CLASS_NAMES.index("driveable_surface")
OTHER_FLAT: int = OCC_CLASS_NAMES.index("other_flat")
SIDEWALK: int = OCC_CLASS_NAMES.index("sidewalk")
TERRAIN: int = OCC_CLASS_NAMES.index("terrain")
MANMADE: int = OCC_CLASS_NAMES.index("manmade")
VEGETATION: int = OCC_CLASS_NAMES.index("vegetation")

# Painted markings raster values.
MARK_NONE, MARK_WHITE, MARK_YELLOW = 0, 1, 2

GROUND_RESOLUTION_M: float = 0.1  # also the nuScenes map-mask resolution
WORLD_MARGIN_M: float = 60.0
LANE_WIDTH_M: float = 3.5
CROSSWALK_WIDTH_M: float = 3.0
CROSSWALK_GAP_M: float = 0.5  # from the junction box edge to the crosswalk
STOP_LINE_GAP_M: float = 1.0  # from the crosswalk to the stop line
JUNCTION_CORNER_M: float = 5.0  # junction box half size beyond the driveable half width (room for turn radii)
LAYOUTS: tuple[str, ...] = ("straight", "curve", "intersection")
TURNS: tuple[str, ...] = ("straight", "left", "right")


@dataclass(frozen=True)
class CrossSection:
    """Road cross-section, symmetric about the centre line (right-hand traffic)."""

    lanes_per_direction: int
    parking_width_m: float
    sidewalk_width_m: float
    lane_width_m: float = LANE_WIDTH_M

    @property
    def driveable_half_width_m(self) -> float:
        return self.lanes_per_direction * self.lane_width_m + self.parking_width_m

    def lane_offset_m(self, lane: int) -> float:
        """Distance of lane `lane` (0 = next to the centre line) from the centre line."""
        return (lane + 0.5) * self.lane_width_m


@dataclass(frozen=True)
class Piece:
    """An analytic road piece: a line (curvature 0) or a circular arc (curvature 1/R, left positive)."""

    start: np.ndarray
    heading: float
    length_m: float
    curvature: float = 0.0

    def points(self, step_m: float = 0.5) -> np.ndarray:
        if self.curvature == 0.0:
            return line_points(self.start, self.heading, self.length_m, step_m)
        radius = 1.0 / abs(self.curvature)
        return arc_points(self.start, self.heading, radius, np.sign(self.curvature) * self.length_m / radius, step_m)

    def end_pose(self) -> tuple[np.ndarray, float]:
        pts = self.points()
        return pts[-1], self.heading + self.curvature * self.length_m

    def frenet(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(s, d) of points (..., 2): arc length along the piece and lateral offset (left positive)."""
        if self.curvature == 0.0:
            rel = xy - self.start
            c, s = np.cos(self.heading), np.sin(self.heading)
            return rel[..., 0] * c + rel[..., 1] * s, -rel[..., 0] * s + rel[..., 1] * c
        radius = 1.0 / abs(self.curvature)
        side = np.sign(self.curvature)
        center = self.start + side * radius * np.array([-np.sin(self.heading), np.cos(self.heading)])
        rel = xy - center
        r = np.hypot(rel[..., 0], rel[..., 1])
        phi0 = self.heading - side * np.pi / 2.0
        phi = np.arctan2(rel[..., 1], rel[..., 0])
        half_angle = self.length_m / radius / 2.0  # wrap around the arc middle so [0, angle] stays contiguous
        s = radius * (wrap_angle(side * (phi - phi0) - half_angle) + half_angle)
        return s, side * (radius - r)

    def bbox(self, margin_m: float) -> tuple[np.ndarray, np.ndarray]:
        pts = self.points(step_m=2.0)
        return pts.min(axis=0) - margin_m, pts.max(axis=0) + margin_m


@dataclass
class Road:
    """A chain of pieces with one cross-section; `centerline` is the dense centre line."""

    pieces: list[Piece]
    section: CrossSection
    centerline: Polyline = field(init=False)

    def __post_init__(self) -> None:
        self.centerline = concat_polylines([p.points() for p in self.pieces])

    def lane_path(self, lane: int, direction: int) -> Polyline:
        """Lane centre line in the driving direction (+1 along the road, -1 against it)."""
        offset = self.section.lane_offset_m(lane)
        if direction > 0:
            return self.centerline.offset(-offset)
        return self.centerline.offset(offset).reversed()

    def sidewalk_path(self, side: int, lateral_shift_m: float = 0.0) -> Polyline:
        """Sidewalk centre line on `side` (+1 left, -1 right of the road direction), along the road."""
        sec = self.section
        return self.centerline.offset(side * (sec.driveable_half_width_m + sec.sidewalk_width_m / 2) + lateral_shift_m)


@dataclass(frozen=True)
class Crosswalk:
    """A zebra crossing: centre, heading of the road it crosses, half length across the road, width along it."""

    center: np.ndarray
    road_heading: float
    half_length_m: float
    sidewalk_offset_m: float  # distance from the centre to the sidewalk centre lines on both sides
    width_m: float = CROSSWALK_WIDTH_M


@dataclass(frozen=True)
class Junction:
    """A four-way signalised junction; arm a leaves the centre along heading `arm_headings[a]`."""

    center: np.ndarray
    half_size_m: float
    arm_headings: tuple[float, float, float, float]
    arm_lengths_m: tuple[float, float, float, float]

    @property
    def stop_distance_m(self) -> float:
        """Distance from the junction centre to the stop lines."""
        return self.half_size_m + CROSSWALK_GAP_M + CROSSWALK_WIDTH_M + STOP_LINE_GAP_M


@dataclass(frozen=True)
class LanePath:
    """A path a vehicle can follow, with the lane-change and junction metadata the traffic model needs.

    `lane` indexes the lanes of the travel direction (0 next to the centre line); lateral offsets to the other lanes
    of that direction are `(lane - j) * lane_width` (positive = left). Junction fields are arc lengths on `path`
    (None off junctions): `stop_s` stop line, `entry_s`/`exit_s` junction box.
    """

    path: Polyline
    lane: int
    lanes: int
    spawn_range_m: tuple[float, float]
    approach: int | None = None
    turn: str | None = None
    stop_s: float | None = None
    entry_s: float | None = None
    exit_s: float | None = None

    def lane_change_allowed(self, s: float) -> bool:
        if self.stop_s is None:
            return True
        return s < self.stop_s - 25.0 or s > self.exit_s + 10.0


@dataclass
class GroundMap:
    """Rasters over the world: `classes` (rows = y, cols = x) Occ3D ids and painted `markings`."""

    origin_xy: np.ndarray  # world coordinates of the lower-left corner of cell (0, 0)
    resolution_m: float
    classes: np.ndarray  # (ny, nx) uint8
    markings: np.ndarray  # (ny, nx) uint8

    def cell_index(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and inside-flag of the cells under points (..., 2)."""
        col = np.floor((xy[..., 0] - self.origin_xy[0]) / self.resolution_m).astype(np.int64)
        row = np.floor((xy[..., 1] - self.origin_xy[1]) / self.resolution_m).astype(np.int64)
        inside = (row >= 0) & (row < self.classes.shape[0]) & (col >= 0) & (col < self.classes.shape[1])
        return np.where(inside, row, 0), np.where(inside, col, 0), inside

    def lookup(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Occ3D class and marking under points (..., 2); terrain without marking outside the raster."""
        row, col, inside = self.cell_index(xy)
        classes = np.where(inside, self.classes[row, col], TERRAIN).astype(np.uint8)
        markings = np.where(inside, self.markings[row, col], MARK_NONE).astype(np.uint8)
        return classes, markings

    def cell_centers(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """(rows, cols, 2) world coordinates of the cell centres of a window."""
        xs = self.origin_xy[0] + (np.arange(col0, col1) + 0.5) * self.resolution_m
        ys = self.origin_xy[1] + (np.arange(row0, row1) + 0.5) * self.resolution_m
        return np.stack(np.meshgrid(xs, ys), axis=-1)

    def window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int, int, int]:
        """Cell index window (row0, row1, col0, col1) covering the world box [lo, hi]."""
        c0, r0 = np.floor((lo - self.origin_xy) / self.resolution_m).astype(int)
        c1, r1 = np.ceil((hi - self.origin_xy) / self.resolution_m).astype(int)
        ny, nx = self.classes.shape
        return max(r0, 0), min(r1, ny), max(c0, 0), min(c1, nx)


@dataclass(frozen=True)
class StaticBoxes:
    """Unannotated static geometry: (N, 3) centres, (N, 3) sizes (l, w, h), (N,) yaws, Occ3D classes, RGB colours."""

    centers: np.ndarray
    sizes: np.ndarray
    yaws: np.ndarray
    occ_classes: np.ndarray
    colors: np.ndarray


@dataclass
class World:
    """Everything static in a scene."""

    layout: str
    roads: list[Road]
    section: CrossSection
    junction: Junction | None
    crosswalks: list[Crosswalk]
    ground: GroundMap
    static: StaticBoxes
    lane_paths: list[LanePath]
    ego_lane_paths: list[LanePath]  # candidate ego routes (start near the origin)
    signal_cycle: tuple[float, float, float] | None = None  # (green_s, amber_s, all_red_s) per phase
    signal_offset_s: float = 0.0

    def signal_is_green(self, approach: int, t: float) -> bool:
        """Signal of an approach at time t: arms 0/2 and 1/3 alternate (green, amber, all-red) phases."""
        return self.signal_time_to_green(approach, t) == 0.0

    def signal_state(self, approach: int, t: float) -> str:
        """The signal of an approach at time t: "green", "amber" or "red" (all-red included); no signals: "green"."""
        if self.signal_cycle is None:
            return "green"
        green, amber, _ = self.signal_cycle
        tau = self._signal_cycle_time(approach, t)
        return "green" if tau < green else "amber" if tau < green + amber else "red"

    def signal_time_to_green(self, approach: int, t: float) -> float:
        """Seconds until the approach's signal turns green (0 while green; always 0 without signals)."""
        if self.signal_cycle is None:
            return 0.0
        green, amber, all_red = self.signal_cycle
        tau = self._signal_cycle_time(approach, t)
        return 0.0 if tau < green else 2 * (green + amber + all_red) - tau

    def _signal_cycle_time(self, approach: int, t: float) -> float:
        """Time into the approach's two-phase cycle (its green starts at 0)."""
        green, amber, all_red = self.signal_cycle
        phase_len = green + amber + all_red
        return (t + self.signal_offset_s - (approach % 2) * phase_len) % (2 * phase_len)


# ----------------------------------------------------------------------------------------------------------- build


def build_world(rng: np.random.Generator, layout: str | None = None) -> World:
    """A random world of the given (or a random) layout."""
    layout = layout or LAYOUTS[int(rng.choice(3, p=[0.3, 0.25, 0.45]))]
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    section = CrossSection(
        lanes_per_direction=int(rng.choice([1, 2], p=[0.45, 0.55])),
        parking_width_m=float(rng.choice([0.0, 2.5], p=[0.45, 0.55])),
        sidewalk_width_m=float(rng.uniform(2.5, 4.0)),
    )
    builder = {"straight": _straight, "curve": _curve, "intersection": _intersection}[layout]
    roads, junction, crosswalks, lane_paths, ego_paths = builder(rng, section)
    ground = _ground_map(roads, junction, crosswalks, section)
    static = _static_geometry(rng, roads, ground, junction)
    world = World(layout, roads, section, junction, crosswalks, ground, static, lane_paths, ego_paths)
    if junction is not None:
        world.signal_cycle = (float(rng.uniform(5.0, 9.0)), 2.5, 2.0)
        # The ego's approach (0) turns green at a random time in [-6, 10] s: it meets green, amber and red.
        green_start_s = float(rng.uniform(-6.0, 10.0))
        world.signal_offset_s = float(-green_start_s % (2 * sum(world.signal_cycle)))
    return world


def _two_way_lane_paths(road: Road) -> list[LanePath]:
    sec = road.section
    out = []
    for direction in (1, -1):
        for lane in range(sec.lanes_per_direction):
            path = road.lane_path(lane, direction)
            out.append(LanePath(path, lane, sec.lanes_per_direction, (5.0, path.length - 5.0)))
    return out


def _midblock_crosswalk(road: Road, s: float) -> Crosswalk:
    xy, heading = road.centerline.interpolate(s)
    sec = road.section
    return Crosswalk(
        xy, float(heading), sec.driveable_half_width_m, sec.driveable_half_width_m + sec.sidewalk_width_m / 2
    )


def _straight(rng: np.random.Generator, section: CrossSection):
    road = Road([Piece(np.array([-120.0, 0.0]), 0.0, 420.0)], section)
    crosswalks = [_midblock_crosswalk(road, 120.0 + float(rng.uniform(25.0, 80.0)))] if rng.random() < 0.8 else []
    paths = _two_way_lane_paths(road)
    ego = [p for p in paths if p.path.points[0, 0] < 0]
    return [road], None, crosswalks, paths, ego


def _curve(rng: np.random.Generator, section: CrossSection):
    first = Piece(np.array([-120.0, 0.0]), 0.0, 120.0 + float(rng.uniform(15.0, 60.0)))
    radius = float(rng.uniform(35.0, 110.0))
    angle = float(rng.choice([-1.0, 1.0]) * rng.uniform(np.deg2rad(35.0), np.deg2rad(90.0)))
    start, heading = first.end_pose()
    arc = Piece(start, heading, abs(angle) * radius, 1.0 / radius * np.sign(angle))
    start, heading = arc.end_pose()
    last = Piece(start, heading, 220.0)
    road = Road([first, arc, last], section)
    crosswalks = []
    if rng.random() < 0.5 and first.length_m > 140.0:
        crosswalks.append(_midblock_crosswalk(road, float(rng.uniform(130.0, first.length_m - 5.0))))
    paths = _two_way_lane_paths(road)
    ego = [p for p in paths if p.path.points[0, 0] < 0]
    return [road], None, crosswalks, paths, ego


def _intersection(rng: np.random.Generator, section: CrossSection):
    junction_x = float(rng.uniform(35.0, 80.0))
    half = section.driveable_half_width_m + JUNCTION_CORNER_M
    arm_lengths = (junction_x + 110.0, 150.0, 150.0, 150.0)
    center = np.array([junction_x, 0.0])
    junction = Junction(center, half, (np.pi, -np.pi / 2, 0.0, np.pi / 2), arm_lengths)
    main = Road([Piece(np.array([-110.0, 0.0]), 0.0, arm_lengths[0] + arm_lengths[2])], section)
    cross = Road([Piece(np.array([junction_x, -arm_lengths[1]]), np.pi / 2, arm_lengths[1] + arm_lengths[3])], section)
    crosswalks = []
    for heading in junction.arm_headings:
        u = np.array([np.cos(heading), np.sin(heading)])
        dist = half + CROSSWALK_GAP_M + CROSSWALK_WIDTH_M / 2
        crosswalks.append(
            Crosswalk(
                center + dist * u,
                heading,
                section.driveable_half_width_m,
                section.driveable_half_width_m + section.sidewalk_width_m / 2,
            )
        )
    paths: list[LanePath] = []
    for arm in range(4):
        for lane in range(section.lanes_per_direction):
            turns = ["straight"]
            if lane == 0:
                turns.append("left")
            if lane == section.lanes_per_direction - 1:
                turns.append("right")
            for turn in turns:
                paths.append(_junction_path(junction, section, arm, lane, turn))
            paths.append(_outbound_path(junction, section, arm, lane))
    ego = [p for p in paths if p.approach == 0]
    return [main, cross], junction, crosswalks, paths, ego


def _junction_path(junction: Junction, section: CrossSection, arm: int, lane: int, turn: str) -> LanePath:
    """Path entering from `arm` in `lane` and leaving straight / left / right (same lane index out)."""
    half = junction.half_size_m
    offset = section.lane_offset_m(lane)
    arm_len = junction.arm_lengths_m[arm]
    # Approach frame: inbound along +x towards the centre at the origin, right-hand lane at y = -offset.
    inbound = line_points(np.array([-arm_len, -offset]), 0.0, arm_len - half)
    if turn == "straight":
        exit_arm = (arm + 2) % 4
        connector = line_points(np.array([-half, -offset]), 0.0, 2 * half)
        outbound = line_points(np.array([half, -offset]), 0.0, junction.arm_lengths_m[exit_arm] - half)
    elif turn == "right":
        exit_arm = (arm + 1) % 4
        connector = arc_points(np.array([-half, -offset]), 0.0, half - offset, -np.pi / 2)
        outbound = line_points(np.array([-offset, -half]), -np.pi / 2, junction.arm_lengths_m[exit_arm] - half)
    elif turn == "left":
        exit_arm = (arm + 3) % 4
        connector = arc_points(np.array([-half, -offset]), 0.0, half + offset, np.pi / 2)
        outbound = line_points(np.array([offset, half]), np.pi / 2, junction.arm_lengths_m[exit_arm] - half)
    else:
        raise ValueError(f"turn: expected one of {TURNS}, got {turn!r}")
    inbound_heading = junction.arm_headings[arm] + np.pi
    c, s = np.cos(inbound_heading), np.sin(inbound_heading)
    rot = np.array([[c, -s], [s, c]])
    local = concat_polylines([inbound, connector, outbound])
    path = Polyline.from_points(local.points @ rot.T + junction.center)
    entry_s = arm_len - half
    exit_s = entry_s + float(np.sum(np.hypot(*np.diff(connector, axis=0).T)))
    stop_s = arm_len - junction.stop_distance_m
    return LanePath(path, lane, section.lanes_per_direction, (5.0, stop_s - 3.0), arm, turn, stop_s, entry_s, exit_s)


def _outbound_path(junction: Junction, section: CrossSection, arm: int, lane: int) -> LanePath:
    """Path leaving the junction along `arm` (vehicles that already crossed it)."""
    half = junction.half_size_m
    heading = junction.arm_headings[arm]
    u = np.array([np.cos(heading), np.sin(heading)])
    right = np.array([np.sin(heading), -np.cos(heading)])
    start = junction.center + half * u + section.lane_offset_m(lane) * right
    path = Polyline.from_points(line_points(start, heading, junction.arm_lengths_m[arm] - half))
    return LanePath(path, lane, section.lanes_per_direction, (junction.stop_distance_m, path.length - 5.0))


# ------------------------------------------------------------------------------------------------------ ground map


def _ground_map(
    roads: list[Road], junction: Junction | None, crosswalks: list[Crosswalk], section: CrossSection
) -> GroundMap:
    pts = np.concatenate([r.centerline.points for r in roads])
    lo = np.floor(pts.min(axis=0) - WORLD_MARGIN_M)
    hi = np.ceil(pts.max(axis=0) + WORLD_MARGIN_M)
    shape = tuple(np.round((hi - lo) / GROUND_RESOLUTION_M).astype(int))[::-1]
    ground = GroundMap(
        lo, GROUND_RESOLUTION_M, np.full(shape, TERRAIN, dtype=np.uint8), np.zeros(shape, dtype=np.uint8)
    )
    rank = np.zeros(shape, dtype=np.uint8)  # 2 driveable, 1 sidewalk, 0 terrain: higher wins where roads overlap
    half = section.driveable_half_width_m
    outer = half + section.sidewalk_width_m
    for road in roads:
        s_offset = 0.0
        for piece in road.pieces:
            r0, r1, c0, c1 = ground.window(*piece.bbox(outer + 1.0))
            xy = ground.cell_centers(r0, r1, c0, c1)
            s, d = piece.frenet(xy)
            on = (s >= 0) & (s <= piece.length_m)
            ad = np.abs(d)
            new_rank = np.where(on & (ad <= half), 2, np.where(on & (ad <= outer), 1, 0)).astype(np.uint8)
            win_rank = rank[r0:r1, c0:c1]
            better = new_rank > win_rank
            win_rank[better] = new_rank[better]
            ground.classes[r0:r1, c0:c1][better] = np.where(new_rank[better] == 2, DRIVEABLE, SIDEWALK)
            marks = np.where(on, _lane_markings(s + s_offset, ad, section), MARK_NONE)
            win_marks = ground.markings[r0:r1, c0:c1]
            win_marks[marks > 0] = marks[marks > 0]
            s_offset += piece.length_m
    if junction is not None:
        r0, r1, c0, c1 = ground.window(junction.center - junction.half_size_m, junction.center + junction.half_size_m)
        ground.classes[r0:r1, c0:c1] = DRIVEABLE
        ground.markings[r0:r1, c0:c1] = MARK_NONE
        _paint_stop_lines(ground, junction, section)
    for cw in crosswalks:
        _paint_crosswalk(ground, cw)
    return ground


def _lane_markings(s: np.ndarray, ad: np.ndarray, section: CrossSection) -> np.ndarray:
    """Marking value per cell from road coordinates: double yellow centre, dashed lane lines, solid edge lines."""
    w = section.lane_width_m
    marks = np.where((ad >= 0.05) & (ad <= 0.2), MARK_YELLOW, MARK_NONE)
    for k in range(1, section.lanes_per_direction):
        dashed = (np.abs(ad - k * w) <= 0.075) & ((s % 9.0) < 3.0)
        marks = np.where(dashed, MARK_WHITE, marks)
    edge = np.abs(ad - section.lanes_per_direction * w) <= 0.075
    if section.parking_width_m > 0:
        marks = np.where(edge, MARK_WHITE, marks)
    return marks.astype(np.uint8)


def _local_window(ground: GroundMap, center: np.ndarray, heading: float, radius: float):
    r0, r1, c0, c1 = ground.window(center - radius, center + radius)
    xy = ground.cell_centers(r0, r1, c0, c1) - center
    c, s = np.cos(heading), np.sin(heading)
    along = xy[..., 0] * c + xy[..., 1] * s
    across = -xy[..., 0] * s + xy[..., 1] * c
    return (r0, r1, c0, c1), along, across


def _paint_crosswalk(ground: GroundMap, cw: Crosswalk) -> None:
    """Zebra stripes 0.6 m wide, parallel to the road, across its driveable width."""
    (r0, r1, c0, c1), along, across = _local_window(ground, cw.center, cw.road_heading, cw.half_length_m + 2.0)
    inside = (np.abs(along) <= cw.width_m / 2) & (np.abs(across) <= cw.half_length_m)
    win = ground.markings[r0:r1, c0:c1]
    win[inside] = np.where(((across[inside] + 100.0) % 1.2) < 0.6, MARK_WHITE, MARK_NONE)


def _paint_stop_lines(ground: GroundMap, junction: Junction, section: CrossSection) -> None:
    """Solid white stop line across the inbound lanes of every arm."""
    lanes_width = section.lanes_per_direction * section.lane_width_m
    for heading in junction.arm_headings:
        u = np.array([np.cos(heading), np.sin(heading)])
        center = junction.center + junction.stop_distance_m * u
        (r0, r1, c0, c1), along, across = _local_window(ground, center, heading, lanes_width + 1.0)
        # Inbound lanes lie to the right of the inbound heading (-u), i.e. at across > 0 in the arm frame.
        line = (np.abs(along) <= 0.2) & (across >= 0.0) & (across <= lanes_width)
        ground.markings[r0:r1, c0:c1][line] = MARK_WHITE


# ------------------------------------------------------------------------------------------------- static geometry

_BUILDING_COLORS = np.array([[178, 152, 128], [150, 150, 155], [160, 95, 80], [125, 140, 160], [196, 180, 150]])


def _footprint_free(
    ground: GroundMap, blocked: np.ndarray, center: np.ndarray, length: float, width: float, yaw: float
) -> bool:
    """True if a rectangle lies on terrain only and touches no earlier footprint."""
    u = np.linspace(-length / 2, length / 2, max(int(length), 2))
    v = np.linspace(-width / 2, width / 2, max(int(width), 2))
    uu, vv = np.meshgrid(u, v)
    c, s = np.cos(yaw), np.sin(yaw)
    xy = np.stack([c * uu - s * vv, s * uu + c * vv], axis=-1) + center
    row, col, inside = ground.cell_index(xy)
    return bool(inside.all() and np.all(ground.classes[row, col] == TERRAIN) and not blocked[row, col].any())


def _block(
    ground: GroundMap,
    blocked: np.ndarray,
    center: np.ndarray,
    length: float,
    width: float,
    yaw: float,
    ground_class: int | None = None,
) -> None:
    radius = np.hypot(length, width) / 2
    (r0, r1, c0, c1), along, across = _local_window(ground, center, yaw, radius)
    inside = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
    blocked[r0:r1, c0:c1][inside] = True
    if ground_class is not None:
        ground.classes[r0:r1, c0:c1][inside] = ground_class


def _static_geometry(
    rng: np.random.Generator, roads: list[Road], ground: GroundMap, junction: Junction | None
) -> StaticBoxes:
    """Buildings along both sides of every road, trees on the verges, a few paved lots (other_flat)."""
    blocked = np.zeros(ground.classes.shape, dtype=bool)
    boxes: list[tuple[np.ndarray, np.ndarray, float, int, np.ndarray]] = []
    for road in roads:
        sec = road.section
        edge = sec.driveable_half_width_m + sec.sidewalk_width_m
        for side in (1, -1):
            s = float(rng.uniform(0.0, 10.0))
            while s < road.centerline.length:
                length, depth = float(rng.uniform(10.0, 30.0)), float(rng.uniform(8.0, 18.0))
                setback = float(rng.uniform(2.5, 7.0))
                center, yaw = road.centerline.offset_point(s + length / 2, side * (edge + setback + depth / 2))
                roll = rng.random()
                if roll < 0.75 and _footprint_free(ground, blocked, center, length + 1.0, depth + 1.0, yaw):
                    height = float(rng.uniform(5.0, 22.0))
                    color = _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))] * rng.uniform(0.9, 1.1)
                    boxes.append(
                        (np.array([*center, height / 2]), np.array([length, depth, height]), yaw, MANMADE, color)
                    )
                    _block(ground, blocked, center, length + 1.0, depth + 1.0, yaw)
                elif roll < 0.9:
                    lot_depth = setback + depth / 2
                    lot_center, _ = road.centerline.offset_point(s + length / 2, side * (edge + lot_depth / 2 + 0.1))
                    if _footprint_free(ground, blocked, lot_center, length, lot_depth, yaw):
                        _block(ground, blocked, lot_center, length, lot_depth, yaw, ground_class=OTHER_FLAT)
                s += length + float(rng.uniform(2.0, 12.0))
            s = float(rng.uniform(0.0, 8.0))
            while s < road.centerline.length:
                verge = float(rng.uniform(1.0, 2.0))
                center, yaw = road.centerline.offset_point(s, side * (edge + verge))
                if rng.random() < 0.55 and _footprint_free(ground, blocked, center, 1.2, 1.2, yaw):
                    crown = float(rng.uniform(2.4, 4.0))
                    top = float(rng.uniform(5.0, 8.0))
                    trunk_h = float(rng.uniform(2.3, 3.0))
                    green = np.array([55, 120, 45]) * rng.uniform(0.8, 1.15)
                    boxes.append(
                        (
                            np.array([*center, trunk_h / 2]),
                            np.array([0.4, 0.4, trunk_h]),
                            yaw,
                            VEGETATION,
                            np.array([100.0, 72.0, 45.0]),
                        )
                    )
                    boxes.append(
                        (
                            np.array([*center, (trunk_h + top) / 2]),
                            np.array([crown, crown, top - trunk_h]),
                            yaw + float(rng.uniform(0, np.pi / 2)),
                            VEGETATION,
                            green,
                        )
                    )
                    _block(ground, blocked, center, 1.2, 1.2, yaw)
                s += float(rng.uniform(6.0, 14.0))
    if not boxes:
        empty = np.zeros((0, 3))
        return StaticBoxes(empty, empty, np.zeros(0), np.zeros(0, dtype=np.uint8), empty)
    centers, sizes, yaws, classes, colors = zip(*boxes)
    return StaticBoxes(
        np.stack(centers), np.stack(sizes), np.array(yaws), np.array(classes, dtype=np.uint8), np.stack(colors)
    )
