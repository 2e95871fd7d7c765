"""Stage 1: dataset loading, class weights, a short real training run, the recipe loader and `occvla-hf train`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Array3D, Dataset, DatasetDict, Features, Value
from transformers import TrainingArguments

from occvla_hf.cli import main
from occvla_hf.constants import NUM_OCC_CLASSES, OCC_CLASS_NAMES, OCC_FREE_CLASS, OCC_GRID_SHAPE
from occvla_hf.data.occ3d import encode_mask, encode_semantics
from occvla_hf.evaluation.occupancy import OccupancyMetricAccumulator
from occvla_hf.modeling.configuration_occupancy_vae import OccupancyVAEConfig
from occvla_hf.modeling.occupancy_vae import OccupancyVAE
from occvla_hf.training.recipe import apply_overrides, load_recipe
from occvla_hf.training.vae import (
    METRICS_FILE,
    class_voxel_counts,
    class_weights_from_counts,
    collate_occupancy,
    load_occupancy_dataset,
    train_from_config,
    train_vae,
)

GRID = (32, 32, 8)
ROAD, SIDEWALK, CAR, MANMADE, VEGETATION = (
    OCC_CLASS_NAMES.index(name) for name in ("driveable_surface", "sidewalk", "car", "manmade", "vegetation")
)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tiny convolutions gain nothing from a second thread, while on a busy (or xdist-shared) CPU the threads'
    spin-waits multiply the wall time (measured 14 s vs 122 s for the training run): run them on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def structured_grids(num: int, seed: int, grid: tuple[int, int, int] = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Street scenes: sidewalk ground plane with a road band, cars on the road, buildings beside it, a tree crown.

    Returns semantics (num, X, Y, Z) uint8 and a camera mask (num, X, Y, Z) bool (the lower six layers).
    """
    rng = np.random.default_rng(seed)
    size_x, size_y, size_z = grid
    semantics = np.full((num, *grid), OCC_FREE_CLASS, dtype=np.uint8)
    for scene in semantics:
        scene[:, :, 0] = SIDEWALK
        road_start, road_width = int(rng.integers(4, size_y // 2)), int(rng.integers(8, 14))
        scene[:, road_start : road_start + road_width, 0] = ROAD
        for _ in range(int(rng.integers(1, 4))):
            x, y = int(rng.integers(0, size_x - 6)), int(rng.integers(road_start, road_start + road_width - 3))
            scene[x : x + 6, y : y + 3, 1:3] = CAR
        for _ in range(int(rng.integers(1, 3))):
            x = int(rng.integers(0, size_x - 8))
            if rng.random() < 0.5:
                y = int(rng.integers(0, max(1, road_start - 6)))
            else:
                y = int(rng.integers(min(road_start + road_width, size_y - 6), size_y - 5))
            scene[x : x + 8, y : y + 5, 1 : int(rng.integers(4, size_z))] = MANMADE
        x, y = int(rng.integers(0, size_x - 4)), int(rng.integers(0, size_y - 4))
        scene[x : x + 4, y : y + 4, 3:6] = VEGETATION
    mask_camera = np.zeros(semantics.shape, dtype=bool)
    mask_camera[..., :6] = True
    return semantics, mask_camera


def occupancy_dataset(num: int, seed: int) -> Dataset:
    """Rows like the `occupancy` config (fixed-shape arrays), plus a column the loader must drop."""
    semantics, mask_camera = structured_grids(num, seed)
    features = Features(
        {
            "sample_token": Value("string"),
            "semantics": Array3D(GRID, "uint8"),
            "mask_camera": Array3D(GRID, "bool"),
        }
    )
    columns = {"sample_token": [f"t{i}" for i in range(num)], "semantics": semantics, "mask_camera": mask_camera}
    return Dataset.from_dict(columns, features=features)


def tiny_model_config(**overrides) -> OccupancyVAEConfig:
    kwargs = {
        "grid_shape": GRID,
        "class_embedding_dim": 4,
        "block_channels": (16, 32),
        "num_res_blocks": 1,
        "norm_num_groups": 8,
        "latent_channels": 8,
        "codebook_size": 64,
    }
    kwargs.update(overrides)
    return OccupancyVAEConfig(**kwargs)


def test_class_weights_from_counts_are_enet_weights():
    weights = class_weights_from_counts([0, 50, 50])
    np.testing.assert_allclose(weights, [1 / np.log(1.02), 1 / np.log(1.52), 1 / np.log(1.52)])
    with pytest.raises(ValueError, match="counts: expected non-negative voxel counts"):
        class_weights_from_counts([0, 0])


def test_class_voxel_counts_sum_every_grid():
    rows = load_occupancy_dataset(occupancy_dataset(3, seed=0))
    semantics, _ = structured_grids(3, seed=0)
    expected = np.bincount(semantics.reshape(-1), minlength=NUM_OCC_CLASSES)
    np.testing.assert_array_equal(class_voxel_counts(rows, NUM_OCC_CLASSES), expected)
    assert class_voxel_counts(rows, NUM_OCC_CLASSES, max_samples=1).sum() == np.prod(GRID)


def test_loader_reads_array_columns_and_picks_dataset_dict_splits():
    dataset = DatasetDict({"train": occupancy_dataset(2, seed=0), "val": occupancy_dataset(1, seed=1)})
    rows = load_occupancy_dataset(dataset, "train")
    assert rows.column_names == ["voxels", "mask_camera"]
    batch = collate_occupancy([rows[0], rows[1]])
    semantics, mask_camera = structured_grids(2, seed=0)
    assert batch["voxels"].dtype == torch.uint8 and batch["mask_camera"].dtype == torch.bool
    np.testing.assert_array_equal(batch["voxels"].numpy(), semantics)
    np.testing.assert_array_equal(batch["mask_camera"].numpy(), mask_camera)
    with pytest.raises(ValueError, match=r"split: expected one of \['train', 'val'\]"):
        load_occupancy_dataset(dataset, "mini_train")
    with pytest.raises(ValueError, match="dataset: missing occupancy columns"):
        load_occupancy_dataset(Dataset.from_dict({"semantics": [[0]]}))


def test_loader_decodes_grids_stored_as_compressed_bytes():
    generator = np.random.default_rng(0)
    semantics = generator.integers(0, NUM_OCC_CLASSES, OCC_GRID_SHAPE).astype(np.uint8)
    mask_camera = generator.random(OCC_GRID_SHAPE) > 0.5
    stored = Dataset.from_dict(
        {"semantics": [encode_semantics(semantics)], "mask_camera": [encode_mask(mask_camera)]},
        features=Features({"semantics": Value("binary"), "mask_camera": Value("binary")}),
    )
    batch = collate_occupancy([load_occupancy_dataset(stored)[0]])
    np.testing.assert_array_equal(batch["voxels"][0].numpy(), semantics)
    np.testing.assert_array_equal(batch["mask_camera"][0].numpy(), mask_camera)


def trivial_baselines(semantics: np.ndarray, mask_camera: np.ndarray, train_semantics: np.ndarray) -> dict[str, float]:
    """Camera-mask mIoU of predicting all free, and of the training set's majority class at each height."""
    all_free = OccupancyMetricAccumulator()
    all_free.update(np.full_like(semantics, OCC_FREE_CLASS), semantics, mask_camera)
    per_height = np.array(
        [np.bincount(train_semantics[..., z].ravel(), minlength=NUM_OCC_CLASSES).argmax() for z in range(GRID[2])]
    )
    height_majority = OccupancyMetricAccumulator()
    height_majority.update(np.broadcast_to(per_height, semantics.shape).astype(np.uint8), semantics, mask_camera)
    return {"all_free": all_free.compute().miou, "height_majority": height_majority.compute().miou}


def test_training_raises_reconstruction_miou_well_above_trivial_baselines(tmp_path):
    train_rows, eval_rows = occupancy_dataset(64, seed=0), occupancy_dataset(16, seed=1)
    args = TrainingArguments(
        output_dir=str(tmp_path / "vae"),
        max_steps=200,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    result = train_vae(train_rows, training_args=args, model_config=tiny_model_config(), eval_dataset=eval_rows)

    eval_semantics, eval_mask = structured_grids(16, seed=1)
    baselines = trivial_baselines(eval_semantics, eval_mask, structured_grids(64, seed=0)[0])
    assert max(baselines.values()) < 0.2
    assert result.metrics["camera_miou"] > max(baselines.values()) + 0.4
    assert result.metrics["camera_iou"] > 0.8
    report = json.loads((result.output_dir / METRICS_FILE).read_text())
    assert report["split"] == "eval" and report["camera_miou"] == pytest.approx(result.metrics["camera_miou"])
    voxels = report["num_samples"] * GRID[0] * GRID[1] * GRID[2]  # every voxel of the scored grids
    assert sum(count["gt"] for count in report["voxel_counts"].values()) == voxels
    logged_terms = {key for entry in result.log_history for key in entry}
    assert {"loss", "ce_loss", "lovasz_loss", "commitment_loss", "perplexity"} <= logged_terms


def write_tiny_recipe(tmp_path: Path, stage_key: bool = True) -> Path:
    """A `save_to_disk` DatasetDict of structured grids and a recipe training a tiny VAE on it."""
    DatasetDict({"train": occupancy_dataset(4, seed=0), "val": occupancy_dataset(2, seed=1)}).save_to_disk(
        str(tmp_path / "occupancy")
    )
    path = tmp_path / "vae_tiny.yaml"
    path.write_text(
        ("stage: vae\n" if stage_key else "")
        + f"""dataset: {tmp_path / "occupancy"}
eval_split: val
class_weights: frequency
model:
  grid_shape: [32, 32, 8]
  class_embedding_dim: 4
  block_channels: [8, 16]
  num_res_blocks: 1
  norm_num_groups: 4
  latent_channels: 4
  codebook_size: 16
training:
  output_dir: {tmp_path / "run"}
  max_steps: 50
  per_device_train_batch_size: 2
  learning_rate: 1e-3
  save_strategy: "no"
  report_to: none
  use_cpu: true
  disable_tqdm: true
"""
    )
    return path


def test_cli_trains_from_a_tiny_yaml_taking_the_stage_from_the_file(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["train", "--config", str(recipe), "--training.max_steps", "3", "--model.latent_type=kl"]) == 0
    model = OccupancyVAE.from_pretrained(tmp_path / "run")
    assert model.config.latent_type == "kl" and model.config.grid_shape == GRID
    assert len(model.config.class_weights) == NUM_OCC_CLASSES  # filled from class frequencies
    report = json.loads((tmp_path / "run" / METRICS_FILE).read_text())
    assert report["split"] == "eval" and report["num_samples"] == 2 and 0.0 <= report["camera_iou"] <= 1.0


def test_cli_stage_argument_runs_a_recipe_without_stage_key(tmp_path):
    recipe = write_tiny_recipe(tmp_path, stage_key=False)
    assert main(["train", "vae", "--config", str(recipe), "--training.max_steps", "1", "--eval_split", "null"]) == 0
    assert json.loads((tmp_path / "run" / METRICS_FILE).read_text())["split"] == "train"


def test_cli_rejects_a_recipe_without_stage_and_a_bad_override(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, stage_key=False)
    with pytest.raises(SystemExit):
        main(["train", "--config", str(recipe)])
    assert "(argument or `stage:` key), got None" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "vae", "--config", str(recipe), "max_steps=3"])
    assert "override: expected --section.key VALUE, got 'max_steps=3'" in capsys.readouterr().err


def test_load_recipe_parses_override_values_as_yaml_and_checks_the_stage(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("stage: vae\nmodel:\n  latent_type: vq\ntraining:\n  learning_rate: 1e-3\n")
    recipe = load_recipe(
        path, ["--training.learning_rate", "2e-4", "--model.block_channels", "[8, 16]", "--training.bf16=true"]
    )
    assert recipe["training"] == {"learning_rate": 2e-4, "bf16": True}
    assert recipe["model"] == {"latent_type": "vq", "block_channels": [8, 16]}
    assert load_recipe(path, stage="vae")["stage"] == "vae"
    with pytest.raises(ValueError, match="stage: the command asks for 'joint' but"):
        load_recipe(path, stage="joint")
    with pytest.raises(ValueError, match="override --model: missing value"):
        apply_overrides({}, ["--model"])
    with pytest.raises(TypeError, match="override --stage.x: stage is not a section"):
        apply_overrides({"stage": "vae"}, ["--stage.x", "1"])


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"dataset": "d", "epochs": 3}, r"vae recipe: unknown keys \['epochs'\]"),
        ({"dataset": "d", "model": {"latent": "vq"}}, r"model: unknown OccupancyVAEConfig fields \['latent'\]"),
        ({"dataset": "d", "training": {}}, "training.output_dir: required"),
        (
            {
                "dataset": "d",
                "class_weights": "frequency",
                "model": {"class_weights": [1.0]},
                "training": {"output_dir": "o"},
            },
            "class_weights: 'frequency' computes model.class_weights",
        ),
        ({"stage": "joint", "dataset": "d"}, "stage: this recipe trains 'vae'"),
    ],
)
def test_vae_recipe_rejects_bad_keys_before_loading_data(recipe, message):
    with pytest.raises(ValueError, match=message):
        train_from_config(recipe)


def test_shipped_vae_recipe_builds_valid_model_and_training_configs():
    recipe = load_recipe(REPO_ROOT / "configs" / "vae.yaml")
    assert recipe["stage"] == "vae" and recipe["class_weights"] == "frequency"
    config = OccupancyVAEConfig(**recipe["model"])
    assert config.latent_shape == (128, 50, 50)
    arguments = TrainingArguments(**{**recipe["training"], "bf16": False})  # bf16 needs a GPU
    assert arguments.learning_rate == pytest.approx(1e-3)


def test_train_vae_rejects_grids_of_another_shape_than_the_config(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"train_dataset: semantics grids are \(32, 32, 8\), the model config expects"):
        train_vae(
            occupancy_dataset(1, seed=0), training_args=args, model_config=tiny_model_config(grid_shape=(16, 16, 8))
        )


def test_stage1_runs_on_the_occupancy_config_built_from_the_sim(training_data_dir, tmp_path):
    """End to end on the real storage format: `occvla-hf data build` output (compressed Occ3D grids, mini splits)."""
    occupancy = training_data_dir / "arrow" / "occupancy"
    args = TrainingArguments(
        output_dir=str(tmp_path / "vae"),
        max_steps=1,
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    config = OccupancyVAEConfig(  # Lovasz off: sorting 1.3 M voxels per class dominates a CPU step
        class_embedding_dim=1,
        block_channels=(4, 4, 4),
        num_res_blocks=1,
        norm_num_groups=2,
        latent_channels=4,
        lovasz_weight=0.0,
    )
    result = train_vae(
        occupancy,
        training_args=args,
        model_config=config,
        eval_dataset=occupancy,
        train_split="mini_train",
        eval_split="mini_val",
        max_eval_samples=1,
    )
    report = json.loads((result.output_dir / METRICS_FILE).read_text())
    assert report["split"] == "eval" and report["num_samples"] == 1
    assert 0.0 <= result.metrics["camera_iou"] <= 1.0 and 0.0 <= result.metrics["iou"] <= 1.0


def test_occupancy_rows_load_from_a_build_folder_or_its_arrow_folder(training_data_dir):
    """The VAE stage reads what the docs say: an `occvla-hf data build` folder, or its `arrow/occupancy`."""
    whole = load_occupancy_dataset(training_data_dir, "mini_train")
    arrow = load_occupancy_dataset(training_data_dir / "arrow" / "occupancy", "mini_train")
    assert len(whole) == len(arrow) > 0
    assert (whole[0]["voxels"] == arrow[0]["voxels"]).all()
