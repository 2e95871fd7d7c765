"""Occ3D-nuScenes labels: semantics from the ground map and boxes, visibility masks from the sensors' ray casts.

The files follow real Occ3D-nuScenes `labels.npz` conventions: `semantics` uint8, `mask_lidar` and `mask_camera`
uint8 0/1, the driveable surface in z-layer 0 (`OCC_GROUND_LAYER`; layer k is centred (k - OCC_GROUND_LAYER) * 0.4 m
above the ground), and `mask_camera` a subset of `mask_lidar`.

Semantics: every voxel is `free` except the ground layer (classed from the ground map) and voxels whose centre lies
inside a box (static geometry first, then agents, which win where they overlap).
Visibility ("shadow mapping"): the rig is fixed in the ego frame, so each voxel's projection into every camera and
into the dense lidar grid is precomputed once; a voxel is observed by a ray bundle when a probe point just under its
top face is no farther than its ray's first hit plus `VISIBILITY_TOLERANCE_M` (the voxels a ray traverses up to and
including the surface it hits). Rays without a return (sky, beyond range) observe nothing, as a lidar ray without a
point marks no voxel. `mask_lidar` is the union over the lidar rays; `mask_camera`, as Occ3D builds it, the voxels
observed by some camera among those the lidar observed (Occ3D treats voxels unobserved by the lidar as unobserved by
the cameras too).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from occvla_hf.constants import OCC_FREE_CLASS, OCC_GRID_SHAPE, OCC_GROUND_LAYER, OCC_RANGE_MIN_M, OCC_VOXEL_SIZE_M
from occvla_hf.sim.cameras import NEAR_PLANE_M, LidarRays, PinholeRays, camera_rays, lidar_rays
from occvla_hf.sim.geometry import frame_to_world_2d
from occvla_hf.sim.layout import GroundMap
from occvla_hf.sim.render import CastResult, FrameBoxes

VISIBILITY_TOLERANCE_M: float = 0.35  # about half a voxel diagonal
PROBE_HEIGHT_M: float = 0.45 * OCC_VOXEL_SIZE_M  # probe point above the voxel centre
GROUND_LAYER: int = OCC_GROUND_LAYER  # voxels holding the ground plane z = 0


def voxel_axes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates along x (200,), y (200,), z (16,) in the ego frame (z: see the module docstring)."""
    xs, ys = (OCC_RANGE_MIN_M[i] + (np.arange(OCC_GRID_SHAPE[i]) + 0.5) * OCC_VOXEL_SIZE_M for i in range(2))
    zs = (np.arange(OCC_GRID_SHAPE[2]) - OCC_GROUND_LAYER) * OCC_VOXEL_SIZE_M
    return xs, ys, zs


def voxel_grid_min() -> np.ndarray:
    """(3,) ego-frame lower edges of the first voxel along x, y, z (where `voxel_axes` starts, minus half a voxel)."""
    return np.array([axis[0] for axis in voxel_axes()]) - OCC_VOXEL_SIZE_M / 2


def voxel_index(x: float, y: float, z: float) -> tuple[int, int, int]:
    """(i, j, k) of the voxel holding an ego-frame point (the inverse of `voxel_axes`; may fall outside the grid)."""
    return tuple(int((v - lo) // OCC_VOXEL_SIZE_M) for v, lo in zip((x, y, z), voxel_grid_min(), strict=True))


@lru_cache(maxsize=1)
def voxel_centers() -> np.ndarray:
    """(X * Y * Z, 3) ego-frame voxel centres in C order of the (200, 200, 16) grid."""
    xs, ys, zs = voxel_axes()
    grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1)
    return grid.reshape(-1, 3)


@dataclass(frozen=True)
class VoxelProjection:
    """Voxels seen by one ray bundle: flat voxel index, flat ray index and the probe's depth along that ray."""

    voxel_index: np.ndarray  # (M,) int64
    ray_index: np.ndarray  # (M,) int64
    depth: np.ndarray  # (M,) float32, same unit as the bundle's cast depth


def project_voxels_camera(rays: PinholeRays) -> VoxelProjection:
    """Voxel probes in front of a camera and inside its image, with their z-depth and pixel."""
    probes = voxel_centers() + np.array([0.0, 0.0, PROBE_HEIGHT_M])
    cam = (probes - rays.origin) @ rays.rotation
    z = cam[:, 2]
    k = rays.intrinsic
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(k[0, 0] * cam[:, 0] / z + k[0, 2])
        v = np.round(k[1, 1] * cam[:, 1] / z + k[1, 2])
    keep = (z > NEAR_PLANE_M) & (u >= 0) & (u < rays.width) & (v >= 0) & (v < rays.height)
    idx = np.flatnonzero(keep)
    return VoxelProjection(idx, (v[idx] * rays.width + u[idx]).astype(np.int64), z[idx].astype(np.float32))


def project_voxels_lidar(rays: LidarRays) -> VoxelProjection:
    """Voxel probes that a real lidar ring passes through, with their range and that ring's ray.

    A voxel counts when the elevation of some ring (`rays.beam_rows`) lies within the voxel's vertical angular
    half-size seen from the lidar (`atan(voxel / 2 / horizontal distance)`): far from the sensor the rings are more
    than a voxel apart and the voxels between them are never traversed, as in a real sweep.
    """
    rel = voxel_centers() + np.array([0.0, 0.0, PROBE_HEIGHT_M]) - rays.origin
    horiz = np.hypot(rel[:, 0], rel[:, 1])
    elevation = np.arctan2(rel[:, 2], horiz)
    azimuth = np.arctan2(rel[:, 1], rel[:, 0]) % (2 * np.pi)
    ring_elevations = rays.elevations[rays.beam_rows]  # (beams,) increasing
    nearest = np.clip(np.searchsorted(ring_elevations, elevation), 1, len(ring_elevations) - 1)
    nearest = np.where(
        np.abs(elevation - ring_elevations[nearest - 1]) < np.abs(elevation - ring_elevations[nearest]),
        nearest - 1,
        nearest,
    )
    half_angle = np.arctan2(OCC_VOXEL_SIZE_M / 2, horiz)
    keep = np.abs(elevation - ring_elevations[nearest]) <= half_angle
    idx = np.flatnonzero(keep)
    col = np.round(azimuth[idx] / (2 * np.pi / len(rays.azimuths))) % len(rays.azimuths)
    ray = (rays.beam_rows[nearest[idx]] * len(rays.azimuths) + col).astype(np.int64)
    return VoxelProjection(idx, ray, np.linalg.norm(rel[idx], axis=1).astype(np.float32))


@lru_cache(maxsize=2)
def camera_voxel_projections(scale: float) -> tuple[VoxelProjection, ...]:
    """Projections of the voxel grid into the six cameras at an image scale (computed once per process)."""
    return tuple(project_voxels_camera(rays) for rays in camera_rays(scale))


@lru_cache(maxsize=2)
def lidar_voxel_projection(beams: int, oversampling: int, azimuth_steps: int) -> VoxelProjection:
    """Projection of the voxel grid into the dense lidar ray grid (computed once per process)."""
    return project_voxels_lidar(lidar_rays(beams, oversampling, azimuth_steps))


def visibility_mask(projections: list[VoxelProjection], casts: list[CastResult]) -> np.ndarray:
    """(200, 200, 16) bool: voxels no farther than the first hit along some ray with a hit, of some bundle."""
    visible = np.zeros(int(np.prod(OCC_GRID_SHAPE)), dtype=bool)
    for proj, cast in zip(projections, casts, strict=True):
        first_hit = cast.depth.reshape(-1)[proj.ray_index]
        seen = np.isfinite(first_hit) & (proj.depth <= first_hit + VISIBILITY_TOLERANCE_M)
        visible[proj.voxel_index[seen]] = True
    return visible.reshape(OCC_GRID_SHAPE)


def occ3d_masks(lidar_visible: np.ndarray, camera_visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`mask_lidar` and `mask_camera` as Occ3D stores them: uint8 0/1, the camera mask within the lidar mask."""
    return lidar_visible.astype(np.uint8), (camera_visible & lidar_visible).astype(np.uint8)


def semantics(ground: GroundMap, ego_xy: np.ndarray, ego_yaw: float, boxes: FrameBoxes) -> np.ndarray:
    """(200, 200, 16) uint8 Occ3D classes in the ego frame of a keyframe (boxes are given in that frame)."""
    xs, ys, zs = voxel_axes()
    sem = np.full(OCC_GRID_SHAPE, OCC_FREE_CLASS, dtype=np.uint8)
    columns = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)  # (200, 200, 2)
    classes, _ = ground.lookup(frame_to_world_2d(columns, ego_xy, ego_yaw))
    sem[:, :, GROUND_LAYER] = classes
    if len(boxes) == 0:
        return sem
    corners = boxes.corners()
    grid_min = voxel_grid_min()
    lo = np.floor((corners.min(axis=1) - grid_min) / OCC_VOXEL_SIZE_M).astype(int)
    hi = np.ceil((corners.max(axis=1) - grid_min) / OCC_VOXEL_SIZE_M).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, OCC_GRID_SHAPE)
    for b in np.argsort(boxes.annotation_index >= 0, kind="stable"):  # static first, agents last
        if np.any(hi[b] <= lo[b]):
            continue
        (x0, y0, z0), (x1, y1, z1) = lo[b], hi[b]
        px, py, pz = np.meshgrid(xs[x0:x1], ys[y0:y1], zs[z0:z1], indexing="ij")
        c, s = np.cos(boxes.yaws[b]), np.sin(boxes.yaws[b])
        dx, dy = px - boxes.centers[b, 0], py - boxes.centers[b, 1]
        half = boxes.sizes[b] / 2
        inside = (
            (np.abs(c * dx + s * dy) <= half[0])
            & (np.abs(-s * dx + c * dy) <= half[1])
            & (np.abs(pz - boxes.centers[b, 2]) <= half[2])
        )
        sem[x0:x1, y0:y1, z0:z1][inside] = boxes.occ_classes[b]
    return sem


def labels_npz_bytes(semantics_grid: np.ndarray, mask_lidar: np.ndarray, mask_camera: np.ndarray) -> bytes:
    """Occ3D `labels.npz` content (compressed, readable by `np.load`) with fixed zip timestamps for reproducibility."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, array in (("semantics", semantics_grid), ("mask_lidar", mask_lidar), ("mask_camera", mask_camera)):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            array_bytes = io.BytesIO()
            np.lib.format.write_array(array_bytes, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(info, array_bytes.getvalue())
    return buffer.getvalue()
