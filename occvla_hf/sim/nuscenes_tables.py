"""nuScenes table records: tokens, the fixed taxonomy tables, scene naming and the world -> global mapping.

Records follow the nuScenes schema exactly (the devkit joins them by token); tokens are md5 hex digests of a
description of the record, so reruns with the same seed reproduce them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nuscenes.utils.splits import create_splits_scenes
from PIL import Image

from occvla_hf.constants import CAMERA_NAMES, LIDAR_CHANNEL, NUSCENES_CATEGORIES, TRAFFIC_LIGHT_TABLE
from occvla_hf.sim.categories import NUSCENES_ATTRIBUTES, NUSCENES_VISIBILITY
from occvla_hf.sim.config import VERSIONS
from occvla_hf.sim.layout import DRIVEABLE, GroundMap

TABLE_NAMES: tuple[str, ...] = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
    TRAFFIC_LIGHT_TABLE,  # ours, not a nuScenes table (the devkit does not load it)
)
VAL_EVERY: int = 5  # scene index i with i % VAL_EVERY == 1 takes the next validation name


def token(*parts: object) -> str:
    """Deterministic 32-hex-digit token of a record description."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def scene_names(version: str, num_scenes: int) -> list[tuple[str, str]]:
    """(official scene name, split) for scene indices 0..num_scenes-1.

    Every fifth scene (index 1, 6, 11, ...) takes the next name of the validation list (mini_val / val), the others
    the next name of the training list, each list in the devkit's order, so any prefix mixes both splits.
    """
    splits = create_splits_scenes()
    if version == "v1.0-mini":
        train, val, train_split, val_split = splits["mini_train"], splits["mini_val"], "mini_train", "mini_val"
    elif version == "v1.0-trainval":
        train, val, train_split, val_split = splits["train"], splits["val"], "train", "val"
    else:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    if not 1 <= num_scenes <= len(train) + len(val):
        raise ValueError(f"num_scenes: expected 1..{len(train) + len(val)} for {version}, got {num_scenes}")
    out: list[tuple[str, str]] = []
    next_train = next_val = 0
    for i in range(num_scenes):
        if (i % VAL_EVERY == 1 and next_val < len(val)) or next_train == len(train):
            out.append((val[next_val], val_split))
            next_val += 1
        else:
            out.append((train[next_train], train_split))
            next_train += 1
    return out


def taxonomy_tables() -> dict[str, list[dict]]:
    """The category, attribute, visibility and sensor tables (identical for every run)."""
    sensors = [{"token": token("sensor", c), "channel": c, "modality": "camera"} for c in CAMERA_NAMES]
    sensors.append({"token": token("sensor", LIDAR_CHANNEL), "channel": LIDAR_CHANNEL, "modality": "lidar"})
    return {
        "category": [
            {"token": token("category", n), "name": n, "description": d, "index": lidarseg_index(n)}
            for n, d, _ in NUSCENES_CATEGORIES
        ],
        "attribute": [{"token": token("attribute", n), "name": n, "description": d} for n, d in NUSCENES_ATTRIBUTES],
        "visibility": [{"token": t, "level": lvl, "description": d} for t, lvl, d in NUSCENES_VISIBILITY],
        "sensor": sensors,
    }


def lidarseg_index(category: str) -> int:
    """The `index` a real `category` record carries: its lidarseg class id (0 is noise, the 23 object categories
    follow as 1..23 in alphabetical order, the background classes after them)."""
    return sorted(name for name, _, _ in NUSCENES_CATEGORIES).index(category) + 1


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin of a visible fraction in [0, 1]."""
    return "1" if fraction < 0.4 else "2" if fraction < 0.6 else "3" if fraction < 0.8 else "4"


def write_tables(table_dir: Path, tables: dict[str, list[dict]]) -> None:
    table_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLE_NAMES:
        with open(table_dir / f"{name}.json", "w") as f:
            json.dump(tables[name], f, indent=0)


@dataclass(frozen=True)
class GlobalFrame:
    """World (layout) frame -> nuScenes global frame: a rotation by `quarter_turns` * 90 deg and a shift that puts
    the ground raster at the origin, so the map mask PNG (0.1 m/px, origin bottom-left) covers it exactly."""

    quarter_turns: int
    shift: np.ndarray  # (2,)

    @classmethod
    def for_ground(cls, ground: GroundMap, quarter_turns: int) -> GlobalFrame:
        ny, nx = ground.classes.shape
        r = ground.resolution_m
        # Cell centres of the rotated raster must land on (col * r, (row' + 1) * r) with row' counted from the top,
        # which is how the devkit's MapMask reads a PNG: px = x / r, py = height - y / r.
        corners = np.array([[0.5, 0.5], [nx - 0.5, 0.5], [0.5, ny - 0.5], [nx - 0.5, ny - 0.5]]) * r + ground.origin_xy
        rotated = corners @ _rot90(quarter_turns).T
        return cls(quarter_turns, -rotated.min(axis=0) + np.array([0.0, r]))

    def point(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy) @ _rot90(self.quarter_turns).T + self.shift

    def yaw(self, yaw: float | np.ndarray) -> float | np.ndarray:
        return yaw + self.quarter_turns * np.pi / 2

    def map_mask(self, ground: GroundMap) -> Image.Image:
        """The driveable mask (255) as a PNG-ready image in global layout: row 0 = largest y, 0.1 m per pixel."""
        mask = (ground.classes == DRIVEABLE).view(np.uint8) * np.uint8(255)  # rows = +y, cols = +x
        image = Image.fromarray(np.ascontiguousarray(mask[::-1]))  # rows = -y: image layout before the turn
        turn = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
        return image if self.quarter_turns % 4 == 0 else image.transpose(turn[self.quarter_turns % 4])

    def cell_center(self, ground: GroundMap, row: int, col: int) -> np.ndarray:
        return self.point(ground.origin_xy + (np.array([col, row]) + 0.5) * ground.resolution_m)


def _rot90(quarter_turns: int) -> np.ndarray:
    c = [1, 0, -1, 0][quarter_turns % 4]
    s = [0, 1, 0, -1][quarter_turns % 4]
    return np.array([[c, -s], [s, c]], dtype=np.float64)
