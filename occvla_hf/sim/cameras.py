"""Sensor rig: six nuScenes-like cameras and the LIDAR_TOP, with their rays in the ego frame.

Extrinsics and focal lengths approximate the nuScenes rig (front cameras ~70 degrees wide, the back camera ~110).
Rays are fixed in the ego frame, so ground intersections are precomputed once per rig.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from occvla_hf.constants import CAMERA_NAMES, CAMERA_YAWS_DEG
from occvla_hf.sim.config import BASE_IMAGE_HEIGHT_PX, BASE_IMAGE_WIDTH_PX

MAX_GROUND_RANGE_M: float = 400.0
NEAR_PLANE_M: float = 0.1


@dataclass(frozen=True)
class CameraSpec:
    """A camera at full 1600 x 900 resolution: yaw (left positive), position in the ego frame, focal length."""

    yaw_deg: float
    translation_m: tuple[float, float, float]
    focal_px: float


# One spec per camera, in `CAMERA_NAMES` order: (translation, focal length) beside the shared camera yaws.
CAMERA_SPECS: dict[str, CameraSpec] = {
    name: CameraSpec(yaw_deg, translation_m, focal_px)
    for name, yaw_deg, (translation_m, focal_px) in zip(
        CAMERA_NAMES,
        CAMERA_YAWS_DEG,
        (
            ((1.70, 0.02, 1.51), 1266.4),  # front
            ((1.55, -0.49, 1.50), 1260.8),  # front right
            ((1.52, 0.49, 1.51), 1257.9),  # front left
            ((0.03, 0.0, 1.57), 809.2),  # back
            ((1.04, 0.48, 1.56), 1256.7),  # back left
            ((1.03, -0.48, 1.59), 1259.5),  # back right
        ),
        strict=True,
    )
}

LIDAR_TRANSLATION_M: tuple[float, float, float] = (0.94, 0.0, 1.84)
LIDAR_YAW: float = -np.pi / 2  # nuScenes LIDAR_TOP: x to the right, y forward
LIDAR_ELEVATION_RANGE_DEG: tuple[float, float] = (-30.67, 10.67)  # 32-beam unit


def camera_rotation(spec: CameraSpec) -> np.ndarray:
    """(3, 3) camera -> ego rotation; the camera frame is x right, y down, z forward (level, no pitch/roll)."""
    yaw = np.deg2rad(spec.yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return np.stack([right, down, forward], axis=1)


def camera_intrinsic(spec: CameraSpec, scale: float) -> np.ndarray:
    """(3, 3) intrinsic matrix of an image scaled by `scale` from 1600 x 900."""
    return np.array(
        [
            [spec.focal_px * scale, 0.0, BASE_IMAGE_WIDTH_PX / 2 * scale],
            [0.0, spec.focal_px * scale, BASE_IMAGE_HEIGHT_PX / 2 * scale],
            [0.0, 0.0, 1.0],
        ]
    )


def lidar_rotation() -> np.ndarray:
    """(3, 3) lidar -> ego rotation."""
    c, s = np.cos(LIDAR_YAW), np.sin(LIDAR_YAW)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class PinholeRays:
    """Rays of one camera through its pixel centres (integer pixel coordinates), in the ego frame.

    `dirs_cam` has z = 1, so a ray parameter is the camera z-depth.
    """

    name: str
    origin: np.ndarray  # (3,) camera centre, ego frame
    rotation: np.ndarray  # (3, 3) camera -> ego
    intrinsic: np.ndarray  # (3, 3)
    width: int
    height: int
    dir_planes: np.ndarray  # (3, H, W) float32 camera-frame ray directions, one plane per component
    dirs_ego: np.ndarray  # (H, W, 3) float32
    ground_depth: np.ndarray  # (H, W) float32, inf where the ray misses the ground
    ground_index: np.ndarray  # (G,) flat indices of the pixels whose ray meets the ground
    ground_xy: np.ndarray  # (G, 2) float32 ego-frame ground hits of those pixels


@dataclass(frozen=True)
class LidarRays:
    """A dense spherical ray grid from the lidar origin: rows by increasing elevation, columns by azimuth."""

    origin: np.ndarray  # (3,) ego frame
    elevations: np.ndarray  # (R,) radians, increasing
    azimuths: np.ndarray  # (A,) radians in [0, 2 pi), ego frame
    dir_planes: np.ndarray  # (3, R, A) float32 unit vectors, ego frame, one plane per component
    ground_range: np.ndarray  # (R, A) float32
    beam_rows: np.ndarray  # (beams,) rows that are real lidar rings


def _ground_hits(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dz = dirs[..., 2]
    with np.errstate(divide="ignore"):
        t = np.where(dz < -1e-6, -origin[2] / dz, np.inf)
    xy = origin[:2] + np.where(np.isfinite(t), t, 0.0)[..., None] * dirs[..., :2]
    t = np.where(np.hypot(xy[..., 0] - origin[0], xy[..., 1] - origin[1]) > MAX_GROUND_RANGE_M, np.inf, t)
    return t.astype(np.float32), xy.astype(np.float32)


@lru_cache(maxsize=4)
def camera_rays(scale: float) -> tuple[PinholeRays, ...]:
    """Rays of the six cameras, in CAMERA_NAMES order."""
    width, height = round(BASE_IMAGE_WIDTH_PX * scale), round(BASE_IMAGE_HEIGHT_PX * scale)
    out = []
    for name in CAMERA_NAMES:
        spec = CAMERA_SPECS[name]
        k = camera_intrinsic(spec, scale)
        rot = camera_rotation(spec)
        u, v = np.meshgrid(np.arange(width), np.arange(height))
        dirs_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, dtype=float)], -1)
        dirs_ego = dirs_cam @ rot.T
        origin = np.array(spec.translation_m)
        depth, xy = _ground_hits(origin, dirs_ego)
        ground_index = np.flatnonzero(np.isfinite(depth))
        planes = np.ascontiguousarray(np.moveaxis(dirs_cam, -1, 0), dtype=np.float32)
        out.append(
            PinholeRays(
                name,
                origin,
                rot,
                k,
                width,
                height,
                planes,
                dirs_ego.astype(np.float32),
                depth,
                ground_index,
                xy.reshape(-1, 2)[ground_index],
            )
        )
    return tuple(out)


@lru_cache(maxsize=4)
def lidar_rays(beams: int, oversampling: int, azimuth_steps: int) -> LidarRays:
    """The dense lidar ray grid: `beams * oversampling` elevation rows, every `oversampling`-th one a real ring."""
    lo, hi = np.deg2rad(LIDAR_ELEVATION_RANGE_DEG)
    rows = beams * oversampling
    elevations = np.linspace(lo, hi, rows)
    azimuths = np.arange(azimuth_steps) * (2.0 * np.pi / azimuth_steps)
    el, az = np.meshgrid(elevations, azimuths, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    origin = np.array(LIDAR_TRANSLATION_M)
    ground_range, _ = _ground_hits(origin, dirs)
    beam_rows = np.arange(beams) * oversampling + oversampling // 2
    planes = np.ascontiguousarray(np.moveaxis(dirs, -1, 0), dtype=np.float32)
    return LidarRays(origin, elevations, azimuths, planes, ground_range, beam_rows)
