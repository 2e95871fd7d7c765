"""`export_lerobot` / `occvla-hf data export-lerobot`: the planning config in the LeRobot v3.0 layout.

The layout is checked against what LeRobot documents and reads (huggingface/lerobot `src/lerobot/datasets/utils.py`:
the paths and `DatasetInfo`; `feature_utils.get_hf_features_from_features`: the column types of a feature spec;
`io_utils.load_tasks` / `load_episodes` / `load_nested_dataset`: how the metadata and data files are read;
`compute_stats.py`: the statistics), without the `lerobot` package.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, List, concatenate_datasets
from datasets import Image as DatasetImage
from PIL import Image

from occvla_hf.cli import main
from occvla_hf.constants import CAMERA_NAMES, EGO_STATUS_FEATURES, NUM_WAYPOINTS
from occvla_hf.data.lerobot import LEROBOT_TASK, LeRobotExport, export_lerobot, hf_features
from occvla_hf.data.load import load_configs

SPLITS = ("mini_train", "mini_val")
IMAGE_KEYS = [f"observation.images.{camera}" for camera in CAMERA_NAMES]
LEROBOT_COLUMNS = {"timestamp", "frame_index", "episode_index", "index", "task_index"}  # LeRobot's DEFAULT_FEATURES
STAT_NAMES = {"min", "max", "mean", "std", "count"}


@pytest.fixture(scope="module")
def planning(training_data_dir: Path) -> Dataset:
    """The planning rows of both splits in the export's order: by split, then scene (first appearance), then time."""
    splits = load_configs(training_data_dir, ["planning"])["planning"]
    parts = []
    for split in SPLITS:
        scenes, timestamps = list(splits[split]["scene_name"]), list(splits[split]["timestamp"])
        first = {scene: scenes.index(scene) for scene in scenes}
        parts.append(splits[split].select(sorted(range(len(scenes)), key=lambda i: (first[scenes[i]], timestamps[i]))))
    return concatenate_datasets(parts)


@pytest.fixture(scope="module")
def export(training_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LeRobotExport:
    return export_lerobot(training_data_dir, tmp_path_factory.mktemp("lerobot") / "occvla")


def read_frames(export: LeRobotExport) -> Dataset:
    """The data files as LeRobot reads them (`load_nested_dataset`: every `data/*/*.parquet`, with the features of
    `get_hf_features_from_features(info["features"])`)."""
    paths = sorted((export.root / "data").glob("*/*.parquet"))
    return Dataset.from_parquet([str(path) for path in paths], features=hf_features(export.info["features"]))


def test_info_json_has_the_v3_fields_and_features(export: LeRobotExport, planning: Dataset) -> None:
    info = json.loads((export.root / "meta" / "info.json").read_text())
    assert info == export.info
    assert (info["codebase_version"], info["fps"], info["video_path"]) == ("v3.0", 2, None)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, len(planning), 1)
    assert info["splits"] == {"mini_train": "0:1", "mini_val": "1:2"}
    features = info["features"]
    expected = {*IMAGE_KEYS, "observation.state", "action", "ego_status_valid", "waypoint_valid", "sample_token"}
    assert set(features) == expected | LEROBOT_COLUMNS
    for key in IMAGE_KEYS:  # the sim's tiny preset renders 160 x 90 views
        assert features[key] == {"dtype": "image", "shape": [90, 160, 3], "names": ["height", "width", "channels"]}
    assert features["observation.state"] == {"dtype": "float32", "shape": [6], "names": list(EGO_STATUS_FEATURES)}
    assert features["action"]["shape"] == [2 * NUM_WAYPOINTS] and features["action"]["names"][:3] == [
        "x_0.5s",
        "y_0.5s",
        "x_1s",
    ]
    assert features["waypoint_valid"]["names"] == ["0.5s", "1s", "1.5s", "2s", "2.5s", "3s"]
    for name in LEROBOT_COLUMNS:
        assert features[name]["shape"] == [1]
        assert features[name]["dtype"] == ("float32" if name == "timestamp" else "int64")
    # Policies take `observation*` as inputs and `action*` as targets (`dataset_to_policy_features`): the masks are
    # neither.
    assert [key for key in features if key.startswith(("observation", "action"))] == [
        *IMAGE_KEYS,
        "observation.state",
        "action",
    ]


def _arrow_type(feature: dict) -> pa.DataType:
    """The column type LeRobot's `get_hf_features_from_features` gives a feature spec: an image is the `datasets`
    Image struct, shape (1,) a scalar, (n,) a list of n values."""
    if feature["dtype"] == "image":
        return pa.struct({"bytes": pa.binary(), "path": pa.string()})
    value = pa.string() if feature["dtype"] == "string" else pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    return value if feature["shape"] == [1] else pa.list_(value, feature["shape"][0])


def test_data_files_hold_one_column_per_feature_of_the_documented_type(export: LeRobotExport) -> None:
    paths = sorted((export.root / "data").glob("*/*.parquet"))
    assert [path.relative_to(export.root).as_posix() for path in paths] == ["data/chunk-000/file-000.parquet"]
    schema = pq.read_schema(paths[0])
    assert set(schema.names) == set(export.info["features"])
    for name, feature in export.info["features"].items():
        assert schema.field(name).type == _arrow_type(feature), name


def test_frames_follow_the_scenes_in_time_order(export: LeRobotExport, planning: Dataset) -> None:
    frames = read_frames(export).with_format("numpy")[:]
    assert frames["sample_token"].tolist() == list(planning["sample_token"])
    np.testing.assert_array_equal(frames["index"], np.arange(len(planning)))
    np.testing.assert_array_equal(frames["task_index"], 0)
    np.testing.assert_allclose(frames["observation.state"], np.asarray(planning["ego_status"], np.float32))
    np.testing.assert_array_equal(frames["ego_status_valid"], np.asarray(planning["ego_status_valid"]))
    trajectory = np.asarray(planning["trajectory"], np.float32)
    np.testing.assert_allclose(frames["action"], trajectory.reshape(len(planning), 2 * NUM_WAYPOINTS))
    np.testing.assert_allclose(frames["action"][:, 2:4], trajectory[:, 1])  # x, y at 1 s
    np.testing.assert_array_equal(frames["waypoint_valid"], np.asarray(planning["trajectory_mask"]))
    first = read_frames(export)[0]
    for view, key in enumerate(IMAGE_KEYS):  # the views' bytes, decoded: the planning row's images
        np.testing.assert_array_equal(np.asarray(first[key]), np.asarray(planning[0]["images"][view]))


def test_episodes_are_the_scenes_with_their_frame_ranges_and_files(export: LeRobotExport, planning: Dataset) -> None:
    episodes = Dataset.from_parquet(str(export.root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"))
    frames = read_frames(export).with_format("numpy")[:]
    scenes = list(dict.fromkeys(planning["scene_name"]))
    assert list(episodes["episode_index"]) == [0, 1] and list(episodes["scene_name"]) == scenes
    assert list(episodes["tasks"]) == [[LEROBOT_TASK]] * 2
    for episode in episodes:
        start, stop = episode["dataset_from_index"], episode["dataset_to_index"]
        rows = np.flatnonzero(frames["episode_index"] == episode["episode_index"])
        assert (rows[0], rows[-1] + 1) == (start, stop) and episode["length"] == stop - start
        assert np.asarray(planning["scene_name"])[start:stop].tolist() == [episode["scene_name"]] * (stop - start)
        np.testing.assert_array_equal(frames["frame_index"][start:stop], np.arange(stop - start))
        np.testing.assert_allclose(frames["timestamp"][start:stop], np.arange(stop - start) / 2.0)
        data_file = export.root / export.info["data_path"].format(
            chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"]
        )
        assert set(range(start, stop)) <= set(pq.read_table(data_file, columns=["index"])["index"].to_pylist())
    assert export.episodes[1]["split"] == "mini_val"


def test_tasks_parquet_reads_as_lerobot_reads_it(export: LeRobotExport) -> None:
    tasks = pd.read_parquet(export.root / "meta" / "tasks.parquet")  # `load_tasks`: the index is the task text
    assert tasks.index.name == "task"
    assert int(tasks.loc[LEROBOT_TASK, "task_index"]) == 0 and len(tasks) == 1


def test_stats_are_mean_std_min_max_per_feature(export: LeRobotExport, planning: Dataset) -> None:
    stats = json.loads((export.root / "meta" / "stats.json").read_text())
    assert stats == export.stats
    assert set(stats) == set(export.info["features"]) - {"sample_token"}  # strings have none (compute_stats.py)
    shapes = {key: (3, 1, 1) for key in IMAGE_KEYS} | {"observation.state": (6,), "action": (12,)}
    for name, values in stats.items():
        assert STAT_NAMES <= set(values), name
        for stat in ("min", "max", "mean", "std"):
            assert np.shape(values[stat]) == shapes.get(name, (len(export.info["features"][name]["names"] or [0]),))
    # action: per entry over the frames where that waypoint exists (the others hold zeros).
    action = np.asarray(planning["trajectory"], np.float64).reshape(len(planning), -1)
    valid = np.repeat(np.asarray(planning["trajectory_mask"]), 2, axis=1)
    for entry in range(2 * NUM_WAYPOINTS):
        seen = action[valid[:, entry], entry]
        assert stats["action"]["count"][entry] == len(seen)
        expected = [seen.mean(), seen.std(), seen.min(), seen.max()] if len(seen) else [0.0] * 4  # never valid
        np.testing.assert_allclose(
            [stats["action"][stat][entry] for stat in ("mean", "std", "min", "max")], expected, rtol=1e-6
        )
    # The tiny preset's scenes have 6 keyframes: 5 frames of each have a 0.5 s future, none a 3 s one.
    assert stats["action"]["count"][:2] == [10, 10] and stats["action"]["count"][-2:] == [0, 0]
    np.testing.assert_allclose(stats["frame_index"]["mean"], [2.5])  # 6 keyframes per scene: 0..5
    assert stats["index"]["count"] == [len(planning)]
    # images: per channel in [0, 1] over every pixel (160 x 90 views are below LeRobot's subsampling size).
    front = np.stack([np.asarray(row[0], np.float64) / 255.0 for row in planning["images"]])  # (N, H, W, 3)
    np.testing.assert_allclose(np.ravel(stats[IMAGE_KEYS[0]]["mean"]), front.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(np.ravel(stats[IMAGE_KEYS[0]]["std"]), front.std(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.ravel(stats[IMAGE_KEYS[0]]["max"]), front.max(axis=(0, 1, 2)))
    assert stats[IMAGE_KEYS[0]]["count"] == [len(planning)]


def test_episodes_carry_their_own_stats(export: LeRobotExport, planning: Dataset) -> None:
    episodes = pq.read_table(export.root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    state = np.asarray(planning["ego_status"], np.float64)
    valid = np.asarray(planning["ego_status_valid"])
    for episode in episodes:
        rows = slice(episode["dataset_from_index"], episode["dataset_to_index"])
        for entry in range(len(EGO_STATUS_FEATURES)):
            seen = state[rows][valid[rows][:, entry], entry]
            expected = seen.mean() if len(seen) else 0.0  # never valid: zeros
            assert episode["stats/observation.state/mean"][entry] == pytest.approx(expected, abs=1e-6)
        assert episode["stats/frame_index/max"] == [episode["length"] - 1]


def test_episodes_fill_data_files_up_to_the_size_limit(training_data_dir: Path, tmp_path: Path) -> None:
    export = export_lerobot(training_data_dir, tmp_path / "small_files", data_file_size_mb=0.01)
    episodes = pq.read_table(export.root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [(episode["data/chunk_index"], episode["data/file_index"]) for episode in episodes] == [(0, 0), (0, 1)]
    assert len(read_frames(export)) == export.info["total_frames"]


def test_export_command_writes_the_chosen_splits(training_data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "val"
    assert main(["data", "export-lerobot", str(training_data_dir), "--out", str(out), "--splits", "mini_val"]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert (info["total_episodes"], info["splits"]) == (1, {"mini_val": "0:1"})
    assert "wrote 1 episodes" in capsys.readouterr().out
    assert main(["data", "export-lerobot", str(training_data_dir), "--out", str(out)]) == 2  # not over a dataset
    assert "already holds a LeRobot dataset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="splits: the planning config"):
        export_lerobot(training_data_dir, tmp_path / "other", splits=["train"])


def test_image_bytes_are_stored_as_built(export: LeRobotExport, planning: Dataset, sim_dataroot: Path) -> None:
    table = pq.read_table(export.root / "data" / "chunk-000" / "file-000.parquet", columns=IMAGE_KEYS)
    built = planning.cast_column("images", List(DatasetImage(decode=False)))[0]["images"]
    for view, (camera, key) in enumerate(zip(CAMERA_NAMES, IMAGE_KEYS)):  # the camera files' bytes, not re-encoded
        original = sim_dataroot / "samples" / camera / Path(built[view]["path"]).name
        assert table[key][0].as_py()["bytes"] == original.read_bytes()
    with Image.open(io.BytesIO(table[IMAGE_KEYS[0]][0].as_py()["bytes"])) as image:
        assert image.size == (160, 90)


def test_non_finite_ego_status_is_refused(training_data_dir: Path, tmp_path: Path) -> None:
    splits = load_configs(training_data_dir, ["planning"])["planning"]
    broken = splits.map(lambda row, index: {"ego_status": [np.nan] * 6} if index == 2 else {}, with_indices=True)
    broken.save_to_disk(tmp_path / "planning")  # a save_to_disk folder of the one config
    token = broken["mini_train"][2]["sample_token"]
    with pytest.raises(ValueError, match=f"ego_status: NaN or inf in keyframe {token}"):
        export_lerobot(tmp_path / "planning", tmp_path / "out")


def test_the_card_has_lerobots_front_matter_and_the_sources_licence(export: LeRobotExport, training_data_dir) -> None:
    """The README.md that LeRobot's `push_to_hub` would write (`task_categories: robotics`, tag `LeRobot`, the data
    files as the default config), with the licence and source record of the exported dataset."""
    from huggingface_hub import DatasetCard

    from occvla_hf.data.card import dataset_source
    from occvla_hf.data.provenance import CARD_SOURCE_KEY

    card = DatasetCard.load(export.root / "README.md")
    data = card.data.to_dict()
    source = dataset_source(load_configs(training_data_dir, ["planning"]))
    assert data["license"] == source.license and data[CARD_SOURCE_KEY] == source.card_record()
    assert data["task_categories"] == ["robotics"] and data["tags"][0] == "LeRobot"
    assert data["configs"] == [{"config_name": "default", "data_files": "data/*/*.parquet"}]
    assert sorted(export.root.glob("data/*/*.parquet"))  # the default config's files exist
    assert LEROBOT_TASK in card.text and f"{export.info['total_episodes']} episodes" in card.text
    for name in export.info["features"]:
        assert f"| `{name}` |" in card.text
