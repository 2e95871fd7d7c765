"""Vectorised ray casting of the ground plane and oriented boxes, and image shading.

Each box is tested only against the rays inside its screen-space footprint (the projected corners, clipped at the
near plane, for cameras; the azimuth/elevation bounds for the lidar), so the cost follows the pixels a box covers.
A z-buffer keeps the nearest hit; ids are box indices, `GROUND_ID` or `SKY_ID`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from occvla_hf.constants import OCC_CLASS_NAMES
from occvla_hf.sim.cameras import NEAR_PLANE_M, LidarRays, PinholeRays
from occvla_hf.sim.layout import DRIVEABLE, MANMADE, MARK_WHITE, MARK_YELLOW, OTHER_FLAT, SIDEWALK, TERRAIN, GroundMap

GROUND_ID: int = -1
SKY_ID: int = -2
TEXTURE_SEED: int = 1234  # seed of the `noise_texture` every camera image is shaded with

# Base colours per Occ3D class (RGB); object classes have well separated hues so pixels identify them.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "others": (128, 128, 128),
    "barrier": (235, 235, 225),
    "bicycle": (150, 225, 30),
    "bus": (225, 205, 30),
    "car": (35, 75, 205),
    "construction_vehicle": (235, 70, 150),
    "motorcycle": (25, 190, 200),
    "pedestrian": (215, 35, 35),
    "traffic_cone": (255, 80, 0),
    "trailer": (125, 60, 170),
    "truck": (230, 125, 25),
    "driveable_surface": (88, 88, 92),
    "other_flat": (150, 135, 112),
    "sidewalk": (172, 168, 158),
    "terrain": (104, 132, 66),
    "manmade": (170, 150, 130),
    "vegetation": (55, 120, 45),
}
_GROUND_PALETTE = np.zeros((len(OCC_CLASS_NAMES), 3), dtype=np.float32)
for _cls in (DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN):
    _GROUND_PALETTE[_cls] = CLASS_COLORS[OCC_CLASS_NAMES[_cls]]
_MARK_COLORS = {MARK_WHITE: (232, 232, 228), MARK_YELLOW: (228, 188, 40)}
_GROUND_NOISE = {DRIVEABLE: 0.07, OTHER_FLAT: 0.1, SIDEWALK: 0.06, TERRAIN: 0.16}
_SKY_HORIZON = np.array([205, 222, 240], dtype=np.float32)
_SKY_ZENITH = np.array([95, 150, 220], dtype=np.float32)
_WINDOW_COLOR = np.array([62, 78, 96], dtype=np.float32)
_FOG_DISTANCE_M = 350.0
_BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


def class_color(occ_class: int) -> np.ndarray:
    """Base RGB colour (float32) of an Occ3D class."""
    return np.array(CLASS_COLORS[OCC_CLASS_NAMES[occ_class]], dtype=np.float32)


@dataclass(frozen=True)
class FrameBoxes:
    """Boxes in the ego frame of one keyframe: (N, 3) centres, (N, 3) sizes (l, w, h), (N,) yaws, (N,) Occ3D
    classes, (N, 3) RGB colours and (N,) annotation indices (-1 for unannotated static geometry)."""

    centers: np.ndarray
    sizes: np.ndarray
    yaws: np.ndarray
    occ_classes: np.ndarray
    colors: np.ndarray
    annotation_index: np.ndarray

    def __len__(self) -> int:
        return len(self.centers)

    def corners(self) -> np.ndarray:
        """(N, 8, 3) corners; bottom four first."""
        sx = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64) / 2
        sy = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=np.float64) / 2
        sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1], dtype=np.float64) / 2
        lx = self.sizes[:, :1] * sx
        ly = self.sizes[:, 1:2] * sy
        lz = self.sizes[:, 2:3] * sz
        c, s = np.cos(self.yaws)[:, None], np.sin(self.yaws)[:, None]
        return np.stack([c * lx - s * ly, s * lx + c * ly, lz], axis=-1) + self.centers[:, None, :]

    def rotations(self) -> np.ndarray:
        """(N, 3, 3) box -> ego rotations."""
        c, s = np.cos(self.yaws), np.sin(self.yaws)
        rot = np.zeros((len(self), 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
        return rot


@dataclass
class CastResult:
    """Nearest hit per ray: depth (camera z-depth or lidar range; inf for sky), id, face and local hit point.

    `face` is 2 * axis + (normal along +axis), axis 0/1/2 = box x/y/z; `hits_per_box` counts rays that hit each box
    ignoring occlusion (for visibility fractions).
    """

    depth: np.ndarray
    ids: np.ndarray
    face: np.ndarray
    local: np.ndarray
    hits_per_box: np.ndarray


def _slab(
    origin_local: np.ndarray, dirs_local: tuple[np.ndarray, np.ndarray, np.ndarray], half: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Ray / axis-aligned box slab test. dirs_local: three component arrays of equal shape.

    Returns the entry parameter t, the hit mask and the per-axis entry parameters (to find the entered face).
    """
    t_min_axes = []
    t_near = t_far = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(3):
            inv = 1.0 / dirs_local[i]
            t1 = (-half[i] - origin_local[i]) * inv
            t2 = (half[i] - origin_local[i]) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            t_min_axes.append(lo)
            t_near = lo if t_near is None else np.maximum(t_near, lo)
            t_far = hi if t_far is None else np.minimum(t_far, hi)
    hit = (t_near <= t_far) & (t_near > NEAR_PLANE_M)
    return t_near, hit, t_min_axes


def _update(
    result: CastResult,
    sel: tuple,
    box: int,
    origin_local: np.ndarray,
    dirs_local: tuple[np.ndarray, np.ndarray, np.ndarray],
    half: np.ndarray,
) -> None:
    """Z-buffer update of the rays `sel` (slices, or a slice and an index array) with one box."""
    t_near, hit, t_min_axes = _slab(origin_local, dirs_local, half)
    result.hits_per_box[box] += int(np.count_nonzero(hit))
    depth = result.depth[sel]
    closer = hit & (t_near < depth)
    if not closer.any():
        return
    t = t_near[closer]
    lo = [a[closer] for a in t_min_axes]
    axis = np.where((lo[0] >= lo[1]) & (lo[0] >= lo[2]), 0, np.where(lo[1] >= lo[2], 1, 2))
    d = np.stack([c[closer] for c in dirs_local], axis=1)  # (P, 3)
    positive = d[np.arange(len(axis)), axis] < 0  # entering against the ray => outward normal along +axis
    for array, values in (
        (result.depth, t),
        (result.ids, box),
        (result.face, (2 * axis + positive).astype(np.int8)),
        (result.local, origin_local + t[:, None] * d),
    ):
        sub = array[sel]  # a view for slices, a copy for index arrays: written back either way
        sub[closer] = values
        array[sel] = sub


def _empty_result(shape: tuple[int, ...], ground_depth: np.ndarray, num_boxes: int) -> CastResult:
    depth = ground_depth.copy()
    ids = np.where(np.isfinite(depth), GROUND_ID, SKY_ID).astype(np.int32)
    return CastResult(
        depth, ids, np.zeros(shape, np.int8), np.zeros((*shape, 3), np.float32), np.zeros(num_boxes, np.int64)
    )


def _transformed(planes: np.ndarray, sel: tuple, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Components of matrix @ d for the rays `sel` of (3, ...) direction planes."""
    x, y, z = planes[0][sel], planes[1][sel], planes[2][sel]
    m = matrix.astype(np.float32)
    return tuple(m[i, 0] * x + m[i, 1] * y + m[i, 2] * z for i in range(3))


def cast_camera(rays: PinholeRays, boxes: FrameBoxes) -> CastResult:
    """Nearest surface per pixel of one camera."""
    result = _empty_result((rays.height, rays.width), rays.ground_depth, len(boxes))
    if len(boxes) == 0:
        return result
    rects, nearest = _screen_rects(rays, boxes)
    rotations = boxes.rotations()
    in_view = np.flatnonzero(rects[:, 0] >= 0)
    for b in in_view[np.argsort(nearest[in_view], kind="stable")]:  # near to far, so hidden boxes are skipped
        u0, u1, v0, v1 = rects[b]
        sel = (slice(v0, v1), slice(u0, u1))
        if result.depth[sel].max() <= nearest[b]:
            continue
        to_local = rotations[b].T @ rays.rotation  # camera -> box
        origin_local = (rotations[b].T @ (rays.origin - boxes.centers[b])).astype(np.float32)
        dirs_local = _transformed(rays.dir_planes, sel, to_local)
        _update(result, sel, b, origin_local, dirs_local, (boxes.sizes[b] / 2).astype(np.float32))
    return result


def _screen_rects(rays: PinholeRays, boxes: FrameBoxes) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) pixel rectangles [u0, u1) x [v0, v1) covering each box's projection (-1 rows for boxes out of view),
    and (N,) the nearest z-depth of each box's visible part."""
    # (N, 8, 3) camera frame; einsum rather than a BLAS call: multithreaded BLAS only spins on arrays this small
    corners = np.einsum("nkj,ji->nki", boxes.corners() - rays.origin, rays.rotation)
    z = corners[..., 2]
    p0, p1 = corners[:, _BOX_EDGES[:, 0]], corners[:, _BOX_EDGES[:, 1]]  # (N, 12, 3)
    z0, z1 = p0[..., 2], p1[..., 2]
    crosses = (z0 - NEAR_PLANE_M) * (z1 - NEAR_PLANE_M) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(crosses, (NEAR_PLANE_M - z0) / (z1 - z0), 0.0)
    clipped = p0 + frac[..., None] * (p1 - p0)
    points = np.concatenate([corners, clipped], axis=1)  # (N, 20, 3)
    valid = np.concatenate([z >= NEAR_PLANE_M, crosses], axis=1)
    k = rays.intrinsic
    zz = np.where(valid, points[..., 2], 1.0)
    u = k[0, 0] * points[..., 0] / zz + k[0, 2]
    v = k[1, 1] * points[..., 1] / zz + k[1, 2]
    big = 1e9
    u_min = np.where(valid, u, big).min(axis=1)
    u_max = np.where(valid, u, -big).max(axis=1)
    v_min = np.where(valid, v, big).min(axis=1)
    v_max = np.where(valid, v, -big).max(axis=1)
    rects = np.stack([np.floor(u_min), np.ceil(u_max) + 1, np.floor(v_min), np.ceil(v_max) + 1], axis=1)
    rects[:, 0:2] = np.clip(rects[:, 0:2], 0, rays.width)
    rects[:, 2:4] = np.clip(rects[:, 2:4], 0, rays.height)
    rects = rects.astype(np.int64)
    empty = ~valid.any(axis=1) | (rects[:, 1] <= rects[:, 0]) | (rects[:, 3] <= rects[:, 2])
    rects[empty] = -1
    nearest = np.where(valid, points[..., 2], np.inf).min(axis=1)
    return rects, nearest


def cast_lidar(rays: LidarRays, boxes: FrameBoxes) -> CastResult:
    """Nearest surface per ray of the dense lidar grid (depth = range)."""
    result = _empty_result(rays.ground_range.shape, rays.ground_range, len(boxes))
    if len(boxes) == 0:
        return result
    corners = boxes.corners() - rays.origin  # (N, 8, 3)
    rotations = boxes.rotations()
    center_rel = boxes.centers - rays.origin
    center_az = np.arctan2(center_rel[:, 1], center_rel[:, 0])
    corner_az = np.arctan2(corners[..., 1], corners[..., 0])
    rel_az = (corner_az - center_az[:, None] + np.pi) % (2 * np.pi) - np.pi
    horiz = np.hypot(corners[..., 0], corners[..., 1])
    # Nearest horizontal distance from the sensor to each footprint (0 if above/below it).
    local_xy = np.einsum("nji,nj->ni", rotations[:, :2, :2], -center_rel[:, :2])
    outside = np.maximum(np.abs(local_xy) - boxes.sizes[:, :2] / 2, 0.0)
    d_min = np.hypot(outside[:, 0], outside[:, 1])
    d_max = horiz.max(axis=1)
    z_bot = center_rel[:, 2] - boxes.sizes[:, 2] / 2
    z_top = center_rel[:, 2] + boxes.sizes[:, 2] / 2
    el_hi = np.arctan2(z_top, np.where(z_top > 0, d_min, d_max))
    el_lo = np.arctan2(z_bot, np.where(z_bot > 0, d_max, d_min))
    num_az = len(rays.azimuths)
    step = 2 * np.pi / num_az
    vertical_gap = np.maximum(np.maximum(z_bot, -z_top), 0.0)
    nearest = np.hypot(d_min, vertical_gap)
    for b in np.argsort(nearest, kind="stable"):  # near to far, so hidden boxes are skipped
        r0 = int(np.searchsorted(rays.elevations, el_lo[b]))
        r1 = int(np.searchsorted(rays.elevations, el_hi[b], side="right"))
        if r1 <= r0 or nearest[b] > 150.0:
            continue
        a0 = int(np.floor((center_az[b] + rel_az[b].min()) / step))
        a1 = int(np.ceil((center_az[b] + rel_az[b].max()) / step))
        cols = np.arange(a0, a1 + 1) % num_az
        sel = (slice(r0, r1), cols)
        if result.depth[sel].max() <= nearest[b]:
            continue
        origin_local = (rotations[b].T @ (rays.origin - boxes.centers[b])).astype(np.float32)
        dirs_local = _transformed(rays.dir_planes, sel, rotations[b].T)
        _update(result, sel, b, origin_local, dirs_local, (boxes.sizes[b] / 2).astype(np.float32))
    return result


# ----------------------------------------------------------------------------------------------------------- shade


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """A (H, W, 3) uint8 camera image encoded as the dataset stores it: JPEG at `quality`, 4:4:4 chroma."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def noise_texture(seed: int, size: int = 256) -> np.ndarray:
    """(size, size) float32 smooth-ish value noise in [-1, 1] (sum of two octaves), tiled periodically."""
    rng = np.random.default_rng(seed)
    fine = rng.uniform(-1, 1, (size, size))
    coarse = np.kron(rng.uniform(-1, 1, (size // 8, size // 8)), np.ones((8, 8)))
    blur = (coarse + np.roll(coarse, 4, 0) + np.roll(coarse, 4, 1) + np.roll(np.roll(coarse, 4, 0), 4, 1)) / 4
    return (0.45 * fine + 0.55 * blur).astype(np.float32)


def _tile(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    n = texture.shape[0]
    return texture[np.floor(u).astype(np.int64) % n, np.floor(v).astype(np.int64) % n]


@dataclass(frozen=True)
class _CameraBackdrop:
    """Per-camera constants of shading: sky colours and the fog factor of every ground pixel."""

    sky: np.ndarray  # (H * W, 3) float32
    ground_fog: np.ndarray  # (G,) float32


_BACKDROPS: dict[tuple[str, int, int], _CameraBackdrop] = {}


def _backdrop(rays: PinholeRays) -> _CameraBackdrop:
    key = (rays.name, rays.width, rays.height)
    if key not in _BACKDROPS:
        elevation = np.clip(rays.dirs_ego[..., 2] / np.linalg.norm(rays.dirs_ego, axis=-1), 0.0, 1.0)
        sky = _SKY_HORIZON + (_SKY_ZENITH - _SKY_HORIZON) * np.sqrt(elevation)[..., None]
        fog = 1.0 - np.exp(-rays.ground_depth.reshape(-1)[rays.ground_index] / _FOG_DISTANCE_M)
        _BACKDROPS[key] = _CameraBackdrop(sky.reshape(-1, 3).astype(np.float32), fog.astype(np.float32))
    return _BACKDROPS[key]


def _ground_tables() -> tuple[np.ndarray, np.ndarray]:
    """Colour and noise amplitude per (class * 3 + marking)."""
    colors = np.repeat(_GROUND_PALETTE, 3, axis=0)
    amp = np.zeros(len(colors), np.float32)
    for cls, a in _GROUND_NOISE.items():
        amp[3 * cls] = a
        for mark, rgb in _MARK_COLORS.items():
            colors[3 * cls + mark] = rgb
            amp[3 * cls + mark] = 0.04
    return colors, amp


_GROUND_COLORS, _GROUND_AMP = _ground_tables()


def shade_camera(
    rays: PinholeRays,
    cast: CastResult,
    boxes: FrameBoxes,
    ground: GroundMap,
    ego_xy: np.ndarray,
    ego_yaw: float,
    sun_ego: np.ndarray,
    texture: np.ndarray,
) -> np.ndarray:
    """(H, W, 3) uint8 image from a cast: sky gradient, textured ground with markings, shaded textured boxes."""
    backdrop = _backdrop(rays)
    image = backdrop.sky.copy()  # (H * W, 3)

    xy_ego = rays.ground_xy
    c, s = np.float32(np.cos(ego_yaw)), np.float32(np.sin(ego_yaw))
    x = c * xy_ego[:, 0] - s * xy_ego[:, 1] + np.float32(ego_xy[0])
    y = s * xy_ego[:, 0] + c * xy_ego[:, 1] + np.float32(ego_xy[1])
    classes, marks = ground.lookup(np.stack([x, y], axis=1))
    entry = 3 * classes.astype(np.int64) + marks
    noise = _tile(texture, x * 20.0, y * 20.0)
    color = _GROUND_COLORS[entry] * (1.0 + _GROUND_AMP[entry] * noise)[:, None]
    color *= 0.6 + 0.4 * max(float(sun_ego[2]), 0.0)
    sky_here = backdrop.sky[rays.ground_index]
    image[rays.ground_index] = color + (sky_here - color) * backdrop.ground_fog[:, None]

    flat_ids = cast.ids.reshape(-1)
    on_box = np.flatnonzero(flat_ids >= 0)
    if len(on_box):
        ids = flat_ids[on_box]
        face = cast.face.reshape(-1)[on_box].astype(np.int64)
        local = cast.local.reshape(-1, 3)[on_box]
        axis, positive = face // 2, face % 2
        sign = np.where(positive == 1, 1.0, -1.0).astype(np.float32)
        rot = boxes.rotations().astype(np.float32)
        normals = rot[ids, :, axis] * sign[:, None]  # column `axis` of each box rotation = that local axis in ego
        shade = 0.55 + 0.45 * np.clip(np.einsum("pi,i->p", normals, sun_ego.astype(np.float32)), 0.0, 1.0)
        noise = _tile(texture, (local[:, 0] + 0.7 * local[:, 2]) * 8.0, (local[:, 1] - 0.5 * local[:, 2]) * 8.0)
        color = boxes.colors[ids] * (1.0 + 0.08 * noise)[:, None]
        window = (boxes.occ_classes[ids] == MANMADE) & (axis < 2)
        if window.any():
            w = np.flatnonzero(window)
            height = local[w, 2] + boxes.sizes[ids[w], 2].astype(np.float32) / 2
            along = np.where(axis[w] == 0, local[w, 1], local[w, 0]) / 3.0 % 1.0
            level = (height - 0.8) / 3.2 % 1.0
            glass = (height > 1.2) & (along > 0.25) & (along < 0.75) & (level > 0.3) & (level < 0.75)
            color[w[glass]] = _WINDOW_COLOR
        image[on_box] = color * shade[:, None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8).reshape(rays.height, rays.width, 3)
