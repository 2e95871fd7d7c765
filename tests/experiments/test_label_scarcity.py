"""The label-scarce split: which scenes keep their labels (deterministic, order-free, the documented hash), and what
the thinned dataset configs hold."""

from __future__ import annotations

import hashlib

import pytest
from datasets import Dataset, DatasetDict

from occvla_hf.experiments.label_scarcity import LABEL_FRACTION, label_scarce_configs, labelled_scenes

SCENES = [f"scene-{index:04d}" for index in range(300)]


def test_labelled_scenes_are_the_documented_ten_percent() -> None:
    keep = labelled_scenes(SCENES, fraction=LABEL_FRACTION, seed=0)
    expected = sorted(SCENES, key=lambda name: hashlib.sha256(f"0/{name}".encode()).hexdigest())[:30]
    assert keep == frozenset(expected) and len(keep) == 30


def test_labelled_scenes_are_deterministic_and_ignore_order_and_repeats() -> None:
    keep = labelled_scenes(SCENES, seed=3)
    assert labelled_scenes(SCENES, seed=3) == keep
    assert labelled_scenes(list(reversed(SCENES)) + SCENES[:50], seed=3) == keep
    assert labelled_scenes(SCENES, seed=4) != keep
    assert len(labelled_scenes(SCENES[:3], fraction=0.1)) == 1  # at least one scene


def test_bad_fractions_and_empty_inputs_are_named() -> None:
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            labelled_scenes(SCENES, fraction=fraction)
    with pytest.raises(ValueError, match="scene_names"):
        labelled_scenes([])


def rows(scenes: list[str], per_scene: int, kind: str) -> Dataset:
    names = [scene for scene in scenes for _ in range(per_scene)]
    return Dataset.from_dict({"scene_name": names, "sample_token": [f"{kind}-{i}" for i in range(len(names))]})


@pytest.fixture
def configs() -> dict[str, DatasetDict]:
    train, val = SCENES[:40], SCENES[40:45]
    return {
        "planning": DatasetDict({"train": rows(train, 4, "p"), "val": rows(val, 4, "pv")}),
        "qa": DatasetDict({"train": rows(train, 6, "q"), "val": rows(val, 6, "qv")}),
        "occupancy": DatasetDict({"train": rows(train, 4, "o"), "val": rows(val, 4, "ov")}),
    }


def test_label_scarce_configs_thin_the_training_labels_only(configs) -> None:
    scarce = label_scarce_configs(configs, "train", seed=1)
    keep = labelled_scenes(SCENES[:40], seed=1)
    assert len(keep) == 4
    for name, per_scene in (("planning", 4), ("qa", 6)):
        kept = scarce[name]["train"]
        assert set(kept["scene_name"]) == keep and len(kept) == per_scene * len(keep)
        assert scarce[name]["val"]["sample_token"] == configs[name]["val"]["sample_token"]
    assert scarce["occupancy"] is configs["occupancy"]  # occupancy on every keyframe
    again = label_scarce_configs(configs, "train", seed=1)
    assert again["planning"]["train"]["sample_token"] == scarce["planning"]["train"]["sample_token"]
    assert again["qa"]["train"]["sample_token"] == scarce["qa"]["train"]["sample_token"]


def test_label_scarce_configs_need_the_planning_split(configs) -> None:
    with pytest.raises(ValueError, match="planning config with a 'test' split"):
        label_scarce_configs(configs, "test")
