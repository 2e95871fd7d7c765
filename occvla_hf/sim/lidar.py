"""LIDAR_TOP point clouds from the dense lidar ray cast: one ring per `beam_rows` row, nuScenes `.pcd.bin` layout."""

from __future__ import annotations

import numpy as np

from occvla_hf.constants import OCC_CLASS_NAMES
from occvla_hf.sim.cameras import LIDAR_TRANSLATION_M, LidarRays, lidar_rotation
from occvla_hf.sim.geometry import frame_to_world_2d
from occvla_hf.sim.layout import GroundMap
from occvla_hf.sim.render import CastResult, FrameBoxes

# Mean return intensity (0..255) per Occ3D class; painted markings return brighter than asphalt.
_REFLECTIVITY = np.full(len(OCC_CLASS_NAMES), 20.0, dtype=np.float32)
for _name, _value in {
    "barrier": 60.0,
    "bicycle": 30.0,
    "bus": 45.0,
    "car": 40.0,
    "construction_vehicle": 45.0,
    "motorcycle": 35.0,
    "pedestrian": 12.0,
    "traffic_cone": 90.0,
    "trailer": 40.0,
    "truck": 45.0,
    "driveable_surface": 8.0,
    "other_flat": 12.0,
    "sidewalk": 18.0,
    "terrain": 6.0,
    "manmade": 25.0,
    "vegetation": 10.0,
}.items():
    _REFLECTIVITY[OCC_CLASS_NAMES.index(_name)] = _value
_MARKING_INTENSITY: float = 70.0


def lidar_point_cloud(
    rays: LidarRays,
    cast: CastResult,
    boxes: FrameBoxes,
    ground: GroundMap,
    ego_xy: np.ndarray,
    ego_yaw: float,
    texture: np.ndarray,
    max_range_m: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns of the real rings: points (P, 5) float32 [x, y, z, intensity, ring] in the LIDAR_TOP frame, and
    the hit id per point (box index, or -1 for ground)."""
    depth = cast.depth[rays.beam_rows]  # (beams, A)
    ids = cast.ids[rays.beam_rows]
    keep = np.isfinite(depth) & (depth <= max_range_m)
    ring = np.broadcast_to(np.arange(len(rays.beam_rows))[:, None], depth.shape)[keep]
    dirs = rays.dir_planes[:, rays.beam_rows][:, keep].T  # (P, 3)
    points_ego = rays.origin + depth[keep][:, None] * dirs
    hit = ids[keep]
    on_ground = hit < 0
    classes = np.empty(len(hit), dtype=np.int64)
    classes[~on_ground] = boxes.occ_classes[hit[~on_ground]]
    world_xy = frame_to_world_2d(points_ego[on_ground, :2], ego_xy, ego_yaw)
    ground_classes, marks = ground.lookup(world_xy)
    classes[on_ground] = ground_classes
    intensity = _REFLECTIVITY[classes]
    ground_intensity = intensity[on_ground]
    ground_intensity[marks > 0] = _MARKING_INTENSITY
    intensity[on_ground] = ground_intensity
    n = texture.shape[0]
    jitter = texture[
        np.floor(points_ego[:, 0] * 10).astype(np.int64) % n, np.floor(points_ego[:, 1] * 10).astype(np.int64) % n
    ]
    intensity = np.clip(intensity * (1.0 + 0.3 * jitter), 0.0, 255.0)
    points_lidar = np.einsum("pj,ji->pi", points_ego - np.array(LIDAR_TRANSLATION_M), lidar_rotation())
    cloud = np.column_stack([points_lidar, intensity, ring]).astype(np.float32)
    return cloud, hit.astype(np.int64)
