"""Small geometry helpers of the sim: oriented boxes, 2D poses and polylines (quaternions: `occvla_hf.geometry`).

Conventions: right-handed frames, z up, yaw counter-clockwise from +x; boxes are (centre, (length, width, height),
yaw) with length along the heading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation_z(yaw: float) -> np.ndarray:
    """(3, 3) rotation matrix about +z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box_corners(center: np.ndarray, size_lwh: np.ndarray, yaw: float) -> np.ndarray:
    """(8, 3) corners of an oriented box; bottom four first."""
    length, width, height = size_lwh
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2.0
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * width / 2.0
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * height / 2.0
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * sx - s * sy, s * sx + c * sy, sz], axis=1) + np.asarray(center)


def points_in_box(
    points: np.ndarray, center: np.ndarray, size_lwh: np.ndarray, yaw: float, margin_m: float = 0.0
) -> np.ndarray:
    """(N,) bool: which of `points` (N, 3) lie inside the box grown by `margin_m` on every side."""
    local = (np.asarray(points) - np.asarray(center)) @ rotation_z(yaw)
    half = np.asarray(size_lwh) / 2.0 + margin_m
    return np.all(np.abs(local) <= half, axis=1)


def world_to_frame_2d(xy: np.ndarray, origin_xy: np.ndarray, yaw: float) -> np.ndarray:
    """(N, 2) points expressed in the 2D frame at `origin_xy` rotated by `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    d = np.asarray(xy) - np.asarray(origin_xy)
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def frame_to_world_2d(xy: np.ndarray, origin_xy: np.ndarray, yaw: float) -> np.ndarray:
    """Inverse of `world_to_frame_2d`."""
    c, s = np.cos(yaw), np.sin(yaw)
    p = np.asarray(xy)
    return np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], axis=-1) + np.asarray(origin_xy)


@dataclass(frozen=True)
class Polyline:
    """A dense 2D path: points (M, 2), cumulative arc length s (M,), unwrapped headings (M,)."""

    points: np.ndarray
    s: np.ndarray
    headings: np.ndarray

    @classmethod
    def from_points(cls, points: np.ndarray) -> Polyline:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
            raise ValueError(f"points: expected (M >= 2, 2), got {points.shape}")
        seg = np.diff(points, axis=0)
        keep = np.concatenate([[True], np.hypot(seg[:, 0], seg[:, 1]) > 1e-9])
        points = points[keep]
        seg = np.diff(points, axis=0)
        s = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
        seg_heading = np.arctan2(seg[:, 1], seg[:, 0])
        # Vertex heading: mean of the adjacent segment headings (circular), then unwrapped for interpolation.
        before = np.concatenate([seg_heading[:1], seg_heading])
        after = np.concatenate([seg_heading, seg_heading[-1:]])
        headings = np.unwrap(np.arctan2(np.sin(before) + np.sin(after), np.cos(before) + np.cos(after)))
        return cls(points=points, s=s, headings=headings)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def interpolate(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Positions (..., 2) and headings (...) at arc lengths `s` (clamped to the path)."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        x = np.interp(s, self.s, self.points[:, 0])
        y = np.interp(s, self.s, self.points[:, 1])
        return np.stack([x, y], axis=-1), np.interp(s, self.s, self.headings)

    def offset_point(self, s: float, lateral_m: float) -> tuple[np.ndarray, float]:
        """Position and heading of the point `lateral_m` to the left of the path at arc length `s`."""
        xy, heading = self.interpolate(s)
        return xy + lateral_m * np.array([-np.sin(heading), np.cos(heading)]), float(heading)

    def project(self, xy: np.ndarray, s_min: float = 0.0, s_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Arc length (N,) and signed lateral offset (N,), left positive, of points (N, 2) on the sub-path
        [s_min, s_max]."""
        s_max = self.length if s_max is None else s_max
        lo = max(int(np.searchsorted(self.s, s_min, side="right")) - 1, 0)
        hi = min(int(np.searchsorted(self.s, s_max, side="left")) + 1, len(self.s) - 1)
        hi = max(hi, lo + 1)
        a = self.points[lo:hi]  # (K, 2) segment starts
        b = self.points[lo + 1 : hi + 1]
        ab = b - a
        seg_len2 = np.einsum("kd,kd->k", ab, ab)
        ap = xy[:, None, :] - a[None]  # (N, K, 2)
        u = np.clip(np.einsum("nkd,kd->nk", ap, ab) / seg_len2, 0.0, 1.0)
        closest = a[None] + u[..., None] * ab[None]
        dist2 = np.sum((xy[:, None, :] - closest) ** 2, axis=-1)
        k = np.argmin(dist2, axis=1)
        rows = np.arange(len(xy))
        s = self.s[lo + k] + u[rows, k] * np.sqrt(seg_len2[k])
        cross = ab[k, 0] * ap[rows, k, 1] - ab[k, 1] * ap[rows, k, 0]
        lateral = np.sign(cross) * np.sqrt(dist2[rows, k])
        return s, lateral

    def offset(self, lateral_m: float) -> Polyline:
        """The parallel path `lateral_m` to the left (exact for lines and arcs)."""
        normal = np.stack([-np.sin(self.headings), np.cos(self.headings)], axis=1)
        return Polyline.from_points(self.points + lateral_m * normal)

    def reversed(self) -> Polyline:
        return Polyline.from_points(self.points[::-1])

    def curvature(self) -> np.ndarray:
        """(M,) signed curvature (1/m, left positive) from the heading derivative."""
        return np.gradient(self.headings, self.s)

    def slice(self, s_from: float, s_to: float) -> Polyline:
        """The sub-path between two arc lengths (in order)."""
        inner = (self.s > s_from) & (self.s < s_to)
        start, _ = self.interpolate(s_from)
        end, _ = self.interpolate(s_to)
        return Polyline.from_points(np.concatenate([start[None], self.points[inner], end[None]]))


def concat_polylines(parts: list[np.ndarray]) -> Polyline:
    """One polyline through point arrays laid end to end (duplicate joints are dropped)."""
    return Polyline.from_points(np.concatenate(parts, axis=0))


def line_points(start: np.ndarray, heading: float, length_m: float, step_m: float = 0.5) -> np.ndarray:
    """(M, 2) points of a straight segment."""
    n = max(int(np.ceil(length_m / step_m)), 1)
    t = np.linspace(0.0, length_m, n + 1)
    return np.asarray(start) + t[:, None] * np.array([np.cos(heading), np.sin(heading)])


def arc_points(start: np.ndarray, heading: float, radius_m: float, angle: float, step_m: float = 0.5) -> np.ndarray:
    """(M, 2) points of a circular arc; positive `angle` turns left."""
    n = max(int(np.ceil(abs(angle) * radius_m / step_m)), 2)
    side = np.sign(angle)
    center = np.asarray(start) + side * radius_m * np.array([-np.sin(heading), np.cos(heading)])
    phi0 = heading - side * np.pi / 2.0
    phi = phi0 + np.linspace(0.0, angle, n + 1)
    return center + radius_m * np.stack([np.cos(phi), np.sin(phi)], axis=1)
