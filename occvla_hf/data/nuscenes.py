"""Keyframe records of a nuScenes dataroot, read through the nuscenes-devkit.

One record per keyframe (`sample`). Camera fields come from the six keyframe camera `sample_data` and their
`calibrated_sensor`; planning fields from the LIDAR_TOP keyframe ego poses of the scene and its `sample_annotation`s:

* `trajectory` (6, 2): ego positions at the next 6 keyframes in the ego frame of the current one (x forward, y left,
  metres), as UniAD/VAD; `trajectory_mask` False past the scene end (values 0). nuScenes keyframes are nominally
  0.5 s apart but really 0.40-0.60 s (the 6-step horizon spans 2.9-3.1 s); like the published planners, waypoints
  are indexed by keyframe, not resampled in time.
* `past_trajectory` (4, 2): ego positions at the previous 4 keyframes, oldest first (nominally -2.0, -1.5, -1.0,
  -0.5 s), same frame; `past_trajectory_mask` False before the scene start.
* `ego_status` (6,) in `EGO_STATUS_FEATURES` order: vx, vy (m/s), ax, ay (m/s^2), yaw_rate (rad/s) from the keyframe
  poses by causal backward differences (see `geometry.ego_kinematics`; invalid on the first one or two keyframes of a
  scene), and steering: the `steering` wheel angle of the CAN bus expansion's last `vehicle_monitor` message at or
  before the keyframe, degrees converted to rad (sign as recorded), when the expansion holds the scene; otherwise 0
  and invalid. `ego_status_valid` (6,) bool flags each entry. Kinematics come from the poses even when the CAN bus
  is present, so that scenes with and without it (21 nuScenes scenes have none) share one definition.
* `meta_action`: `"<speed>, <path>"` from `meta_action_from_trajectory` on the valid waypoints, with the measured
  speed as the current speed when valid; `""` when no future waypoint exists (the last keyframe of a scene).
* `reasoning`: `occvla_hf.reasoning.generate_reasoning` of the record, with the traffic light the ego faces where the
  dataroot records one (the sim's `<version>/traffic_light.json`, see `TRAFFIC_LIGHT_TABLE`; nuScenes has no light
  state, so its texts never mention a light).
* `agent_boxes` (7 lists, t = 0..6): every `sample_annotation` of the keyframe t steps ahead (agents that appear
  after the current keyframe included; empty past the scene end), each (N_t, 7) in `BOX_FIELDS` order in the ego
  frame of the current keyframe; `agent_categories` their full nuScenes category names (`vehicle.emergency.police`,
  `movable_object.debris`, ...) and `agent_instances` their instance tokens. Nothing is filtered: each planning
  protocol selects its own classes and agents (`occvla_hf.evaluation.planning.protocol_obstacles`).

Camera fields: `camera_extrinsics` is the calibrated camera -> ego transform (ego at the camera's own timestamp);
`camera_to_keyframe_ego` maps the camera into the ego frame of the LIDAR_TOP keyframe, through the ego poses of
both sample_data (cameras fire 1-48 ms before the lidar sweep, in which the ego moves up to 0.4 m). Boxes,
trajectories and occupancy are in the keyframe ego frame, so projections between cameras and the BEV use
`camera_to_keyframe_ego`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from nuscenes.can_bus.can_bus_api import NuScenesCanBus
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.splits import create_splits_scenes

from occvla_hf.constants import (
    CAMERA_NAMES,
    EGO_STATUS_FEATURES,
    LIDAR_CHANNEL,
    NUM_BOX_STEPS,
    NUM_PAST_WAYPOINTS,
    NUM_WAYPOINTS,
    NUSCENES_VERSION_SPLITS,
    TRAFFIC_LIGHT_TABLE,
)
from occvla_hf.data.geometry import (
    boxes_in_frame,
    ego_kinematics,
    pose_matrix,
    positions_in_frame,
    sensor_to_keyframe_ego,
)
from occvla_hf.meta_action import meta_action_from_trajectory
from occvla_hf.reasoning import TrafficLight, generate_reasoning

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


def find_can_bus(dataroot: Path, can_bus: str | os.PathLike | None) -> Path | None:
    """The CAN bus expansion folder (the one holding `scene-XXXX_*.json`), or None when none is found.

    `can_bus` given: that folder, FileNotFoundError naming it if it is missing (ValueError unless it is named
    `can_bus`, as the expansion extracts and as the devkit's `NuScenesCanBus` requires). Otherwise
    `<dataroot>/can_bus`, then `can_bus/` beside the dataroot (the devkit's tutorials extract it into the nuScenes
    folder; many setups keep it beside it, `data/can_bus` next to `data/nuscenes`).
    """
    if can_bus is not None:
        folder = Path(can_bus)
        if not folder.is_dir():
            raise FileNotFoundError(f"can_bus: {str(folder)!r} is not a directory (the nuScenes CAN bus expansion)")
        if folder.resolve().name != "can_bus":
            raise ValueError(f"can_bus: expected the expansion's folder named 'can_bus', got {str(folder)!r}")
        return folder.resolve()
    for folder in (dataroot / "can_bus", dataroot.parent / "can_bus"):
        if folder.is_dir():
            return folder.resolve()
    return None


class NuScenesReader:
    """Reads the keyframes of one nuScenes version (real or generated) through the devkit.

    Args:
        dataroot: folder holding `<version>/*.json` and `samples/`.
        version: e.g. `"v1.0-mini"`, `"v1.0-trainval"`.
        can_bus: the CAN bus expansion folder; None looks in `<dataroot>/can_bus`, then beside the dataroot.
        require_steering: fail (FileNotFoundError naming the folders searched) when no expansion is found, instead
            of marking steering invalid on every keyframe.
    """

    def __init__(
        self,
        dataroot: str | os.PathLike,
        version: str,
        can_bus: str | os.PathLike | None = None,
        require_steering: bool = False,
    ) -> None:
        self.dataroot = check_dataroot(dataroot, version).resolve()
        self.version = version
        self.nusc = NuScenes(version=version, dataroot=str(self.dataroot), verbose=False)
        self.can_bus_dir = find_can_bus(self.dataroot, can_bus)
        if self.can_bus_dir is None and require_steering:
            raise FileNotFoundError(
                f"can_bus: steering was asked for but no CAN bus expansion was found in "
                f"{str(self.dataroot / 'can_bus')!r} or {str(self.dataroot.parent / 'can_bus')!r}; pass its folder"
            )
        # The devkit reads `<its dataroot>/can_bus`.
        self.can_bus = NuScenesCanBus(dataroot=str(self.can_bus_dir.parent)) if self.can_bus_dir else None
        self._scenes = {scene["name"]: scene for scene in self.nusc.scene}
        self.traffic_lights = read_traffic_lights(self.dataroot / version)

    def split_scenes(self, splits: Sequence[str] | None = None) -> dict[str, list[str]]:
        """Scene names of the dataroot in each official split (default: the version's splits), in split order.

        Splits without any scene in the dataroot are left out; ValueError if a split name is unknown or no scene
        of the dataroot is in any requested split.
        """
        official = create_splits_scenes()
        splits = tuple(splits) if splits is not None else NUSCENES_VERSION_SPLITS.get(self.version, ())
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
        order), `camera_intrinsics` (6, 3, 3) float32, `camera_extrinsics` (6, 4, 4) float32 camera -> ego at the
        camera's time and `camera_to_keyframe_ego` (6, 4, 4) float32 camera -> ego at the LIDAR_TOP keyframe.
        """
        sample = self.nusc.get("sample", sample_token)
        missing = [name for name in CAMERA_NAMES if name not in sample["data"]]
        if missing:
            raise ValueError(f"sample {sample_token}: no keyframe sample_data for cameras {missing}")
        keyframe_pose = self._ego_pose(sample["data"][LIDAR_CHANNEL])
        paths, intrinsics, extrinsics, to_keyframe = [], [], [], []
        for name in CAMERA_NAMES:
            sample_data = self.nusc.get("sample_data", sample["data"][name])
            sensor = self.nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
            paths.append(str(self._contained_path(sample_data)))
            intrinsics.append(sensor["camera_intrinsic"])
            extrinsics.append(pose_matrix(sensor["translation"], sensor["rotation"]))
            to_keyframe.append(
                sensor_to_keyframe_ego(extrinsics[-1], self._ego_pose(sample["data"][name]), keyframe_pose)
            )
        return {
            "sample_token": sample_token,
            "scene_name": self.nusc.get("scene", sample["scene_token"])["name"],
            "timestamp": int(sample["timestamp"]),
            "image_paths": paths,
            "camera_intrinsics": np.asarray(intrinsics, dtype=np.float32),
            "camera_extrinsics": np.asarray(extrinsics, dtype=np.float32),
            "camera_to_keyframe_ego": np.asarray(to_keyframe, dtype=np.float32),
        }

    def _contained_path(self, sample_data: dict) -> Path:
        """Absolute path of a sample_data file; ValueError for a filename that is absolute or has a `..` part, so
        that nothing outside the dataroot is ever read (or embedded and uploaded in `image_mode="bytes"`)."""
        filename = sample_data["filename"]
        relative = PurePosixPath(filename)
        if not filename or relative.is_absolute() or PureWindowsPath(filename).is_absolute() or ".." in relative.parts:
            raise ValueError(
                f"sample_data {sample_data['token']}: filename: expected a path inside the dataroot, got {filename!r}"
            )
        return self.dataroot / relative

    def _ego_pose(self, sample_data_token: str) -> np.ndarray:
        """(4, 4) ego -> global pose at a sample_data's timestamp."""
        record = self.nusc.get("sample_data", sample_data_token)
        pose = self.nusc.get("ego_pose", record["ego_pose_token"])
        return pose_matrix(pose["translation"], pose["rotation"])

    def planning_fields(self, scene_name: str) -> list[dict]:
        """Planning fields of every keyframe of a scene, in time order (see the module docstring)."""
        tokens = self.scene_keyframes(scene_name)
        samples = [self.nusc.get("sample", token) for token in tokens]
        lidar = [self.nusc.get("sample_data", sample["data"][LIDAR_CHANNEL]) for sample in samples]
        ego_poses = [self.nusc.get("ego_pose", record["ego_pose_token"]) for record in lidar]
        poses = np.stack([pose_matrix(pose["translation"], pose["rotation"]) for pose in ego_poses])  # (K, 4, 4)
        pose_times_us = np.array([pose["timestamp"] for pose in ego_poses], dtype=np.int64)
        steering_rad, steering_valid = self._steering(scene_name, [sample["timestamp"] for sample in samples])
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
            boxes, categories, instances = self._agent_boxes(samples[k : k + NUM_BOX_STEPS], poses[k])
            record = {
                "ego_status": status.astype(np.float32),
                "ego_status_valid": status_valid,
                "trajectory": trajectory,
                "trajectory_mask": trajectory_mask,
                "past_trajectory": past,
                "past_trajectory_mask": past_mask,
                "meta_action": meta_action,
                "agent_boxes": boxes,
                "agent_categories": categories,
                "agent_instances": instances,
            }
            record["reasoning"] = generate_reasoning(record, self.traffic_lights.get(tokens[k]))
            records.append(record)
        return records

    def _agent_boxes(
        self, samples: Sequence[dict], frame_pose: np.ndarray
    ) -> tuple[list[np.ndarray], list[list[str]], list[list[str]]]:
        """Boxes (N_t, 7) float32, full category names and instance tokens of every annotation of `samples[t]`
        (the current keyframe and the ones after it), in the ego frame `frame_pose`; empty steps past the scene end."""
        boxes, categories, instances = [], [], []
        for t in range(NUM_BOX_STEPS):
            annotations = (
                [self.nusc.get("sample_annotation", a) for a in samples[t]["anns"]] if t < len(samples) else []
            )
            boxes.append(
                boxes_in_frame(
                    [a["translation"] for a in annotations],
                    [a["size"] for a in annotations],
                    [a["rotation"] for a in annotations],
                    frame_pose,
                ).astype(np.float32)
            )
            categories.append([a["category_name"] for a in annotations])
            instances.append([a["instance_token"] for a in annotations])
        return boxes, categories, instances

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


def read_traffic_lights(table_dir: Path) -> dict[str, TrafficLight]:
    """The light the ego faces at each keyframe that has one, by sample token, from `<table_dir>/traffic_light.json`
    (`TRAFFIC_LIGHT_TABLE`); empty when the file is absent (nuScenes). ValueError naming the file for bad records."""
    path = table_dir / f"{TRAFFIC_LIGHT_TABLE}.json"
    if not path.is_file():
        return {}
    lights = {}
    for index, record in enumerate(json.loads(path.read_text())):
        try:
            lights[record["sample_token"]] = TrafficLight(record["state"], record["stop_line_m"])
        except (KeyError, TypeError, ValueError) as error:
            message = f"{path}: record {index}: expected sample_token, state and stop_line_m ({error})"
            raise ValueError(message) from error
    return lights


def _waypoints(poses: np.ndarray, k: int, indices: range) -> tuple[np.ndarray, np.ndarray]:
    """xy of the keyframe poses at `indices` in the ego frame of keyframe k -> (len, 2) float32 and (len,) mask.

    Indices outside the scene are masked (False) and left at 0.
    """
    indices = np.asarray(indices)
    mask = (indices >= 0) & (indices < len(poses))
    points = np.zeros((len(indices), 2), dtype=np.float32)
    points[mask] = positions_in_frame(poses[indices[mask]], poses[k])
    return points, mask
