"""The label-scarce split: which scenes keep their labels (deterministic, order-free, the documented hash), what the
copy of the dataset configs holds (every planning row, marked, the labels of the other scenes withheld), and the joint
recipe trained on it with and without occupancy supervision."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from datasets import Array2D, Dataset, DatasetDict, Features, List, Value

from occvla_hf.class_labels import label_names
from occvla_hf.constants import LABELLED_COLUMN
from occvla_hf.data.schema import labelled_mask
from occvla_hf.experiments.label_scarcity import (
    LABEL_FRACTION,
    WITHHELD_LABELS,
    label_scarce_configs,
    labelled_scenes,
)

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
    columns = {"scene_name": names, "sample_token": [f"{kind}-{i}" for i in range(len(names))]}
    if kind.startswith("p"):  # planning rows carry the task labels a label-scarce copy withholds
        columns.update(
            trajectory=[np.full((6, 2), 1.0 + i, np.float32) for i in range(len(names))],
            trajectory_mask=[[True] * 6] * len(names),
            meta_action=["keep, straight"] * len(names),
            reasoning=["Objects: none."] * len(names),
        )
    features = Features(
        {
            "scene_name": Value("string"),
            "sample_token": Value("string"),
            **(
                {
                    "trajectory": Array2D((6, 2), "float32"),
                    "trajectory_mask": List(Value("bool"), length=6),
                    "meta_action": Value("string"),
                    "reasoning": Value("string"),
                }
                if kind.startswith("p")
                else {}
            ),
        }
    )
    return Dataset.from_dict(columns, features=features)


@pytest.fixture
def configs() -> dict[str, DatasetDict]:
    train, val = SCENES[:40], SCENES[40:45]
    return {
        "planning": DatasetDict({"train": rows(train, 4, "p"), "val": rows(val, 4, "pv")}),
        "qa": DatasetDict({"train": rows(train, 6, "q"), "val": rows(val, 6, "qv")}),
        "occupancy": DatasetDict({"train": rows(train, 4, "o"), "val": rows(val, 4, "ov")}),
    }


def test_label_scarce_configs_withhold_the_labels_of_the_other_scenes(configs) -> None:
    scarce = label_scarce_configs(configs, "train", seed=1)
    keep = labelled_scenes(SCENES[:40], seed=1)
    assert len(keep) == 4
    planning, original = scarce["planning"]["train"], configs["planning"]["train"]
    assert planning["sample_token"] == original["sample_token"]  # every keyframe stays, its inputs with it
    labelled = labelled_mask(planning)
    assert labelled.tolist() == [scene in keep for scene in original["scene_name"]] and labelled.sum() == 16
    arrays, before = planning.with_format("numpy")[:], original.with_format("numpy")[:]
    assert not arrays["trajectory"][~labelled].any() and not arrays["trajectory_mask"][~labelled].any()
    assert set(arrays["meta_action"][~labelled]) == set(arrays["reasoning"][~labelled]) == {""}
    for name in WITHHELD_LABELS:  # the labelled rows keep theirs
        np.testing.assert_array_equal(arrays[name][labelled], before[name][labelled])
    assert planning.features == Features({**original.features, LABELLED_COLUMN: Value("bool")})
    validation = scarce["planning"]["val"]
    assert validation["sample_token"] == configs["planning"]["val"]["sample_token"] and all(validation["labelled"])
    kept = scarce["qa"]["train"]
    assert set(kept["scene_name"]) == keep and len(kept) == 6 * len(keep)
    assert scarce["qa"]["val"]["sample_token"] == configs["qa"]["val"]["sample_token"]
    assert scarce["occupancy"] is configs["occupancy"]  # occupancy on every keyframe
    again = label_scarce_configs(configs, "train", seed=1)
    assert again["planning"]["train"]["labelled"] == planning["labelled"]
    assert again["qa"]["train"]["sample_token"] == kept["sample_token"]


def test_label_scarce_configs_need_the_planning_split_and_unmarked_rows(configs) -> None:
    with pytest.raises(ValueError, match="planning config with a 'test' split"):
        label_scarce_configs(configs, "test")
    with pytest.raises(ValueError, match="already have a 'labelled' column"):
        label_scarce_configs(label_scarce_configs(configs, "train"), "train")


# ------------------------------------------------------------------------------------ training on the copy


@pytest.fixture(scope="module")
def label_scarce_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny sim scenes (two of mini_train, one of mini_val) built and saved as a label-scarce copy that labels
    one of the two training scenes."""
    from occvla_hf.data.hub import build_dataset, save_dataset
    from occvla_hf.sim import generate_dataset
    from tests.conftest import SIM_VERSION

    root = tmp_path_factory.mktemp("label_scarce")
    generate_dataset(root / "sim", preset="tiny", num_scenes=3, seed=0, version=SIM_VERSION, progress=False)
    built = build_dataset(
        root / "sim", SIM_VERSION, occ3d_root=root / "sim" / "gts", qa_root=root / "sim" / "nuscenes_qa",
        cache_dir=root / "cache",
    )  # fmt: skip
    assert len(set(built["planning"]["mini_train"]["scene_name"])) == 2
    scarce = label_scarce_configs(built, "mini_train", fraction=0.5)
    return save_dataset(scarce, root / "data", version=SIM_VERSION, image_mode="path")


@pytest.mark.slow
def test_train_joint_on_label_scarce_data_pairs_the_labelled_rows_with_occupancy_only_rows(
    label_scarce_data: Path, occupancy_vae_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from occvla_hf.data.load import load_configs
    from occvla_hf.training.joint import train_joint
    from tests.conftest import TINY_MODEL_CONFIG

    data = load_configs(label_scarce_data)
    planning, qa = data["planning"]["mini_train"], data["qa"]["mini_train"]
    labelled = labelled_mask(planning)
    with_future = np.array([name != "" for name in label_names("meta_action", planning["meta_action"])])
    assert 0 < labelled.sum() < len(planning)
    labelled_tokens = set(np.asarray(planning["sample_token"])[labelled])
    assert len(qa) > 0 and set(qa["sample_token"]) <= labelled_tokens  # the QA rows of the labelled scene alone
    counts = {
        "occ": f"planning {int((labelled & with_future).sum())} labelled + {int((~labelled).sum())} occupancy-only",
        "no_occ": f"planning {int((labelled & with_future).sum())} labelled + 0 occupancy-only",
    }
    epochs = {}
    for name, supervised in (("occ", True), ("no_occ", False)):
        recipe = {
            "stage": "joint",
            "model": {"config": TINY_MODEL_CONFIG},
            "occupancy_vae": str(occupancy_vae_dir),
            "occupancy_supervision": supervised,
            "occupancy_latent_cache": str(tmp_path / "latents"),  # both caches hold the unlabelled keyframes
            "image_cache": str(tmp_path / "images"),
            "data": {
                "path": str(label_scarce_data),
                "tasks": ["planning"],  # every step a planning batch
                "train_split": "mini_train",
                "eval_split": "mini_train",
            },
            "training": {
                "output_dir": str(tmp_path / name),
                "max_steps": 4,
                "per_device_train_batch_size": 3,
                "learning_rate": 1.0e-3,
                "logging_steps": 1,
                "save_strategy": "no",
                "report_to": "none",
                "use_cpu": True,
                "disable_tqdm": True,
                "seed": 0,
            },
        }
        result = train_joint(recipe)
        assert f"training rows (mini_train): {counts[name]}\n" in capsys.readouterr().out
        steps = [entry for entry in result.log_history if "loss" in entry]
        assert len(steps) == 4 and all(np.isfinite(entry["loss"]) for entry in steps)
        assert all(("occupancy_latent_loss" in entry) == supervised for entry in steps)
        # the same labelled rows in both, with their occupancy-only rows alongside: every batch has task targets
        assert all("trajectory_loss" in entry and "lm_loss" in entry for entry in steps)
        epochs[name] = [entry["epoch"] for entry in steps]
        assert np.isfinite(result.metrics["eval_stp3_l2_avg_m"])  # scored on the labelled rows alone
    assert epochs["occ"] == epochs["no_occ"]  # as many passes over the labelled rows
