"""The devkit reader against the devkit itself: keyframe counts, trajectories, ego status, boxes, CAN steering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.utils.splits import create_splits_scenes
from pyquaternion import Quaternion

from occvla_hf.constants import (
    CAMERA_NAMES,
    NUM_PAST_WAYPOINTS,
    NUM_WAYPOINTS,
    NUSCENES_VERSION_SPLITS,
    TRAFFIC_LIGHT_TABLE,
)
from occvla_hf.data.nuscenes import NuScenesReader, read_traffic_lights
from occvla_hf.meta_action import meta_action_from_trajectory
from occvla_hf.reasoning import generate_reasoning

from .conftest import VERSION, linked_copy


def _ego_pose(reader: NuScenesReader, sample_token: str) -> dict:
    sample = reader.nusc.get("sample", sample_token)
    return reader.nusc.get("ego_pose", reader.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])


def _to_ego(pose: dict, point: list[float]) -> np.ndarray:
    """A global point in the ego frame of `pose`, by hand with pyquaternion."""
    return Quaternion(pose["rotation"]).inverse.rotate(np.asarray(point) - np.asarray(pose["translation"]))


def _scene_tokens(reader: NuScenesReader, scene_name: str) -> list[str]:
    scene = next(scene for scene in reader.nusc.scene if scene["name"] == scene_name)
    tokens = [scene["first_sample_token"]]
    while reader.nusc.get("sample", tokens[-1])["next"]:
        tokens.append(reader.nusc.get("sample", tokens[-1])["next"])
    return tokens


def test_split_keyframes_equal_devkit_keyframe_counts(reader: NuScenesReader):
    official = create_splits_scenes()
    split_scenes = reader.split_scenes()
    assert set(split_scenes) <= set(NUSCENES_VERSION_SPLITS[VERSION])
    total = 0
    for split, scene_names in split_scenes.items():
        devkit_count = sum(
            1
            for sample in reader.nusc.sample
            if reader.nusc.get("scene", sample["scene_token"])["name"] in official[split]
        )
        assert sum(len(reader.scene_keyframes(name)) for name in scene_names) == devkit_count
        total += devkit_count
    assert total == len(reader.nusc.sample)


def test_trajectory_equals_devkit_ego_poses_transformed_by_hand(reader: NuScenesReader):
    scene_name = reader.nusc.scene[0]["name"]
    tokens = _scene_tokens(reader, scene_name)
    records = reader.planning_fields(scene_name)
    assert len(records) == len(tokens)
    for k in (0, len(tokens) // 2, len(tokens) - 1):
        current = _ego_pose(reader, tokens[k])
        future = tokens[k + 1 : k + 1 + NUM_WAYPOINTS]
        expected = [_to_ego(current, _ego_pose(reader, token)["translation"])[:2] for token in future]
        record = records[k]
        assert record["trajectory_mask"].tolist() == [i < len(future) for i in range(NUM_WAYPOINTS)]
        np.testing.assert_allclose(record["trajectory"][: len(future)], np.reshape(expected, (-1, 2)), atol=1e-4)
        assert not record["trajectory"][len(future) :].any()
        past = tokens[max(0, k - NUM_PAST_WAYPOINTS) : k]
        expected_past = [_to_ego(current, _ego_pose(reader, token)["translation"])[:2] for token in past]
        assert record["past_trajectory_mask"].tolist() == [i >= NUM_PAST_WAYPOINTS - len(past) for i in range(4)]
        np.testing.assert_allclose(
            record["past_trajectory"][NUM_PAST_WAYPOINTS - len(past) :], np.reshape(expected_past, (-1, 2)), atol=1e-4
        )


def test_ego_status_is_backward_differences_of_devkit_poses(reader: NuScenesReader):
    scene_name = reader.nusc.scene[0]["name"]
    tokens = _scene_tokens(reader, scene_name)
    records = reader.planning_fields(scene_name)
    poses = [_ego_pose(reader, token) for token in tokens[:3]]
    times_s = [pose["timestamp"] * 1e-6 for pose in poses]
    positions = [np.asarray(pose["translation"]) for pose in poses]
    v1 = (positions[1] - positions[0]) / (times_s[1] - times_s[0])
    v2 = (positions[2] - positions[1]) / (times_s[2] - times_s[1])
    accel = (v2 - v1) / ((times_s[2] - times_s[0]) / 2)
    rotation = Quaternion(poses[2]["rotation"]).inverse
    yaws = [quaternion_yaw(Quaternion(pose["rotation"])) for pose in poses[1:]]
    yaw_rate = (yaws[1] - yaws[0]) / (times_s[2] - times_s[1])
    expected = [*rotation.rotate(v2)[:2], *rotation.rotate(accel)[:2], yaw_rate]
    np.testing.assert_allclose(records[2]["ego_status"][:5], expected, rtol=1e-4, atol=1e-4)
    assert records[2]["ego_status_valid"][:5].all()
    assert records[0]["ego_status_valid"].tolist()[:5] == [False] * 5
    assert records[1]["ego_status_valid"].tolist()[:5] == [True, True, False, False, True]


def test_meta_action_comes_from_the_codec_and_is_empty_without_future(reader: NuScenesReader):
    records = reader.planning_fields(reader.nusc.scene[0]["name"])
    record = records[1]
    speed = float(np.hypot(*record["ego_status"][:2]))
    expected = meta_action_from_trajectory(
        record["trajectory"], current_speed_mps=speed, mask=record["trajectory_mask"]
    ).to_text()
    assert record["meta_action"] == expected
    assert records[-1]["meta_action"] == "" and not records[-1]["trajectory_mask"].any()


def test_agent_columns_hold_every_annotation_of_each_keyframe_in_the_current_ego_frame(reader: NuScenesReader):
    scene_name = reader.nusc.scene[0]["name"]
    tokens = _scene_tokens(reader, scene_name)
    record = reader.planning_fields(scene_name)[0]
    current = _ego_pose(reader, tokens[0])
    for t in range(NUM_WAYPOINTS + 1):
        expected = []
        for token in reader.nusc.get("sample", tokens[t])["anns"] if t < len(tokens) else []:
            annotation = reader.nusc.get("sample_annotation", token)
            box = reader.nusc.get_box(token)
            box.translate(-np.asarray(current["translation"]))
            box.rotate(Quaternion(current["rotation"]).inverse)
            row = (*box.center, box.wlh[1], box.wlh[0], box.wlh[2], quaternion_yaw(box.orientation))
            expected.append((row, annotation["category_name"], annotation["instance_token"]))
        assert record["agent_categories"][t] == [category for _, category, _ in expected]
        assert record["agent_instances"][t] == [instance for _, _, instance in expected]
        np.testing.assert_allclose(
            record["agent_boxes"][t], np.reshape([row for row, _, _ in expected], (-1, 7)), atol=1e-3
        )
    # The instances annotated now are the ones their `next` links follow into the future.
    followed = set(record["agent_instances"][0])
    for t in range(1, min(len(tokens), NUM_WAYPOINTS + 1)):
        linked = {
            reader.nusc.get("sample_annotation", a)["instance_token"]
            for a in reader.nusc.get("sample", tokens[t])["anns"]
            if reader.nusc.get("sample_annotation", a)["instance_token"] in followed
        }
        assert linked == followed & set(record["agent_instances"][t])
    assert any(record["agent_instances"][1:]), "the sim scene should have agents in the future"


def test_agent_columns_are_empty_past_the_scene_end(reader: NuScenesReader):
    last = reader.planning_fields(reader.nusc.scene[0]["name"])[-1]
    assert all(len(step) == 0 for step in last["agent_boxes"][1:])
    assert last["agent_categories"][1:] == [[]] * NUM_WAYPOINTS == last["agent_instances"][1:]


def test_camera_fields_follow_camera_order_with_devkit_calibration(reader: NuScenesReader):
    token = reader.nusc.sample[0]["token"]
    fields = reader.camera_fields(token)
    sample = reader.nusc.get("sample", token)
    for index, camera in enumerate(CAMERA_NAMES):
        sample_data = reader.nusc.get("sample_data", sample["data"][camera])
        sensor = reader.nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
        assert fields["image_paths"][index] == reader.nusc.get_sample_data_path(sample_data["token"])
        np.testing.assert_allclose(fields["camera_intrinsics"][index], sensor["camera_intrinsic"], rtol=1e-6)
        camera_origin_in_ego = fields["camera_extrinsics"][index] @ [0, 0, 0, 1]
        np.testing.assert_allclose(camera_origin_in_ego[:3], sensor["translation"], rtol=1e-6)
        x_axis = Quaternion(sensor["rotation"]).rotate([1.0, 0.0, 0.0])
        np.testing.assert_allclose(fields["camera_extrinsics"][index][:3, 0], x_axis, atol=1e-6)
    assert fields["timestamp"] == sample["timestamp"]


def test_steering_comes_from_can_bus_vehicle_monitor_when_present(sim_root: Path, tmp_path: Path):
    root = linked_copy(sim_root, tmp_path / "root", skip={"can_bus"})
    reader = NuScenesReader(root, VERSION)
    assert reader.can_bus is None
    scene_name = reader.nusc.scene[0]["name"]
    timestamps = [reader.nusc.get("sample", token)["timestamp"] for token in _scene_tokens(reader, scene_name)]
    # Messages 0.1 s before each keyframe except the first, steering 10 deg per keyframe; one later decoy.
    messages = [{"utime": t - 100_000, "steering": 10.0 * k} for k, t in enumerate(timestamps) if k > 0]
    messages.append({"utime": timestamps[1] + 50_000, "steering": 99.0})
    (root / "can_bus").mkdir()
    (root / "can_bus" / f"{scene_name}_vehicle_monitor.json").write_text(json.dumps(messages))
    reader = NuScenesReader(root, VERSION)
    records = reader.planning_fields(scene_name)
    assert not records[0]["ego_status_valid"][5] and records[0]["ego_status"][5] == 0
    assert records[1]["ego_status_valid"][5]
    assert records[1]["ego_status"][5] == pytest.approx(np.deg2rad(10.0))
    assert records[2]["ego_status"][5] == pytest.approx(np.deg2rad(20.0))
    other_scenes = [scene["name"] for scene in reader.nusc.scene[1:]]
    for name in other_scenes:
        assert not any(record["ego_status_valid"][5] for record in reader.planning_fields(name))


def test_missing_dataroot_and_version_give_clear_errors(sim_root: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="dataroot: .* is not a directory"):
        NuScenesReader(tmp_path / "absent", VERSION)
    with pytest.raises(
        FileNotFoundError, match=r"version: no nuScenes tables .*versions found in the dataroot: \['v1.0-mini'\]"
    ):
        NuScenesReader(sim_root, "v1.0-trainval")


def test_unknown_split_is_rejected(reader: NuScenesReader):
    with pytest.raises(ValueError, match="splits: expected names among"):
        reader.split_scenes(["training"])
    with pytest.raises(ValueError, match="none of the"):
        reader.split_scenes(["test"])


def test_camera_to_keyframe_ego_chains_both_ego_poses(reader: NuScenesReader):
    """camera -> ego (camera time) -> global -> ego (LIDAR_TOP time), as the devkit's point-cloud-to-image chain in
    `NuScenesExplorer.map_pointcloud_to_image`, run backwards."""
    sample = reader.nusc.sample[0]
    fields = reader.camera_fields(sample["token"])
    keyframe = reader.nusc.get(
        "ego_pose", reader.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"]
    )
    for index, camera in enumerate(CAMERA_NAMES):
        sample_data = reader.nusc.get("sample_data", sample["data"][camera])
        sensor = reader.nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
        pose = reader.nusc.get("ego_pose", sample_data["ego_pose_token"])
        point = np.array([0.3, -0.2, 5.0])  # a point in front of the camera
        point = Quaternion(sensor["rotation"]).rotate(point) + sensor["translation"]
        point = Quaternion(pose["rotation"]).rotate(point) + pose["translation"]
        point = Quaternion(keyframe["rotation"]).inverse.rotate(point - np.asarray(keyframe["translation"]))
        np.testing.assert_allclose(
            fields["camera_to_keyframe_ego"][index] @ [0.3, -0.2, 5.0, 1.0], [*point, 1], atol=1e-4
        )


def test_can_bus_is_found_beside_the_dataroot_or_named(sim_root: Path, tmp_path: Path):
    root = linked_copy(sim_root, tmp_path / "data" / "nuscenes", skip={"can_bus"})
    assert NuScenesReader(root, VERSION).can_bus is None
    (tmp_path / "data" / "can_bus").mkdir()
    assert NuScenesReader(root, VERSION).can_bus_dir == (tmp_path / "data" / "can_bus").resolve()
    with pytest.raises(FileNotFoundError, match="can_bus: .*absent.* is not a directory"):
        NuScenesReader(root, VERSION, can_bus=tmp_path / "absent")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match="can_bus: expected the expansion's folder named 'can_bus'"):
        NuScenesReader(root, VERSION, can_bus=tmp_path / "elsewhere")


def test_steering_asked_for_without_can_bus_names_the_folders(sim_root: Path, tmp_path: Path):
    root = linked_copy(sim_root, tmp_path / "root", skip={"can_bus"})
    with pytest.raises(FileNotFoundError, match=r"can_bus: steering was asked for .*root/can_bus.*can_bus"):
        NuScenesReader(root, VERSION, require_steering=True)


@pytest.mark.parametrize(
    "filename",
    ["../outside.jpg", "samples/CAM_FRONT/../../../outside.jpg", "/etc/hostname", "C:\\images\\a.jpg", ""],
    ids=["parent", "nested-parent", "absolute", "windows-absolute", "empty"],
)
def test_camera_fields_refuse_filenames_outside_the_dataroot(
    reader: NuScenesReader, sim_root: Path, tmp_path: Path, filename: str
):
    root = linked_copy(sim_root, tmp_path / "root", skip={VERSION})
    tables = linked_copy(sim_root / VERSION, root / VERSION, skip={"sample_data.json"})
    records = json.loads((sim_root / VERSION / "sample_data.json").read_text())
    token = reader.scene_keyframes(next(iter(reader.split_scenes(None).values()))[0])[0]
    camera_token = reader.nusc.get("sample", token)["data"][CAMERA_NAMES[2]]
    for record in records:
        if record["token"] == camera_token:
            record["filename"] = filename
    (tables / "sample_data.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match=f"sample_data {camera_token}: filename: expected a path inside the dataroot"):
        NuScenesReader(root, VERSION).camera_fields(token)


def test_reasoning_is_generated_from_the_record_and_the_sim_traffic_light(reader: NuScenesReader, sim_root: Path):
    table = json.loads((sim_root / VERSION / f"{TRAFFIC_LIGHT_TABLE}.json").read_text())
    assert table and set(reader.traffic_lights) == {record["sample_token"] for record in table}
    lit = 0
    for scene in reader.nusc.scene:
        tokens = reader.scene_keyframes(scene["name"])
        for token, record in zip(tokens, reader.planning_fields(scene["name"]), strict=True):
            light = reader.traffic_lights.get(token)
            assert record["reasoning"] == generate_reasoning(record, light)
            assert (" light " in record["reasoning"]) == (light is not None)
            lit += light is not None
    assert lit == len(table)


def test_a_dataroot_without_traffic_lights_reads_no_light(sim_root: Path, tmp_path: Path):
    """nuScenes has no light state: without the sim's table every text is generated from the record alone."""
    root = linked_copy(sim_root, tmp_path / "root", skip={VERSION})
    linked_copy(sim_root / VERSION, root / VERSION, skip={f"{TRAFFIC_LIGHT_TABLE}.json"})
    reader = NuScenesReader(root, VERSION)
    assert reader.traffic_lights == {}
    for scene in reader.nusc.scene:
        for record in reader.planning_fields(scene["name"]):
            assert record["reasoning"] == generate_reasoning(record) and " light " not in record["reasoning"]


@pytest.mark.parametrize(
    "record",
    [{"sample_token": "a", "state": "blue", "stop_line_m": 3.0}, {"sample_token": "a", "state": "red"}],
    ids=["bad-state", "missing-distance"],
)
def test_bad_traffic_light_records_name_the_file(tmp_path: Path, record: dict):
    (tmp_path / f"{TRAFFIC_LIGHT_TABLE}.json").write_text(json.dumps([record]))
    with pytest.raises(ValueError, match=rf"{TRAFFIC_LIGHT_TABLE}\.json: record 0"):
        read_traffic_lights(tmp_path)
