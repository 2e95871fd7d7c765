"""One loader for every holder of the dataset configs: a build folder (Arrow or Parquet), a save_to_disk folder of one
config, a Hub id; errors name what was found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from datasets import DatasetDict

from occvla_hf.data.load import ARROW_DIR, load_configs, load_split, pick_split


def test_build_folder_arrow_and_parquet_give_the_same_rows(training_data_dir: Path, tmp_path: Path):
    arrow = load_configs(training_data_dir)
    parquet_only = tmp_path / "parquet"
    shutil.copytree(training_data_dir, parquet_only, ignore=shutil.ignore_patterns(ARROW_DIR))
    parquet = load_configs(parquet_only, ["planning"])
    assert set(arrow) >= {"planning", "qa", "occupancy"}
    for split, rows in arrow["planning"].items():
        assert parquet["planning"][split]["sample_token"] == rows["sample_token"]


def test_one_config_folder_is_read_as_that_config(training_data_dir: Path):
    folder = training_data_dir / ARROW_DIR / "occupancy"
    rows = load_split(folder, "occupancy", "mini_train")
    assert rows["sample_token"] == load_configs(training_data_dir)["occupancy"]["mini_train"]["sample_token"]
    with pytest.raises(ValueError, match="name exactly one"):
        load_configs(folder)


def test_the_default_split_is_the_validation_split(training_data_dir: Path):
    splits = load_configs(training_data_dir)["planning"]
    assert load_split(training_data_dir, "planning")["sample_token"] == splits["mini_val"]["sample_token"]
    with pytest.raises(ValueError, match=r"expected exactly one validation split of \('mini_val', 'val'\)"):
        pick_split(DatasetDict(train=splits["mini_train"]), None, "planning of a train-only folder")
    assert pick_split(splits, "mini_train", "planning")[0] == "mini_train"


def test_errors_name_the_source_the_configs_and_the_splits(training_data_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"split: 'planning' of .* has splits \['mini_train', 'mini_val'\]"):
        load_split(training_data_dir, "planning", "val")
    with pytest.raises(ValueError, match="configs: expected a non-empty subset"):
        load_configs(training_data_dir, ["planing"])
    with pytest.raises(FileNotFoundError, match="no dataset under"):
        load_configs(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a dataset folder"):
        load_configs(tmp_path / "absent" / "deeper" / "folder")
    with pytest.raises(ValueError, match="name the configs"):
        load_configs("user/dataset")
