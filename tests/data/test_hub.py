"""Building, saving, loading and pushing the planning / qa / occupancy datasets of a generated dataroot."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from datasets import ClassLabel, DatasetDict, Image, List, load_dataset, load_from_disk
from huggingface_hub import DatasetCard

from occvla_hf.class_labels import label_id, label_name, label_names
from occvla_hf.cli import main
from occvla_hf.constants import (
    CAMERA_NAMES,
    DATASET_CONFIG_NAMES,
    EGO_STATUS_FEATURES,
    NUSCENES_CATEGORY_NAMES,
    PROJECT_LICENSE,
    QA_HOPS,
    QA_QUESTION_TYPES,
    SIM_PROVENANCE_FILE,
)
from occvla_hf.data import hub
from occvla_hf.data.card import dataset_card
from occvla_hf.data.cli import BUILD_CACHE_DIR
from occvla_hf.data.hub import (
    build_dataset,
    push_to_hub,
)
from occvla_hf.data.load import load_configs
from occvla_hf.data.nuscenes import NuScenesReader
from occvla_hf.data.occ3d import decode_occupancy, occupancy_path
from occvla_hf.data.provenance import DataSource, read_dataroot_source, recorded_source
from occvla_hf.data.schema import agent_boxes_arrays, config_features
from occvla_hf.meta_action import META_ACTION_NAMES
from occvla_hf.reasoning import generate_reasoning
from occvla_hf.version import __version__

from .conftest import VERSION, linked_copy


def _image_paths(dataset) -> list[list[str]]:
    """Image references of every row without decoding the JPEGs."""
    undecoded = dataset.cast_column("images", List(Image(decode=False), length=len(CAMERA_NAMES)))
    return [[image["path"] for image in row] for row in undecoded["images"]]


def _image_bytes(dataset) -> list[list[bytes]]:
    """JPEG bytes of every row, embedded or read from the referenced path."""
    undecoded = dataset.cast_column("images", List(Image(decode=False), length=len(CAMERA_NAMES)))
    return [
        [image["bytes"] if image["bytes"] is not None else Path(image["path"]).read_bytes() for image in row]
        for row in undecoded["images"]
    ]


def test_each_config_has_the_fixed_features(built_datasets: dict[str, DatasetDict]):
    assert tuple(built_datasets) == DATASET_CONFIG_NAMES
    for config, dataset_dict in built_datasets.items():
        for dataset in dataset_dict.values():
            assert dataset.features == config_features(config)


def test_class_label_columns_carry_the_package_names_through_save_and_load(
    built_datasets: dict[str, DatasetDict], saved_dir: Path, tmp_path: Path
):
    expected = {
        "planning": {"meta_action": META_ACTION_NAMES, "agent_categories": NUSCENES_CATEGORY_NAMES},
        "qa": {"template_type": QA_QUESTION_TYPES, "num_hop": QA_HOPS},
    }
    for config, columns in expected.items():
        stored = [
            built_datasets[config]["mini_train"],
            load_from_disk(str(saved_dir / "arrow" / config))["mini_train"],
            load_dataset(str(saved_dir), config, split="mini_train", cache_dir=str(tmp_path)),
        ]
        for dataset in stored:
            for column, names in columns.items():
                feature = dataset.features[column]
                label = feature.feature.feature if column == "agent_categories" else feature
                assert isinstance(label, ClassLabel) and label.names == list(names), (config, column)
    qa = built_datasets["qa"]["mini_train"]
    assert set(qa["num_hop"]) <= {0, 1} and all(isinstance(t, int) for t in qa["template_type"])
    planning = built_datasets["planning"]["mini_train"]
    categories = {c for steps in planning["agent_categories"] for step in steps for c in step}
    assert categories and all(isinstance(c, int) for c in categories)
    assert -1 in planning["meta_action"]  # the scene's last keyframe has no future, hence no meta-action


def test_planning_rows_per_split_equal_devkit_keyframes(built_datasets: dict[str, DatasetDict], reader: NuScenesReader):
    planning = built_datasets["planning"]
    assert set(planning) == set(reader.split_scenes())
    for split, scene_names in reader.split_scenes().items():
        tokens = [token for name in scene_names for token in reader.scene_keyframes(name)]
        assert planning[split]["sample_token"] == tokens


def test_planning_row_holds_reader_fields_in_numpy_format(
    built_datasets: dict[str, DatasetDict], reader: NuScenesReader
):
    dataset = built_datasets["planning"][next(iter(built_datasets["planning"]))].with_format("numpy")
    row = dataset[1]
    fields = reader.planning_fields(str(row["scene_name"]))
    k = reader.scene_keyframes(str(row["scene_name"])).index(str(row["sample_token"]))
    expected = fields[k]
    assert row["ego_status"].shape == (len(EGO_STATUS_FEATURES),) and row["ego_status"].dtype == np.float32
    assert row["trajectory"].shape == (6, 2) and row["trajectory_mask"].dtype == bool
    assert row["camera_intrinsics"].shape == (6, 3, 3) and row["camera_extrinsics"].shape == (6, 4, 4)
    for name in ("ego_status", "ego_status_valid", "trajectory", "trajectory_mask", "past_trajectory"):
        np.testing.assert_array_equal(row[name], expected[name])
    assert row["meta_action"] == label_id("meta_action", expected["meta_action"])  # stored as its class id
    assert label_name("meta_action", row["meta_action"]) == expected["meta_action"]
    assert row["reasoning"] == expected["reasoning"]
    boxes = agent_boxes_arrays(row["agent_boxes"])
    assert len(boxes) == 7 and all(step.shape[1] == 7 for step in boxes)
    for step, expected_step in zip(boxes, expected["agent_boxes"]):
        np.testing.assert_array_equal(step, expected_step)
    assert [label_names("agent_categories", ids) for ids in row["agent_categories"]] == expected["agent_categories"]
    assert row["images"].shape[0] == len(CAMERA_NAMES)


def test_every_planning_row_has_its_reasoning_and_another_build_gives_the_same(
    built_datasets: dict[str, DatasetDict], reader: NuScenesReader, sim_root: Path, tmp_path: Path
):
    again = build_dataset(sim_root, VERSION, configs=["planning"], cache_dir=tmp_path / "again")
    for split, rows in built_datasets["planning"].items():
        texts = rows["reasoning"]
        assert len(texts) == len(rows) > 0 and all(text.startswith("Objects: ") for text in texts)
        lights = [reader.traffic_lights.get(token) for token in rows["sample_token"]]
        numpy_rows = rows.remove_columns("images").with_format("numpy")
        assert [generate_reasoning(row, light) for row, light in zip(numpy_rows, lights, strict=True)] == texts
        assert again["planning"][split]["reasoning"] == texts


def test_images_are_the_six_camera_files_in_camera_order(
    built_datasets: dict[str, DatasetDict], reader: NuScenesReader
):
    dataset = built_datasets["planning"][next(iter(built_datasets["planning"]))]
    for token, paths in zip(dataset["sample_token"], _image_paths(dataset)):
        assert paths == reader.camera_fields(token)["image_paths"]


def test_occupancy_arrays_equal_the_npz_files(built_datasets: dict[str, DatasetDict], sim_root: Path):
    for dataset in built_datasets["occupancy"].values():
        decoded = dataset.with_transform(decode_occupancy)
        for index in range(len(dataset)):
            row = decoded[index]
            with np.load(occupancy_path(sim_root / "gts", row["scene_name"], row["sample_token"])) as npz:
                np.testing.assert_array_equal(row["semantics"], npz["semantics"])
                np.testing.assert_array_equal(row["mask_camera"], npz["mask_camera"].astype(bool))
                np.testing.assert_array_equal(row["mask_lidar"], npz["mask_lidar"].astype(bool))


def test_qa_rows_join_the_questions_of_their_samples(built_datasets: dict[str, DatasetDict], sim_root: Path):
    entries = []
    for path in sorted((sim_root / "nuscenes_qa").glob("NuScenes_*_questions.json")):
        entries += json.loads(path.read_text())["questions"]
    expected = {}
    for entry in entries:
        key = entry["sample_token"]
        expected.setdefault(key, []).append(
            (entry["question"], str(entry["answer"]), entry["template_type"], entry["num_hop"])
        )
    rows = {}
    for dataset in built_datasets["qa"].values():
        for row in dataset:
            template_type = label_name("template_type", row["template_type"])
            rows.setdefault(row["sample_token"], []).append(
                (row["question"], row["answer"], template_type, row["num_hop"])
            )
    assert rows == expected


def test_saved_layout_round_trips_through_load_from_disk_and_load_dataset(
    built_datasets: dict[str, DatasetDict], saved_dir: Path, tmp_path: Path
):
    for config, dataset_dict in built_datasets.items():
        from_disk = load_from_disk(str(saved_dir / "arrow" / config))
        from_parquet = load_dataset(str(saved_dir), config, cache_dir=str(tmp_path))
        for split, dataset in dataset_dict.items():
            for loaded in (from_disk[split], from_parquet[split]):
                assert loaded.features == dataset.features
                if "images" not in dataset.column_names:  # the qa config
                    assert loaded.to_dict() == dataset.to_dict()
                    continue
                assert loaded.remove_columns("images").to_dict() == dataset.remove_columns("images").to_dict()
                assert _image_bytes(loaded) == _image_bytes(dataset)
    assert {name: set(value) for name, value in load_configs(saved_dir).items()} == {
        name: set(value) for name, value in built_datasets.items()
    }


def test_dataset_card_lists_configs_fields_sizes_and_the_sim_source(saved_dir: Path, built_datasets, sim_root: Path):
    card = (saved_dir / "README.md").read_text()
    for config, dataset_dict in built_datasets.items():
        assert f"config_name: {config}" in card and f"## Config `{config}`" in card
        for split, dataset in dataset_dict.items():
            assert f"path: {config}/{split}-*" in card
            assert f"| {config} | {split} | {len(dataset)} |" in card
        for name in config_features(config):
            assert f"| `{name}` |" in card
    # Built from the sim's dataroot: the card says so (licence, name, generator seed and version), and so does the
    # dataset info of every split; the recipes read the source back from the card.
    metadata = DatasetCard(card).data
    assert metadata.license == PROJECT_LICENSE and "nuScenes" not in metadata.pretty_name
    marker = json.loads((sim_root / SIM_PROVENANCE_FILE).read_text())
    assert metadata.occvla_source == {
        "name": "sim",
        **{key: marker[key] for key in ("generator", "package_version", "seed", "num_scenes", "preset")},
    }
    assert marker["package_version"] == __version__ and marker["license"] == PROJECT_LICENSE
    assert "Procedural driving scenes" in card and f"seed {marker['seed']}" in metadata.pretty_name
    assert "Keyframes of nuScenes" not in card and "nuScenes terms of use" not in card
    assert "caesar2020nuscenes" not in card
    assert recorded_source(saved_dir) == DataSource(
        "sim", {key: marker[key] for key in metadata.occvla_source if key != "name"}
    )
    for dataset_dict in load_configs(saved_dir).values():
        for dataset in dataset_dict.values():
            assert dataset.info.license == PROJECT_LICENSE and dataset.info.description.startswith("Procedural")
            assert DataSource.from_info(dataset.info).sim == marker


def test_dataset_card_of_nuscenes_data_states_its_licence_and_citations(built_datasets):
    nuscenes = {
        config: DatasetDict({s: d.flatten_indices() for s, d in splits.items()})
        for config, splits in built_datasets.items()
    }
    for splits in nuscenes.values():
        for dataset in splits.values():
            DataSource("nuscenes").record_in(dataset.info)
    card = dataset_card(nuscenes, version=VERSION, image_mode="path")
    metadata = DatasetCard(card).data
    assert metadata.license == "cc-by-nc-sa-4.0" and metadata.occvla_source == {"name": "nuscenes"}
    assert "license: cc-by-nc-sa-4.0" in card and "nuScenes terms of use" in card and "Keyframes of nuScenes" in card
    for key in ("caesar2020nuscenes", "tian2023occ3d", "qian2024nuscenesqa"):
        assert key in card
    DataSource("sim").record_in(next(iter(nuscenes["planning"].values())).info)
    with pytest.raises(ValueError, match="different sources"):
        dataset_card(nuscenes, version=VERSION, image_mode="path")


def test_a_dataroot_without_the_sim_marker_is_nuscenes(tmp_path: Path):
    assert read_dataroot_source(tmp_path) == DataSource("nuscenes")
    assert recorded_source(tmp_path) is None  # no card


def test_bytes_mode_embeds_the_jpeg_files(sim_root: Path, reader: NuScenesReader, tmp_path: Path):
    split = next(iter(reader.split_scenes()))
    built = build_dataset(sim_root, VERSION, splits=[split], image_mode="bytes", cache_dir=tmp_path)
    dataset = built["planning"][split]
    undecoded = dataset.cast_column("images", List(Image(decode=False), length=len(CAMERA_NAMES)))
    row = undecoded[0]
    paths = reader.camera_fields(row["sample_token"])["image_paths"]
    assert [image["bytes"] for image in row["images"]] == [Path(path).read_bytes() for path in paths]
    assert row["images"][0]["path"] == str(Path(paths[0]).relative_to(sim_root))


def test_missing_occupancy_is_skipped_with_a_count_or_fails_by_flag(
    sim_root: Path, reader: NuScenesReader, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    split, scene_names = next(iter(reader.split_scenes().items()))
    scene = scene_names[0]
    token = reader.scene_keyframes(scene)[0]
    gts = linked_copy(sim_root / "gts", tmp_path / "gts", skip={scene})
    scene_dir = linked_copy(sim_root / "gts" / scene, gts / scene, skip={token})
    assert not occupancy_path(gts, scene, token).exists() and scene_dir.is_dir()
    with pytest.raises(FileNotFoundError, match=f"sample {token} of {scene}"):
        build_dataset(sim_root, VERSION, occ3d_root=gts, splits=[split], configs=["occupancy"], on_missing_occ="error")
    with caplog.at_level(logging.WARNING, logger="occvla_hf.data.hub"):
        built = build_dataset(
            sim_root, VERSION, occ3d_root=gts, splits=[split], configs=["occupancy"], cache_dir=tmp_path / "cache"
        )
    tokens = [t for name in scene_names for t in reader.scene_keyframes(name)]
    assert built["occupancy"][split]["sample_token"] == [t for t in tokens if t != token]
    assert f"skipping 1 of {len(tokens)} keyframes" in caplog.text


def test_build_resumes_from_cached_chunks_without_regenerating(
    sim_root: Path, reader: NuScenesReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    split = next(iter(reader.split_scenes()))
    first = build_dataset(sim_root, VERSION, splits=[split], scenes_per_chunk=1, cache_dir=tmp_path)

    def fail(**kwargs):
        raise AssertionError("a cached chunk was generated again")
        yield

    monkeypatch.setattr(hub, "_generate_rows", fail)
    again = build_dataset(sim_root, VERSION, splits=[split], scenes_per_chunk=1, cache_dir=tmp_path)
    assert again["planning"][split].to_dict() == first["planning"][split].to_dict()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"configs": ["qa"]}, ValueError, "'qa' needs qa_root"),
        ({"configs": ["occupancy"]}, ValueError, "'occupancy' needs occ3d_root"),
        ({"configs": ["lidar"]}, ValueError, "configs: expected a non-empty subset"),
        ({"image_mode": "url"}, ValueError, "image_mode: expected one of"),
        ({"on_missing_occ": "ignore"}, ValueError, "on_missing_occ: expected one of"),
        ({"occ3d_root": "/absent/gts"}, FileNotFoundError, "occ3d_root: '/absent/gts' is not a directory"),
        ({"qa_root": "/absent/qa"}, FileNotFoundError, "qa_root: none of"),
    ],
)
def test_bad_build_arguments_name_the_argument(sim_root: Path, kwargs: dict, error: type, message: str):
    with pytest.raises(error, match=message):
        build_dataset(sim_root, VERSION, **kwargs)


def test_qa_is_built_with_the_planning_config_that_holds_its_images(sim_root: Path):
    with pytest.raises(
        ValueError, match="'qa' needs 'planning', whose rows hold the images of the questions' keyframes"
    ):
        build_dataset(sim_root, VERSION, configs=["qa"], qa_root=sim_root / "nuscenes_qa")


def test_malformed_qa_json_names_the_entry(sim_root: Path, tmp_path: Path):
    qa_root = tmp_path / "qa"
    qa_root.mkdir()
    entry = {"sample_token": "x", "question": "q", "answer": "yes", "template_type": "exist"}
    (qa_root / "NuScenes_val_questions.json").write_text(json.dumps({"questions": [entry]}))
    with pytest.raises(ValueError, match=r"NuScenes_val_questions.json: questions\[0\]: missing keys \['num_hop'\]"):
        build_dataset(sim_root, VERSION, qa_root=qa_root)


def test_missing_dataroot_or_version_fail_before_building(sim_root: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="dataroot"):
        build_dataset(tmp_path / "absent", VERSION)
    with pytest.raises(FileNotFoundError, match="version: no nuScenes tables"):
        build_dataset(sim_root, "v1.0-test")


class _RecordingApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls instead of reaching the network."""

    calls: ClassVar[list[tuple[str, dict]]] = []

    def __init__(self, token: str | None = None) -> None:
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, **kwargs) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_file(self, **kwargs) -> None:
        self.calls.append(("upload_file", kwargs))


@pytest.fixture
def recorded_push(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Calls of `HfApi` and of `DatasetDict.push_to_hub`, in order."""
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(_RecordingApi, "calls", calls)
    monkeypatch.setattr(hub, "HfApi", _RecordingApi)

    def record_push(self: DatasetDict, repo_id: str, **kwargs) -> None:
        calls.append(("push_to_hub", {"repo_id": repo_id, "splits": sorted(self), **kwargs}))

    monkeypatch.setattr(DatasetDict, "push_to_hub", record_push)
    return calls


def test_push_to_hub_uploads_the_card_then_pushes_each_config(
    built_datasets: dict[str, DatasetDict], saved_dir: Path, recorded_push: list
):
    card = (saved_dir / "README.md").read_text()
    push_to_hub(built_datasets, "user/nuscenes-occvla", card=card, private=True)
    names = [name for name, _ in recorded_push]
    assert names == ["init", "create_repo", "upload_file"] + ["push_to_hub"] * len(built_datasets)
    create, upload = recorded_push[1][1], recorded_push[2][1]
    assert create == {"repo_id": "user/nuscenes-occvla", "repo_type": "dataset", "private": True, "exist_ok": True}
    assert upload["path_in_repo"] == "README.md" and upload["path_or_fileobj"] == card.encode()
    assert upload["repo_type"] == "dataset"
    pushes = [kwargs for name, kwargs in recorded_push if name == "push_to_hub"]
    assert [push["config_name"] for push in pushes] == list(built_datasets)
    assert all(push["repo_id"] == "user/nuscenes-occvla" and push["private"] for push in pushes)
    assert [push["splits"] for push in pushes] == [sorted(d) for d in built_datasets.values()]


def test_cli_builds_saves_pushes_and_drops_its_cache(
    sim_root: Path, reader: NuScenesReader, tmp_path: Path, recorded_push: list
):
    split = next(iter(reader.split_scenes()))
    out = tmp_path / "out"
    argv = ["data", "build", "nuscenes", "--dataroot", str(sim_root), "--version", VERSION, "--out", str(out)]
    argv += ["--qa", str(sim_root / "nuscenes_qa"), "--splits", split, "--push", "user/repo"]
    assert main(argv) == 0
    assert sorted(path.name for path in out.iterdir()) == ["README.md", "arrow", "planning", "qa"]
    assert not (out / BUILD_CACHE_DIR).exists()
    assert [kwargs["config_name"] for name, kwargs in recorded_push if name == "push_to_hub"] == ["planning", "qa"]
    recorded_push.clear()
    assert main(["data", "push", str(out), "--repo", "user/other"]) == 0
    assert [kwargs["repo_id"] for name, kwargs in recorded_push if name == "push_to_hub"] == ["user/other"] * 2
    assert load_dataset(str(out), "planning", cache_dir=str(tmp_path / "hf"))[split].num_rows == sum(
        len(reader.scene_keyframes(name)) for name in reader.split_scenes()[split]
    )


def test_package_exports_resolve_lazily_to_the_implementations():
    from occvla_hf import data

    assert data.build_dataset is build_dataset and data.decode_occupancy is decode_occupancy
    assert data.agent_boxes_arrays is agent_boxes_arrays and data.push_to_hub is push_to_hub
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        data.missing  # noqa: B018


def test_parallel_build_gives_the_rows_of_a_sequential_build(sim_root: Path, tmp_path: Path):
    """`num_proc` forks writers per chunk; the rows, their order and the features are those of one process."""
    kwargs = {"occ3d_root": sim_root / "gts", "configs": ["planning", "occupancy"], "scenes_per_chunk": 1}
    sequential = build_dataset(sim_root, VERSION, cache_dir=tmp_path / "one", **kwargs)
    parallel = build_dataset(sim_root, VERSION, cache_dir=tmp_path / "two", num_proc=2, **kwargs)
    for config, splits in sequential.items():
        for split, rows in splits.items():
            assert parallel[config][split].features == rows.features
            assert parallel[config][split].to_dict() == rows.to_dict(), (config, split)
    with pytest.raises(ValueError, match="num_proc"):
        build_dataset(sim_root, VERSION, num_proc=0)


def _first_image(root: Path, reader: NuScenesReader) -> tuple[str, str, Path]:
    """(split, sample token, path under `root`) of the CAM_FRONT image of the first keyframe."""
    split, scene_names = next(iter(reader.split_scenes().items()))
    token = reader.scene_keyframes(scene_names[0])[0]
    path = Path(reader.camera_fields(token)["image_paths"][0])
    return split, token, root / path.relative_to(reader.dataroot)


def _copied_root(sim_root: Path, target: Path) -> Path:
    """A copy of the dataroot whose images can be changed (tables and labels stay linked)."""
    root = linked_copy(sim_root, target, skip={"samples"})
    shutil.copytree(sim_root / "samples", root / "samples")
    return root


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: b"",
        lambda data: data[: len(data) // 2],
        lambda data: b"not an image at all",
        lambda data: data[:2] + b"\x00" * (len(data) - 2),
    ],
    ids=["empty", "truncated", "not-an-image", "zeroed-header"],
)
def test_corrupt_camera_images_fail_naming_the_file_or_are_skipped_with_a_count(
    sim_root: Path, reader: NuScenesReader, tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt
):
    root = _copied_root(sim_root, tmp_path / "root")
    split, token, image = _first_image(root, reader)
    image.write_bytes(corrupt(image.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(f"sample {token}: {CAMERA_NAMES[0]} image {image}:")) as error:
        build_dataset(root, VERSION, splits=[split], on_corrupt="error", cache_dir=tmp_path / "cache")
    assert "on_corrupt='skip'" in str(error.value)
    with caplog.at_level(logging.WARNING, logger="occvla_hf.data.hub"):
        built = build_dataset(root, VERSION, splits=[split], qa_root=root / "nuscenes_qa", cache_dir=tmp_path / "cache")
    tokens = [t for name in reader.split_scenes()[split] for t in reader.scene_keyframes(name)]
    assert built["planning"][split]["sample_token"] == [t for t in tokens if t != token]
    assert token not in built["qa"][split]["sample_token"] and len(built["qa"][split]) > 0
    assert f"skipping 1 of {len(tokens)} keyframes with corrupt camera images" in caplog.text
    assert str(image) in caplog.text


def test_bad_on_corrupt_is_rejected(sim_root: Path):
    with pytest.raises(ValueError, match="on_corrupt: expected one of"):
        build_dataset(sim_root, VERSION, on_corrupt="ignore")


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["new-mtime", "same-size-and-mtime"])
def test_rebuild_in_bytes_mode_embeds_a_changed_image_not_the_cached_bytes(
    sim_root: Path, reader: NuScenesReader, tmp_path: Path, keep_mtime: bool
):
    root = _copied_root(sim_root, tmp_path / "root")
    split, token, image = _first_image(root, reader)
    first = build_dataset(root, VERSION, splits=[split], image_mode="bytes", cache_dir=tmp_path / "cache")
    old = image.read_bytes()
    stat = image.stat()
    if keep_mtime:  # one pixel-data byte changed: same size, still a whole JPEG
        middle = len(old) // 2 + next(i for i, byte in enumerate(old[len(old) // 2 :]) if byte < 0xFE)
        new = old[:middle] + bytes([old[middle] ^ 1]) + old[middle + 1 :]
    else:
        new = Path(reader.camera_fields(token)["image_paths"][1]).read_bytes()
    assert new != old
    image.write_bytes(new)
    if keep_mtime:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert image.stat().st_size == stat.st_size
    again = build_dataset(root, VERSION, splits=[split], image_mode="bytes", cache_dir=tmp_path / "cache")
    assert _image_bytes(first["planning"][split])[0][0] == old
    assert _image_bytes(again["planning"][split])[0][0] == new
    assert _image_bytes(again["planning"][split])[1:] == _image_bytes(first["planning"][split])[1:]
