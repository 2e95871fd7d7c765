"""Fixtures of the training tests.

* `planning_sample`: one per-sample processor output for `tests.conftest.tiny_config` models (answers, trajectories
  and occupancy targets a model can learn).
* `training_data_dir`: the sim generator's `tiny` preset built into a dataset folder in the `occvla-hf data build`
  layout (planning / qa / occupancy configs), and `occupancy_vae_dir`, a tiny stage-1 VAE checkpoint for its Occ3D
  grids; with `tiny_recipe` they run the stage-2 recipe in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from occvla_hf.constants import OCC_FREE_CLASS, OCC_GRID_SHAPE
from occvla_hf.modeling import OccVLAConfig
from occvla_hf.modeling.configuration_occupancy_vae import OccupancyVAEConfig
from occvla_hf.modeling.occupancy_vae import OccupancyVAE
from tests.conftest import TINY_GRID, TINY_IMAGE_TOKEN

IMAGE_SIZE_PX = 28
SIM_VERSION = "v1.0-mini"
ANSWER_TOKENS = (10, 11, 12, 13, 14, 15)  # answer vocabulary of `planning_sample` (below the special tokens)
EOS = 1
CAR_CLASS = 4
GROUND_CLASS = 11


def planning_sample(config: OccVLAConfig, index: int, answer_length: int | None = None) -> dict[str, torch.Tensor]:
    """One processed planning sample: `<image>`s, bos, a prompt ending in `<traj>`, then answer + eos.

    The answer, the waypoints (constant velocity from the ego status) and the occupancy grid (a ground plane and a
    car whose position follows the sample) are deterministic functions of `index`.
    """
    generator = torch.Generator().manual_seed(index)
    num_image_tokens = config.num_views * config.image_seq_length
    prompt = torch.randint(20, TINY_IMAGE_TOKEN - 1, (3 + index % 3,), generator=generator)
    answer_length = 1 + index % 2 if answer_length is None else answer_length
    answer = torch.tensor([ANSWER_TOKENS[(index + k) % 2] for k in range(answer_length)] + [EOS])
    prefix = torch.cat(
        [torch.full((num_image_tokens,), config.image_token_id), torch.tensor([2]), prompt,
         torch.tensor([config.traj_token_id])]
    )  # fmt: skip
    input_ids = torch.cat([prefix, answer])
    ego_status = torch.randn(config.ego_status_dim, generator=generator)
    steps = torch.arange(1, config.num_waypoints + 1, dtype=torch.float32).unsqueeze(-1)
    occupancy = torch.full(TINY_GRID, OCC_FREE_CLASS, dtype=torch.uint8)
    occupancy[..., 0] = GROUND_CLASS
    occupancy[index % 8 : index % 8 + 4, 4:8, 1:3] = CAR_CLASS
    size = config.vision_config.image_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.cat([torch.zeros_like(prefix), torch.ones_like(answer)]),
        "labels": torch.cat([torch.full_like(prefix, -100), answer]),
        "pixel_values": torch.randn(config.num_views, 3, size, size, generator=generator),
        "ego_status": ego_status,
        "trajectory": steps * torch.stack([1.0 + ego_status[0].abs(), 0.2 * ego_status[1]]),
        "trajectory_mask": torch.arange(config.num_waypoints) < config.num_waypoints - index % 3,
        "occupancy": occupancy,
        "occupancy_mask": torch.rand(TINY_GRID, generator=generator) < 0.7,
    }


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny models run an order of magnitude faster than with two on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------ dataset folder for the recipe


@pytest.fixture(scope="session")
def training_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` sim preset (scenes scene-0061 / mini_train and scene-0103 / mini_val, 6 keyframes each, 160 x 90
    images) built into the planning / qa / occupancy configs and saved like `occvla-hf data build` does."""
    from occvla_hf.data.hub import build_dataset, save_dataset  # imported here: the VAE tests share this conftest
    from occvla_hf.sim.generate import generate_dataset

    root = tmp_path_factory.mktemp("sim")
    generate_dataset(root / "dataroot", preset="tiny", seed=0, progress=False)
    built = build_dataset(
        root / "dataroot",
        SIM_VERSION,
        occ3d_root=root / "dataroot" / "gts",
        qa_root=root / "dataroot" / "nuscenes_qa",
        cache_dir=root / "cache",
    )
    return save_dataset(built, root / "data", version=SIM_VERSION, image_mode="path")


@pytest.fixture(scope="session")
def occupancy_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained VAE checkpoint over the Occ3D grid: latent (4, 25, 25)."""
    torch.manual_seed(0)
    config = OccupancyVAEConfig(
        grid_shape=OCC_GRID_SHAPE,
        class_embedding_dim=1,
        block_channels=(4, 4, 4, 4),
        num_res_blocks=1,
        norm_num_groups=2,
        latent_channels=4,
        latent_type="kl",
    )
    path = tmp_path_factory.mktemp("occupancy_vae")
    OccupancyVAE(config).save_pretrained(path)
    return path


TINY_MODEL_CONFIG: dict[str, Any] = {
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE_PX,
        "patch_size": 14,
        "vision_use_head": False,
    },
    "text_config": {
        "model_type": "gemma",
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 8,
    },
    "num_views": 6,
    "num_occupancy_queries_hw": [5, 5],
    "occupancy_head_hidden_size": 16,
    "trajectory_head_hidden_size": 16,
}


@pytest.fixture
def tiny_recipe(training_data_dir: Path, occupancy_vae_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """A stage-2 recipe for a random tiny model on `training_data_dir` (CPU, fp32, no evaluation)."""
    return {
        "stage": "joint",
        "model": {"config": TINY_MODEL_CONFIG},
        "occupancy_vae": str(occupancy_vae_dir),
        "occupancy_supervision": True,
        "data": {
            "path": str(training_data_dir),
            "source": "sim",
            "tasks": ["planning", "qa"],
            "train_split": "mini_train",
        },
        "freeze_vision_tower": False,
        "training": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 5,
            "per_device_train_batch_size": 4,
            "learning_rate": 1.0e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "seed": 0,
        },
    }
