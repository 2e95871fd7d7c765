"""The generated dataroot through the real nuscenes-devkit: loading, geometry, motion, labels, QA, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import Box, LidarPointCloud
from nuscenes.utils.geometry_utils import BoxVisibility, points_in_box, view_points
from nuscenes.utils.splits import create_splits_scenes
from PIL import Image
from pyquaternion import Quaternion

from occvla_hf.constants import (
    CAMERA_NAMES,
    OCC_CLASS_NAMES,
    OCC_GRID_SHAPE,
    PROJECT_LICENSE,
    QA_QUESTION_TYPES,
    SIM_PROVENANCE_FILE,
    TRAFFIC_LIGHT_STATES,
    TRAFFIC_LIGHT_TABLE,
)
from occvla_hf.sim import generate_dataset
from occvla_hf.sim.categories import QA_CATEGORY_WORDS, QA_STATUS_WORDS, occ_class_of, qa_word_of
from occvla_hf.sim.generate import scene_placement
from occvla_hf.sim.occupancy import voxel_centers
from occvla_hf.sim.qa import QA_MIN_LIDAR_POINTS, QA_RANGE_M
from occvla_hf.sim.render import CLASS_COLORS
from occvla_hf.version import __version__

from .conftest import CONFIG, NUM_SCENES, SEED, VERSION

OBJECT_CLASSES = OCC_CLASS_NAMES[OCC_CLASS_NAMES.index("barrier") : OCC_CLASS_NAMES.index("truck") + 1]


def ego_pose(nusc: NuScenes, sample: dict) -> dict:
    return nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])


def to_ego(box: Box, pose: dict) -> Box:
    box = box.copy()
    box.translate(-np.array(pose["translation"]))
    box.rotate(Quaternion(pose["rotation"]).inverse)
    return box


def test_devkit_loads_every_table_and_file(nusc, generated, dataroot):
    assert len(nusc.scene) == NUM_SCENES == generated.num_scenes
    assert len(nusc.sample) == NUM_SCENES * CONFIG.num_keyframes == generated.num_samples
    assert len(nusc.sample_annotation) == generated.num_annotations > 0
    splits = create_splits_scenes()
    assert {s["name"] for s in nusc.scene} <= set(splits["mini_train"] + splits["mini_val"])
    width, height = CONFIG.image_size_px
    for sample in nusc.sample:
        assert set(sample["data"]) == {*CAMERA_NAMES, "LIDAR_TOP"}
        for channel in CAMERA_NAMES:
            sd = nusc.get("sample_data", sample["data"][channel])
            with Image.open(nusc.get_sample_data_path(sd["token"])) as image:
                assert image.size == (width, height) == (sd["width"], sd["height"])
        scene_name = nusc.get("scene", sample["scene_token"])["name"]
        assert (dataroot / "gts" / scene_name / sample["token"] / "labels.npz").is_file()
    for scene in nusc.scene:  # linked lists in time order
        tokens, token = [], scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
        assert len(tokens) == scene["nbr_samples"] and tokens[-1] == scene["last_sample_token"]
    for instance in nusc.instance:
        count, token = 0, instance["first_annotation_token"]
        while token:
            count, token = count + 1, nusc.get("sample_annotation", token)["next"]
        assert count == instance["nbr_annotations"]


def test_intrinsics_scale_with_the_images(nusc):
    for record in nusc.calibrated_sensor:
        if record["camera_intrinsic"]:
            k = np.array(record["camera_intrinsic"])
            assert k[0, 2] == pytest.approx(800 * CONFIG.scale) and k[1, 2] == pytest.approx(450 * CONFIG.scale)


def test_devkit_boxes_project_where_the_renderer_drew_them(nusc):
    """At the projected centre of every fully visible, large enough box, the JPEG pixel has its class's hue."""
    palette = {c: np.array(CLASS_COLORS[c], float) for c in OBJECT_CLASSES}
    chroma = {c: v / v.sum() for c, v in palette.items()}
    checked = matched = 0
    for sample in nusc.sample:
        for channel in CAMERA_NAMES:
            path, boxes, intrinsic = nusc.get_sample_data(sample["data"][channel], box_vis_level=BoxVisibility.ALL)
            image = np.asarray(Image.open(path), dtype=float)
            for box in boxes:
                if nusc.get("sample_annotation", box.token)["visibility_token"] != "4":
                    continue
                corners = view_points(box.corners(), intrinsic, normalize=True)[:2]
                if min(np.ptp(corners[0]), np.ptp(corners[1])) < 8:
                    continue
                u, v = np.round(view_points(box.center[:, None], intrinsic, normalize=True)[:2, 0]).astype(int)
                pixel = image[v, u]
                cls = OCC_CLASS_NAMES[occ_class_of(box.name)]
                nearest = min(chroma, key=lambda c: np.abs(pixel / pixel.sum() - chroma[c]).sum())
                checked += 1
                matched += nearest == cls
    assert checked >= 20
    assert matched >= 0.9 * checked


def test_annotation_velocities_match_the_simulated_motion(nusc, scenes):
    """The devkit's centred differences of annotation positions agree with the simulator's velocities."""
    errors = []
    for index, scene_record in enumerate(sorted(nusc.scene, key=lambda s: s["name"])):
        scene = scenes[index]
        frame, _ = scene_placement(SEED, index, scene)
        samples = [nusc.get("sample", scene_record["first_sample_token"])]
        while samples[-1]["next"]:
            samples.append(nusc.get("sample", samples[-1]["next"]))
        for k, sample in enumerate(samples):
            agents, world_boxes = scene.agent_boxes(k)
            global_xy = frame.point(world_boxes[:, :2])
            for token in sample["anns"]:
                ann = nusc.get("sample_annotation", token)
                if not ann["prev"] or not ann["next"]:
                    continue
                j = int(np.argmin(np.hypot(*(global_xy - ann["translation"][:2]).T)))
                assert np.hypot(*(global_xy[j] - ann["translation"][:2])) < 1e-6
                simulated = frame.point(scene.track.velocity[k, agents[j]]) - frame.point(np.zeros(2))
                errors.append(np.hypot(*(nusc.box_velocity(token)[:2] - simulated)))
    errors = np.array(errors)
    assert len(errors) > 100
    assert np.median(errors) < 0.05 and np.percentile(errors, 95) < 0.5


def test_ego_poses_move_with_the_simulated_ego_velocity(nusc, scenes):
    for index, scene_record in enumerate(sorted(nusc.scene, key=lambda s: s["name"])):
        frame, _ = scene_placement(SEED, index, scenes[index])
        samples = [nusc.get("sample", scene_record["first_sample_token"])]
        while samples[-1]["next"]:
            samples.append(nusc.get("sample", samples[-1]["next"]))
        poses = np.array([ego_pose(nusc, s)["translation"][:2] for s in samples])
        times = np.array([s["timestamp"] for s in samples]) * 1e-6
        from_poses = (poses[2:] - poses[:-2]) / (times[2:] - times[:-2])[:, None]
        simulated = frame.point(scenes[index].track.ego_velocity[1:-1]) - frame.point(np.zeros(2))
        assert np.abs(from_poses - simulated).max() < 0.5
        yaws = [Quaternion(ego_pose(nusc, s)["rotation"]).yaw_pitch_roll[0] for s in samples]
        assert np.allclose(np.cos(yaws), np.cos(frame.yaw(scenes[index].track.ego_yaw)), atol=1e-6)


def test_num_lidar_pts_counts_the_points_the_devkit_finds_in_the_box(nusc):
    diffs = []
    for sample in nusc.sample:
        sd_token = sample["data"]["LIDAR_TOP"]
        cloud = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_token))
        assert cloud.points.shape[1] > 1000
        _, boxes, _ = nusc.get_sample_data(sd_token)  # in the lidar frame
        for box in boxes:
            expected = nusc.get("sample_annotation", box.token)["num_lidar_pts"]
            found = int(points_in_box(box, cloud.points[:3], wlh_factor=1.001).sum())
            diffs.append(abs(found - expected))
    diffs = np.array(diffs)
    assert np.mean(diffs == 0) > 0.95 and diffs.max() <= 3


def test_occupancy_voxels_inside_a_box_carry_its_class(nusc, dataroot):
    centers = voxel_centers()
    checked = 0
    for sample in nusc.sample:
        scene_name = nusc.get("scene", sample["scene_token"])["name"]
        labels = np.load(dataroot / "gts" / scene_name / sample["token"] / "labels.npz")
        semantics = labels["semantics"].reshape(-1)
        assert labels["semantics"].shape == OCC_GRID_SHAPE
        assert labels["mask_camera"].any() and labels["mask_lidar"].any()
        pose = ego_pose(nusc, sample)
        boxes = [to_ego(nusc.get_box(t), pose) for t in sample["anns"]]
        near = [b for b in boxes if np.abs(b.center[:2]).max() < 42.0]
        inside = []
        for box in near:
            shrunk = Box(box.center, box.wlh - 0.04, box.orientation)  # stay clear of faces: float ties
            inside.append(points_in_box(shrunk, centers.T))
        claimed = np.sum(inside, axis=0) if inside else np.zeros(len(centers))
        for box, mask in zip(near, inside):
            own = mask & (claimed == 1)
            assert np.all(semantics[own] == occ_class_of(box.name))
            checked += int(own.sum())
    assert checked > 1000


def test_questions_follow_the_official_layout_and_match_the_annotations(nusc, dataroot):
    splits = create_splits_scenes()
    counted = 0
    for split in ("train", "val"):
        data = json.loads((dataroot / "nuscenes_qa" / f"NuScenes_{split}_questions.json").read_text())
        assert set(data) == {"info", "questions"}
        for q in data["questions"]:
            assert set(q) == {"split", "sample_token", "question", "answer", "num_hop", "template_type"}
            assert q["split"] == split and q["template_type"] in QA_QUESTION_TYPES and q["num_hop"] in (0, 1)
            sample = nusc.get("sample", q["sample_token"])
            assert nusc.get("scene", sample["scene_token"])["name"] in splits[f"mini_{split}"]
            objects = _qa_objects(nusc, sample)
            match = re.fullmatch(r"How many (\w+?)s are there\?", q["question"])
            if match and match.group(1) in {w for w, _ in objects}:
                assert q["answer"] == str(sum(w == match.group(1) for w, _ in objects))
                counted += 1
            match = re.fullmatch(r"What is the status of the ([a-z ]+)\?", q["question"])
            if match and match.group(1) in QA_CATEGORY_WORDS.values():  # H0 only
                statuses = [s for w, s in objects if w == match.group(1)]
                assert statuses == [q["answer"]]
                counted += 1
    assert counted >= 5


def _qa_objects(nusc: NuScenes, sample: dict) -> list[tuple[str, str | None]]:
    """(word, status) of the annotations nuScenes-QA questions are about."""
    pose = ego_pose(nusc, sample)
    out = []
    for token in sample["anns"]:
        ann = nusc.get("sample_annotation", token)
        word = qa_word_of(ann["category_name"])
        distance = np.hypot(*(np.array(ann["translation"][:2]) - pose["translation"][:2]))
        if word and distance <= QA_RANGE_M and ann["num_lidar_pts"] >= QA_MIN_LIDAR_POINTS:
            attributes = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
            out.append((word, QA_STATUS_WORDS[attributes[0]] if attributes else None))
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_output(dataroot, tmp_path):
    again = generate_dataset(
        tmp_path / "again",
        num_scenes=NUM_SCENES,
        seed=SEED,
        version=VERSION,
        config=CONFIG,
        num_workers=2,
        progress=False,
    )
    first, second = _digest(dataroot), _digest(again.dataroot)
    assert len(first) > 100 and first == second


def test_other_seed_gives_other_scenes(dataroot, tmp_path):
    other = generate_dataset(
        tmp_path / "other", num_scenes=1, seed=SEED + 1, version=VERSION, config=CONFIG, progress=False
    )
    table = json.loads((other.dataroot / VERSION / "ego_pose.json").read_text())
    mine = json.loads((dataroot / VERSION / "ego_pose.json").read_text())
    assert table[0]["translation"] != mine[0]["translation"]


def test_existing_output_is_kept_unless_overwrite(dataroot):
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(dataroot, num_scenes=1, seed=SEED, config=CONFIG, progress=False)


def test_world_state_boxes_equal_the_devkit_boxes_in_the_ego_frame(nusc, scenes):
    scene_record = sorted(nusc.scene, key=lambda s: s["name"])[1]
    keyframe = 3
    sample = nusc.get("sample", scene_record["first_sample_token"])
    for _ in range(keyframe):
        sample = nusc.get("sample", sample["next"])
    _, expected = scenes[1].agent_boxes_ego(keyframe)
    pose = ego_pose(nusc, sample)
    got = np.array(
        [
            [*b.center, b.wlh[1], b.wlh[0], b.wlh[2], b.orientation.yaw_pitch_roll[0]]
            for b in (to_ego(nusc.get_box(t), pose) for t in sample["anns"])
        ]
    )
    assert len(got) > 10
    for row in got:  # every annotation is a world-state box (annotations keep only those within range)
        match = expected[np.argmin(np.abs(expected[:, :2] - row[:2]).sum(axis=1))]
        assert np.allclose(row[:6], match[:6], atol=1e-6)
        assert np.cos(row[6] - match[6]) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside the devkit's BEV renderer
def test_devkit_renderers_draw_the_dataset(nusc, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    sample = nusc.sample[3]
    for channel in ("CAM_FRONT", "LIDAR_TOP"):
        out = tmp_path / f"{channel}.png"
        nusc.render_sample_data(sample["data"][channel], out_path=str(out), verbose=False)
        assert out.stat().st_size > 10_000
    out = tmp_path / "points_in_image.png"
    nusc.render_pointcloud_in_image(sample["token"], out_path=str(out), verbose=False)
    assert out.stat().st_size > 10_000


def test_occupancy_files_follow_real_occ3d_conventions(nusc, dataroot):
    """Real Occ3D-nuScenes labels.npz: uint8 masks of 0/1, `mask_camera` within `mask_lidar`, the driveable surface
    in z-layer 0 and objects standing on it from layer 0 up."""
    driveable, car = OCC_CLASS_NAMES.index("driveable_surface"), OCC_CLASS_NAMES.index("car")
    coverage = []
    for sample in nusc.sample:
        scene_name = nusc.get("scene", sample["scene_token"])["name"]
        labels = np.load(dataroot / "gts" / scene_name / sample["token"] / "labels.npz")
        lidar, camera, semantics = labels["mask_lidar"], labels["mask_camera"], labels["semantics"]
        assert lidar.dtype == camera.dtype == np.uint8 and semantics.dtype == np.uint8
        assert set(np.unique(lidar)) <= {0, 1} and set(np.unique(camera)) <= {0, 1}
        assert not np.any(camera > lidar)
        layers = np.flatnonzero((semantics == driveable).any(axis=(0, 1)))
        assert layers.tolist() == [0]
        car_layers = np.flatnonzero((semantics == car).any(axis=(0, 1)))
        assert len(car_layers) == 0 or car_layers[0] == 0
        coverage.append((lidar.mean(), camera.mean()))
    lidar_coverage, camera_coverage = np.mean(coverage, axis=0)
    # Real files: about 9 % (lidar) and 7 % (camera). Ours are higher where buildings line the streets (their walls
    # return rays at every height), but well below the ~40 % of treating every free voxel in view as observed.
    assert camera_coverage < lidar_coverage < 0.3


def test_the_traffic_light_table_records_the_signal_the_ego_faces(nusc, dataroot, scenes):
    records = json.loads((dataroot / VERSION / f"{TRAFFIC_LIGHT_TABLE}.json").read_text())
    by_sample = {record["sample_token"]: record for record in records}
    assert len(by_sample) == len(records) == len({record["token"] for record in records})
    expected = 0
    for index, scene_record in enumerate(sorted(nusc.scene, key=lambda s: s["name"])):
        token = scene_record["first_sample_token"]
        for signal in scenes[index].track.ego_signal:
            if signal is None:
                assert token not in by_sample
            else:
                expected += 1
                assert (by_sample[token]["state"], by_sample[token]["stop_line_m"]) == signal
                assert signal[0] in TRAFFIC_LIGHT_STATES and signal[1] > 0.0
            token = nusc.get("sample", token)["next"]
    assert len(records) == expected


def test_dataroot_holds_the_provenance_marker(dataroot):
    record = json.loads((dataroot / SIM_PROVENANCE_FILE).read_text())
    assert record["generator"] == "occvla_hf.sim" and record["package_version"] == __version__
    assert record["seed"] == SEED and record["num_scenes"] == NUM_SCENES and record["version"] == VERSION
    assert record["license"] == PROJECT_LICENSE and record["config"] == dataclasses.asdict(CONFIG)
