"""The image cache: the processor's resize stored once, served by `JointDataset`, checked, and trained on with the
same losses as decoding the images."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch

from occvla_hf.data.keyframes import join_keyframes
from occvla_hf.data.load import load_configs
from occvla_hf.training.collator import OccVLADataCollator
from occvla_hf.training.image_cache import INDEX_FILE, ImageCache, build_image_cache, open_image_cache
from occvla_hf.training.joint import JointDataset, build_model_and_processor, train_joint
from tests.conftest import TINY_MODEL_CONFIG


@pytest.fixture
def task_rows(training_data_dir):
    configs = load_configs(training_data_dir, ["planning", "qa"])
    return {task: splits["mini_train"] for task, splits in configs.items()}


@pytest.fixture
def processor():
    return build_model_and_processor({"config": TINY_MODEL_CONFIG})[1]


def test_cache_holds_the_processors_resize_of_each_keyframe_once(task_rows, processor, tmp_path):
    cache = build_image_cache([task_rows["planning"]], processor, tmp_path / "train", batch_size=4)
    planning = task_rows["planning"]
    assert len(cache) == len(set(planning["sample_token"]))  # the QA rows share their keyframe's entry
    assert set(task_rows["qa"]["sample_token"]) <= set(cache.rows)
    for index in (0, len(planning) - 1):
        row = planning[index]
        expected = processor.resized_pixels([row["images"]])[0]
        assert cache[row["sample_token"]].dtype == np.uint8
        np.testing.assert_array_equal(cache[row["sample_token"]], expected)
    copied = pickle.loads(pickle.dumps(cache))  # a data loader worker maps the file itself
    assert copied._images is None
    np.testing.assert_array_equal(copied[planning[0]["sample_token"]], cache[planning[0]["sample_token"]])
    with pytest.raises(ValueError, match=r"datasets\[1\]: no 'images' column .* the planning rows"):
        build_image_cache([planning, task_rows["qa"]], processor, tmp_path / "qa")  # QA rows hold no images


def test_worker_processes_build_the_same_cache(task_rows, processor, tmp_path):
    serial = build_image_cache([task_rows["planning"]], processor, tmp_path / "serial", batch_size=3)
    pooled = build_image_cache([task_rows["planning"]], processor, tmp_path / "pooled", batch_size=3, num_workers=2)
    assert pooled.rows == serial.rows
    np.testing.assert_array_equal(pooled.images, serial.images)
    assert all(serial.images[i].any() for i in range(len(serial)))  # every batch was written


def test_joint_dataset_with_the_cache_gives_the_same_batches(task_rows, processor, tmp_path):
    cache = open_image_cache([task_rows["planning"]], processor, tmp_path / "train")
    joined = {**task_rows, "qa": join_keyframes(task_rows["qa"], task_rows["planning"])}
    plain, cached = JointDataset(joined), JointDataset(task_rows, images=cache)
    assert "images" not in cached.datasets["planning"].column_names
    collator = OccVLADataCollator(processor)
    for task in ("planning", "qa"):
        indices = [i for i, t in enumerate(plain.tasks) if t == task][:3]
        expected = collator([plain[i] for i in indices])
        batch = collator([cached[i] for i in indices])
        assert batch.keys() == expected.keys()
        for key in expected:
            assert torch.equal(batch[key], expected[key]), (task, key)


def test_the_cache_of_label_scarce_rows_serves_the_occupancy_only_rows(
    task_rows, processor, training_data_dir, tmp_path
):
    planning = task_rows["planning"]
    unlabelled = {1, 3, len(planning) - 1}
    planning = planning.add_column("labelled", [index not in unlabelled for index in range(len(planning))])
    scarce = {**task_rows, "planning": planning}
    occupancy = load_configs(training_data_dir, ["occupancy"])["occupancy"]["mini_train"]
    cache = open_image_cache([planning], processor, tmp_path / "train")
    scarce["qa"] = join_keyframes(scarce["qa"], planning)  # the uncached side reads the QA rows' images by joining
    plain, cached = JointDataset(scarce, occupancy), JointDataset(scarce, occupancy, images=cache)
    assert cached.row_counts["planning_occupancy_only"] == cached.occupancy_only_rows == len(unlabelled)
    pairs = [(0, partner) for partner in range(len(unlabelled))]  # labelled row 0 with each occupancy-only row
    only = [dataset[pair][1] for dataset in (plain, cached) for pair in pairs]
    assert not any(row["labelled"] for row in only)
    collator = OccVLADataCollator(processor)
    expected, batch = collator(only[: len(pairs)]), collator(only[len(pairs) :])
    assert batch.keys() == expected.keys() and (batch["labels"] == -100).all()
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key


def test_cache_is_checked_against_the_processor_and_the_rows(task_rows, processor, tmp_path):
    path = tmp_path / "train"
    build_image_cache([task_rows["planning"]], processor, path)
    other = copy.deepcopy(processor)
    other.image_processor.size = {"height": 32, "width": 32}
    with pytest.raises(ValueError, match="made with image settings"):
        ImageCache(path, other)
    with pytest.raises(ValueError, match="no cached images for 1 sample tokens, e.g. 'missing'"):
        ImageCache(path, processor).check(["missing"])
    with pytest.raises(FileNotFoundError, match="no image cache index"):
        ImageCache(tmp_path / "none", processor)
    (path / INDEX_FILE).unlink()  # interrupted before the index: built again
    assert len(open_image_cache([task_rows["planning"]], processor, path)) == len(ImageCache(path, processor))
    assert json.loads((path / INDEX_FILE).read_text())["settings"]["height"] == processor.image_processor.size["height"]


def test_recipe_with_the_image_cache_trains_on_the_same_losses(tiny_recipe, tmp_path):
    decoded = copy.deepcopy(tiny_recipe)
    decoded["training"].update(max_steps=3, per_device_train_batch_size=2, output_dir=str(tmp_path / "decoded"))
    decoded["data"]["tasks"] = ["planning"]  # every batch has every term
    cached = copy.deepcopy(decoded)
    cached["training"]["output_dir"] = str(tmp_path / "cached")
    cached["image_cache"] = str(tmp_path / "images")
    cached["normalize_images_on_device"] = True
    logs = {}
    for name, recipe in (("decoded", decoded), ("cached", cached)):
        history = train_joint(recipe).log_history
        logs[name] = [entry for entry in history if "loss" in entry and "train_loss" not in entry]
    assert (tmp_path / "images" / "mini_train" / INDEX_FILE).is_file()
    assert len(logs["cached"]) == len(logs["decoded"]) == 3
    for plain, with_cache in zip(logs["decoded"], logs["cached"]):
        assert plain.keys() == with_cache.keys()
        for key in ("loss", "lm_loss", "trajectory_loss", "occupancy_latent_loss"):
            assert with_cache[key] == pytest.approx(plain[key], rel=1e-5), key


def test_command_line_builds_then_checks_each_split(training_data_dir, processor, tmp_path):
    from occvla_hf.training.image_cache import main

    processor.save_pretrained(tmp_path / "processor")
    argv = [str(training_data_dir), str(tmp_path / "processor"), str(tmp_path / "images"), "--split", "mini_train"]
    main(argv)
    cache = ImageCache(tmp_path / "images" / "mini_train", processor)
    main(argv)  # present: opened and checked, not rebuilt
    assert ImageCache(tmp_path / "images" / "mini_train", processor).rows == cache.rows
    with pytest.raises(ValueError, match="--split: 'test' is not a split of the planning config"):
        main([*argv[:3], "--split", "test"])
