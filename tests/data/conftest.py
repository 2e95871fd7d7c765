"""Fixtures of the data tests: one generated nuScenes-format mini dataroot per session and its built datasets.

`built_datasets` (`{config: DatasetDict}`) is also the easiest way for other tests to get real rows in the
documented row format (see `occvla_hf.data.hub`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from datasets import DatasetDict

from occvla_hf.data.hub import build_dataset, save_dataset
from occvla_hf.data.nuscenes import NuScenesReader
from tests.conftest import SIM_VERSION as VERSION


@pytest.fixture(scope="session")
def sim_root(sim_dataroot: Path) -> Path:
    """The shared tiny generated dataroot (tests/conftest.py), with Occ3D labels and nuScenes-QA files."""
    return sim_dataroot


@pytest.fixture(scope="session")
def reader(sim_root: Path) -> NuScenesReader:
    return NuScenesReader(sim_root, VERSION)


@pytest.fixture(scope="session")
def built_datasets(sim_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DatasetDict]:
    """All three configs of the sim dataroot, images as paths."""
    return build_dataset(
        sim_root,
        VERSION,
        occ3d_root=sim_root / "gts",
        qa_root=sim_root / "nuscenes_qa",
        cache_dir=tmp_path_factory.mktemp("build_cache"),
    )


@pytest.fixture(scope="session")
def saved_dir(built_datasets: dict[str, DatasetDict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`built_datasets` written by `save_dataset` (Parquet per config, Arrow copies, card)."""
    return save_dataset(built_datasets, tmp_path_factory.mktemp("saved"), version=VERSION, image_mode="path")


def linked_copy(source: Path, target: Path, *, skip: set[str] = frozenset()) -> Path:
    """`target` with a symlink to every entry of `source` except the names in `skip` (cheap editable views)."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in skip:
            os.symlink(entry, target / entry.name)
    return target
