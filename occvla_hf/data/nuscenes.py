"""Keyframe records of a nuScenes dataroot, read through the nuscenes-devkit.

One record per keyframe (`sample`). Camera fields come from the six keyframe camera `sample_data` and their
`calibrated_sensor`; planning fields from the LIDAR_TOP keyframe ego poses of the scene and its `sample_annotation`s:

* `trajectory` (6, 2): ego positions at the next 6 keyframes (0.5 s apart, 3 s) in the ego frame of the current one
  (x forward, y left, metres), as UniAD/VAD; `trajectory_mask` False past the scene end (values 0).
* `past_trajectory` (4, 2): ego positions at the previous 4 keyframes, oldest first (-2.0, -1.5, -1.0, -0.5 s), same
  frame; `past_trajectory_mask` False before the scene start.
* `ego_status` (6,) in `EGO_STATUS_FEATURES` order: vx, vy (m/s), ax, ay (m/s^2), yaw_rate (rad/s) from the keyframe
  poses by causal backward differences (see `geometry.ego_kinematics`; invalid on the first one or two keyframes of a
  scene), and steering: the `steering` wheel angle of the CAN bus expansion's last `vehicle_monitor` message at or
  before the keyframe, degrees converted to rad (sign as recorded), when `<dataroot>/can_bus` holds the scene;
  otherwise 0 and invalid. `ego_status_valid` (6,) bool flags each entry. Kinematics come from the poses even when
  the CAN bus is present, so that scenes with and without it (21 nuScenes scenes have none) share one definition.
* `meta_action`: `"<speed>, <path>"` from `occvla_hf.processing.meta_action` on the valid waypoints, with the measured
  speed as the current speed when valid; `""` when no future waypoint exists (the last keyframe of a scene).
* `agent_boxes` (7 lists, t = 0..6 at 0.5 s): the boxes annotated at the current keyframe, followed to later
  keyframes through `sample_annotation.next` (as UniAD's occupancy/collision ground truth), each (N_t, 7) in
  `BOX_FIELDS` order in the ego frame of the current keyframe; `agent_categories` the matching nuScenes detection
  names. Annotations whose category has no detection name (animals, debris, ...) are left out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nuscenes.can_bus.can_bus_api import NuScenesCanBus
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.splits import create_splits_scenes

from occvla_hf.constants import CAMERA_NAMES, EGO_STATUS_FEATURES, LIDAR_CHANNEL, NUM_PAST_WAYPOINTS, NUM_WAYPOINTS
from occvla_hf.data.geometry import boxes_in_frame, ego_kinematics, pose_matrix, positions_in_frame
from occvla_hf.meta_action import meta_action_from_trajectory

# Official splits built for each nuScenes version (names as `create_splits_scenes` returns them).
VERSION_SPLITS: dict[str, tuple[str, ...]] = {
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-trainval": ("train", "val"),
    "v1.0-test": ("test",),
}
# Agent boxes are stored at t = 0 (the keyframe) and at each future waypoint.
NUM_BOX_STEPS: int = NUM_WAYPOINTS + 1
_STEERING_INDEX = EGO_STATUS_FEATURES.index("steering")
_CAN_BUS_SCENE_NAME = re.compile(r"^scene-\d{4}$")


def check_dataroot(dataroot: str | os.PathLike, version: str) -> Path:
    """The dataroot as a Path; FileNotFoundError naming what is missing (the folder, or the version's tables)."""
    root = Path(dataroot)
    if not root.is_dir():
        raise FileNotFoundError(f"dataroot: {str(root)!r} is not a directory")
    if not (root / version / "sample.json").is_file():
        found = sorted(p.name for p in root.iterdir() if (p / "sample.json").is_file())
        raise FileNotFoundError(
            f"version: no nuScenes tables at {str(root / version)!r} (expected {version}/sample.json); "
            f"versions found in the dataroot: {found}"
        )
    return root


class NuScenesReader:
    """Reads the keyframes of one nuScenes version (real or generated) through the devkit.

    Args:
        dataroot: folder holding `<version>/*.json`, `samples/` and optionally `can_bus/`.
        version: e.g. `"v1.0-mini"`, `"v1.0-trainval"`.
    """

    def __init__(self, dataroot: str | os.PathLike, version: str) -> None:
        self.dataroot = check_dataroot(dataroot, version).resolve()
        self.version = version
        self.nusc = NuScenes(version=version, dataroot=str(self.dataroot), verbose=False)
        self.can_bus = NuScenesCanBus(dataroot=str(self.dataroot)) if (self.dataroot / "can_bus").is_dir() else None
        self._scenes = {scene["name"]: scene for scene in self.nusc.scene}

    def split_scenes(self, splits: Sequence[str] | None = None) -> dict[str, list[str]]:
        """Scene names of the dataroot in each official split (default: the version's splits), in split order.

        Splits without any scene in the dataroot are left out; ValueError if a split name is unknown or no scene
        of the dataroot is in any requested split.
        """
        official = create_splits_scenes()
        splits = tuple(splits) if splits is not None else VERSION_SPLITS.get(self.version, ())
        unknown = [split for split in splits if split not in official]
        if unknown or not splits:
            raise ValueError(f"splits: expected names among {sorted(official)}, got {list(splits)}")
        present = {split: [name for name in official[split] if name in self._scenes] for split in splits}
        present = {split: names for split, names in present.items() if names}
        if not present:
            raise ValueError(
                f"splits: none of the {len(self._scenes)} scenes of {self.version} is in splits {list(splits)}"
            )
        return present

    def scene_keyframes(self, scene_name: str) -> list[str]:
        """Sample tokens of a scene's keyframes in time order."""
        if scene_name not in self._scenes:
            raise KeyError(f"scene_name: {scene_name!r} is not a scene of {self.version}")
        tokens = []
        token = self._scenes[scene_name]["first_sample_token"]
        while token:
            tokens.append(token)
            token = self.nusc.get("sample", token)["next"]
        return tokens

    def camera_fields(self, sample_token: str) -> dict:
        """Common fields of a keyframe.

        Returns `sample_token`, `scene_name`, `timestamp` (us), `image_paths` (6 absolute paths in `CAMERA_NAMES`
        order), `camera_intrinsics` (6, 3, 3) float32 and `camera_extrinsics` (6, 4, 4) float32 camera -> ego.
        """
        sample = self.nusc.get("sample", sample_token)
        missing = [name for name in CAMERA_NAMES if name not in sample["data"]]
        if missing:
            raise ValueError(f"sample {sample_token}: no keyframe sample_data for cameras {missing}")
        paths, intrinsics, extrinsics = [], [], []
        for name in CAMERA_NAMES:
            sample_data = self.nusc.get("sample_data", sample["data"][name])
            sensor = self.nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
            paths.append(str(self.dataroot / sample_data["filename"]))
            intrinsics.append(sensor["camera_intrinsic"])
            extrinsics.append(pose_matrix(sensor["translation"], sensor["rotation"]))
        return {
            "sample_token": sample_token,
            "scene_name": self.nusc.get("scene", sample["scene_token"])["name"],
            "timestamp": int(sample["timestamp"]),
            "image_paths": paths,
            "camera_intrinsics": np.asarray(intrinsics, dtype=np.float32),
            "camera_extrinsics": np.asarray(extrinsics, dtype=np.float32),
        }

    def planning_fields(self, scene_name: str) -> list[dict]:
        """Planning fields of every keyframe of a scene, in time order (see the module docstring)."""
        tokens = self.scene_keyframes(scene_name)
        samples = [self.nusc.get("sample", token) for token in tokens]
        lidar = [self.nusc.get("sample_data", sample["data"][LIDAR_CHANNEL]) for sample in samples]
        ego_poses = [self.nusc.get("ego_pose", record["ego_pose_token"]) for record in lidar]
        poses = np.stack([pose_matrix(pose["translation"], pose["rotation"]) for pose in ego_poses])  # (K, 4, 4)
        pose_times_us = np.array([pose["timestamp"] for pose in ego_poses], dtype=np.int64)
        steering_rad, steering_valid = self._steering(scene_name, [sample["timestamp"] for sample in samples])
        index_of = {token: k for k, token in enumerate(tokens)}
        records = []
        for k in range(len(tokens)):
            status, status_valid = np.zeros(len(EGO_STATUS_FEATURES)), np.zeros(len(EGO_STATUS_FEATURES), bool)
            status[:_STEERING_INDEX], status_valid[:_STEERING_INDEX] = ego_kinematics(
                poses[max(0, k - 2) : k + 1], pose_times_us[max(0, k - 2) : k + 1]
            )
            status[_STEERING_INDEX], status_valid[_STEERING_INDEX] = steering_rad[k], steering_valid[k]
            trajectory, trajectory_mask = _waypoints(poses, k, range(k + 1, k + 1 + NUM_WAYPOINTS))
            past, past_mask = _waypoints(poses, k, range(k - NUM_PAST_WAYPOINTS, k))
            speed_mps = float(np.hypot(status[0], status[1])) if status_valid[0] else None
            meta_action = (
                meta_action_from_trajectory(trajectory, current_speed_mps=speed_mps, mask=trajectory_mask).to_text()
                if trajectory_mask.any()
                else ""
            )
            boxes, categories = self._agent_boxes(samples[k], k, index_of, poses[k])
            records.append(
                {
                    "ego_status": status.astype(np.float32),
                    "ego_status_valid": status_valid,
                    "trajectory": trajectory,
                    "trajectory_mask": trajectory_mask,
                    "past_trajectory": past,
                    "past_trajectory_mask": past_mask,
                    "meta_action": meta_action,
                    "agent_boxes": boxes,
                    "agent_categories": categories,
                }
            )
        return records

    def _agent_boxes(
        self, sample: dict, k: int, index_of: dict[str, int], frame_pose: np.ndarray
    ) -> tuple[list[np.ndarray], list[list[str]]]:
        """Boxes (N_t, 7) float32 and detection names at t = 0..6 of the instances annotated at keyframe k."""
        steps: list[list[dict]] = [[] for _ in range(NUM_BOX_STEPS)]
        names: list[list[str]] = [[] for _ in range(NUM_BOX_STEPS)]
        for token in sample["anns"]:
            annotation = self.nusc.get("sample_annotation", token)
            name = category_to_detection_name(annotation["category_name"])
            if name is None:
                continue
            while True:
                t = index_of[annotation["sample_token"]] - k
                if t >= NUM_BOX_STEPS:
                    break
                steps[t].append(annotation)
                names[t].append(name)
                if not annotation["next"]:
                    break
                annotation = self.nusc.get("sample_annotation", annotation["next"])
        boxes = [
            boxes_in_frame(
                [a["translation"] for a in step], [a["size"] for a in step], [a["rotation"] for a in step], frame_pose
            ).astype(np.float32)
            for step in steps
        ]
        return boxes, names

    def _steering(self, scene_name: str, timestamps_us: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Steering-wheel angle (rad) at each keyframe from CAN `vehicle_monitor` (latest message at or before it)."""
        angles_rad = np.zeros(len(timestamps_us))
        valid = np.zeros(len(timestamps_us), dtype=bool)
        if not self._has_can_bus(scene_name):
            return angles_rad, valid
        messages = self.can_bus.get_messages(scene_name, "vehicle_monitor", print_warnings=False)
        if not messages:
            return angles_rad, valid
        utimes = np.array([message["utime"] for message in messages], dtype=np.int64)
        order = np.argsort(utimes, kind="stable")
        latest = np.searchsorted(utimes[order], np.asarray(timestamps_us, dtype=np.int64), side="right") - 1
        valid = latest >= 0
        steering_deg = np.array([messages[i]["steering"] for i in order], dtype=np.float64)
        angles_rad[valid] = np.deg2rad(steering_deg[latest[valid]])
        return angles_rad, valid

    def _has_can_bus(self, scene_name: str) -> bool:
        """Whether the CAN bus expansion holds `vehicle_monitor` messages for the scene."""
        return (
            self.can_bus is not None
            and _CAN_BUS_SCENE_NAME.match(scene_name) is not None
            and int(scene_name[-4:]) not in self.can_bus.can_blacklist
            and (Path(self.can_bus.can_dir) / f"{scene_name}_vehicle_monitor.json").is_file()
        )


def _waypoints(poses: np.ndarray, k: int, indices: range) -> tuple[np.ndarray, np.ndarray]:
    """xy of the keyframe poses at `indices` in the ego frame of keyframe k -> (len, 2) float32 and (len,) mask.

    Indices outside the scene are masked (False) and left at 0.
    """
    indices = np.asarray(indices)
    mask = (indices >= 0) & (indices < len(poses))
    points = np.zeros((len(indices), 2), dtype=np.float32)
    points[mask] = positions_in_frame(poses[indices[mask]], poses[k])
    return points, mask
