"""QA rows store no image: they get their keyframe's from its planning row, joined by sample_token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Features, load_dataset

from occvla_hf.data.hub import build_dataset
from occvla_hf.data.keyframes import KeyframeColumns, has_images, join_keyframes, require_images
from occvla_hf.data.load import ARROW_DIR, load_configs, load_named_split, load_split
from occvla_hf.data.schema import CAMERA_COLUMNS, config_features

from .conftest import VERSION


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def _planning_images(planning: Dataset) -> dict[str, list[np.ndarray]]:
    return {row["sample_token"]: _pixels(row["images"]) for row in planning}


@pytest.fixture(scope="module")
def bytes_build(sim_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DatasetDict]:
    """The planning and qa configs of the sim dataroot with the JPEG bytes embedded."""
    cache = tmp_path_factory.mktemp("bytes_cache")
    return build_dataset(sim_root, VERSION, qa_root=sim_root / "nuscenes_qa", image_mode="bytes", cache_dir=cache)


def test_the_qa_config_stores_no_camera_column(built_datasets: dict[str, DatasetDict], saved_dir: Path) -> None:
    assert not set(CAMERA_COLUMNS) & set(config_features("qa"))
    assert set(CAMERA_COLUMNS) <= set(config_features("planning"))
    for qa in [*built_datasets["qa"].values(), *load_configs(saved_dir, ["qa"])["qa"].values()]:
        assert not set(CAMERA_COLUMNS) & set(qa.column_names) and not has_images(qa)


@pytest.mark.parametrize("image_mode", ["path", "bytes"])
def test_joined_qa_rows_have_the_images_of_their_keyframes_planning_row(
    image_mode: str, built_datasets: dict[str, DatasetDict], bytes_build: dict[str, DatasetDict]
) -> None:
    built = built_datasets if image_mode == "path" else bytes_build
    for split, qa in built["qa"].items():
        planning = built["planning"][split]
        expected = _planning_images(planning)
        assert len({image.tobytes() for images in expected.values() for image in images[:1]}) > 1  # they differ
        joined = join_keyframes(qa, planning)
        assert joined.column_names == qa.column_names and len(joined) == len(qa) > len(planning)
        for index, row in enumerate(joined):
            assert {key: value for key, value in row.items() if key != "images"} == qa[index]
            got = _pixels(row["images"])
            assert len(got) == 6
            for image, keyframe_image in zip(got, expected[row["sample_token"]], strict=True):
                np.testing.assert_array_equal(image, keyframe_image)
        batch = joined[1:4]  # slices, selections and single rows join alike
        assert batch["sample_token"] == qa[1:4]["sample_token"] and len(batch["images"]) == 3
        assert _pixels(joined.select([2])[0]["images"])[0].tobytes() == _pixels(joined[2]["images"])[0].tobytes()


def test_the_hub_layout_joins_the_same_images(built_datasets: dict[str, DatasetDict], saved_dir: Path, tmp_path):
    qa = load_dataset(str(saved_dir), "qa", cache_dir=str(tmp_path))
    planning = load_dataset(str(saved_dir), "planning", cache_dir=str(tmp_path))
    for split in built_datasets["qa"]:
        assert qa[split].features == config_features("qa")
        from_hub_layout = join_keyframes(qa[split], planning[split])
        name, loaded = load_named_split(saved_dir, "qa", split)  # the package's loader joins them itself
        assert name == split and has_images(loaded) and "images" not in loaded.column_names
        expected = join_keyframes(built_datasets["qa"][split], built_datasets["planning"][split])
        for index in (0, len(expected) - 1):
            want = _pixels(expected[index]["images"])
            for rows in (from_hub_layout, loaded):
                assert rows[index]["sample_token"] == expected[index]["sample_token"]
                assert [a.tobytes() for a in _pixels(rows[index]["images"])] == [a.tobytes() for a in want]
    assert not has_images(load_configs(saved_dir, ["qa"])["qa"]["mini_val"])  # load_configs: rows as stored


def test_a_question_without_its_keyframe_row_is_an_error_naming_its_sample_token(built_datasets) -> None:
    qa, planning = built_datasets["qa"]["mini_val"], built_datasets["planning"]["mini_val"]
    token = qa[0]["sample_token"]
    without = planning.filter(lambda t: t != token, input_columns="sample_token")
    with pytest.raises(ValueError, match=f"questions: no planning row holds the keyframe of sample_token '{token}'"):
        join_keyframes(qa, without, where="questions")
    with pytest.raises(ValueError, match="no planning row holds the keyframe of sample_token"):
        join_keyframes(qa, built_datasets["planning"]["mini_train"])  # the other split's keyframes
    with pytest.raises(ValueError, match=r"keyframes: no \['images'\] columns"):
        join_keyframes(qa, qa)
    with pytest.raises(ValueError, match="columns: expected a non-empty subset of"):
        KeyframeColumns(planning, ["question"])


def test_other_camera_columns_join_on_request(built_datasets) -> None:
    qa, planning = built_datasets["qa"]["mini_train"], built_datasets["planning"]["mini_train"]
    joined = join_keyframes(qa, planning, columns=["camera_intrinsics", "camera_to_keyframe_ego"])
    row = joined[3]
    keyframe = planning[planning["sample_token"].index(row["sample_token"])]
    assert "images" not in row
    for name in ("camera_intrinsics", "camera_to_keyframe_ego"):
        np.testing.assert_array_equal(row[name], keyframe[name])


def test_qa_rows_of_older_builds_keep_their_own_images(built_datasets, tmp_path: Path) -> None:
    """Builds from before the join stored each keyframe's images in every question: reading them still works."""
    qa, planning = built_datasets["qa"]["mini_val"], built_datasets["planning"]["mini_val"]
    features = Features({**qa.features, "images": planning.features["images"]})
    old = Dataset.from_list(list(join_keyframes(qa, planning)), features=features)
    assert join_keyframes(old, planning) is old and has_images(old)
    for config, rows in (("qa", old), ("planning", planning)):  # the Arrow copies of a `data build` folder
        DatasetDict({"mini_val": rows}).save_to_disk(str(tmp_path / "old" / ARROW_DIR / config))
    loaded = load_split(tmp_path / "old", "qa", "mini_val")
    assert "images" in loaded.column_names and len(loaded) == len(qa)
    np.testing.assert_array_equal(_pixels(loaded[0]["images"])[0], _pixels(old[0]["images"])[0])


def test_rows_without_images_are_refused_naming_the_join(built_datasets) -> None:
    qa = built_datasets["qa"]["mini_val"]
    with pytest.raises(ValueError, match=r"eval qa: the rows hold no images .*data\.join_keyframes"):
        require_images(qa, "eval qa")
    require_images(join_keyframes(qa, built_datasets["planning"]["mini_val"]), "eval qa")
    require_images(built_datasets["planning"]["mini_val"], "planning")
