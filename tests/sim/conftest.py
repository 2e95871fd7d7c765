"""Fixtures of the sim tests: one generated dataroot per session, its devkit view and the world state behind it."""

from __future__ import annotations

from pathlib import Path

import pytest
from nuscenes.nuscenes import NuScenes

from occvla_hf.sim import SimConfig, generate_dataset
from occvla_hf.sim.generate import GenerationSummary, dataset_scene
from occvla_hf.sim.scene import Scene

VERSION = "v1.0-mini"
SEED = 6
NUM_SCENES = 2
# 240 x 135 images, 4 s scenes (8 keyframes): big enough for pixel checks, small enough to build in seconds.
CONFIG = SimConfig(scale=0.15, scene_duration_s=4.0, lidar_azimuth_steps=256, questions_per_keyframe=12)


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    root = tmp_path_factory.mktemp("sim_dataroot")
    return generate_dataset(root, num_scenes=NUM_SCENES, seed=SEED, version=VERSION, config=CONFIG, progress=False)


@pytest.fixture(scope="session")
def dataroot(generated: GenerationSummary) -> Path:
    return generated.dataroot


@pytest.fixture(scope="session")
def nusc(dataroot: Path) -> NuScenes:
    return NuScenes(VERSION, str(dataroot), verbose=False)


@pytest.fixture(scope="session")
def scenes() -> list[Scene]:
    """The simulated world state of every generated scene, in scene order."""
    return [dataset_scene(SEED, i, CONFIG) for i in range(NUM_SCENES)]
