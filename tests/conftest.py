"""Shared fixtures: tiny random OccVLA configs and a stand-in occupancy VAE (tests only)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from occvla_hf.constants import OCC_GRID_SHAPE
from occvla_hf.modeling import OccupancyVAE, OccupancyVAEConfig, OccVLAConfig, OccVLAForPlanning
from occvla_hf.processing import OccVLAProcessor, build_tokenizer

TINY_GRID = (16, 16, 4)  # (X, Y, Z) voxels of the tiny occupancy grids
TINY_VOCAB = 64
TINY_IMAGE_TOKEN = 62
TINY_TRAJ_TOKEN = 63
IMAGE_SIZE_PX = 28
SIM_VERSION = "v1.0-mini"


# The tiny configs' Gemma-like text model (vocab_size: the tiny vocabulary; tokenizer tests override it).
TINY_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "gemma",
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "vocab_size": TINY_VOCAB,
}


def tiny_config(num_views: int = 2, **overrides) -> OccVLAConfig:
    """A few-thousand-parameter OccVLA: 28 px images (4 tokens per view), 2-layer SigLIP and Gemma, width 32."""
    kwargs = dict(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=28,
            patch_size=14,
            vision_use_head=False,
        ),
        text_config=dict(TINY_TEXT_CONFIG),
        image_token_id=TINY_IMAGE_TOKEN,
        traj_token_id=TINY_TRAJ_TOKEN,
        num_views=num_views,
        num_occupancy_queries_hw=(2, 2),
        occupancy_latent_shape=(4, 8, 8),
        occupancy_head_hidden_size=16,
        trajectory_head_hidden_size=16,
    )
    kwargs.update(overrides)
    return OccVLAConfig(**kwargs)


class StandInOccupancyVAE(nn.Module):
    """Minimal `encode(voxels)->latent`, `decode(latent)->logits` module for the tiny (16, 16, 4) grid."""

    def __init__(self, num_classes: int = 18, channels: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = nn.Conv2d(num_classes * TINY_GRID[2], channels, kernel_size=2, stride=2)
        self.decoder = nn.ConvTranspose2d(channels, num_classes * TINY_GRID[2], kernel_size=2, stride=2)

    def encode(self, voxels: torch.Tensor) -> torch.Tensor:
        """(B, 16, 16, 4) class ids -> (B, channels, 8, 8)."""
        one_hot = F.one_hot(voxels.long(), self.num_classes).float()  # (B, X, Y, Z, K)
        return self.encoder(one_hot.permute(0, 3, 4, 1, 2).flatten(1, 2))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, channels, 8, 8) -> (B, K, 16, 16, 4) logits."""
        out = self.decoder(latent)  # (B, Z * K, X, Y)
        batch, _, x, y = out.shape
        return out.view(batch, TINY_GRID[2], self.num_classes, x, y).permute(0, 2, 3, 4, 1)


def tiny_occupancy_vae(latent_type: str = "kl", seed: int = 0) -> OccupancyVAE:
    """A real (untrained) OccupancyVAE over the tiny (16, 16, 4) grid with the tiny config's (4, 8, 8) latent."""
    torch.manual_seed(seed)
    config = OccupancyVAEConfig(
        grid_shape=TINY_GRID,
        class_embedding_dim=2,
        block_channels=(4, 4),
        num_res_blocks=1,
        norm_num_groups=2,
        latent_channels=4,
        latent_type=latent_type,
        codebook_size=16,
    )
    return OccupancyVAE(config).eval()


def tiny_model_with_tokenizer(vae: nn.Module) -> tuple[OccVLAForPlanning, OccVLAProcessor]:
    """A tiny 6-view model (seed 0, eval mode) sized for the package's tokenizer (300-token vocabulary), with `vae`
    attached, and its `OccVLAProcessor`: what planning from images and text needs."""
    tokenizer = build_tokenizer(vocab_size=300)
    config = tiny_config(
        num_views=6,
        text_config={**TINY_TEXT_CONFIG, "vocab_size": len(tokenizer)},
        image_token_id=tokenizer.image_token_id,
        traj_token_id=tokenizer.traj_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = OccVLAForPlanning(config).eval()
    model.set_occupancy_vae(vae)
    return model, OccVLAProcessor.from_model_config(config, tokenizer)


def make_batch(config: OccVLAConfig, batch: int = 2, text_length: int = 6, planning: bool = True, seed: int = 0):
    """Random inputs in the processor's layout: images, bos + prompt (+ <traj>), right-padded second sample."""
    generator = torch.Generator().manual_seed(seed)
    num_image_tokens = config.num_views * config.image_seq_length
    prompt = torch.randint(2, TINY_IMAGE_TOKEN - 1, (batch, text_length), generator=generator)
    if planning:
        prompt[:, -1] = config.traj_token_id
    image = torch.full((batch, num_image_tokens), config.image_token_id)
    input_ids = torch.cat([image, prompt], dim=1)
    attention_mask = torch.ones_like(input_ids)
    size = config.vision_config.image_size
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": torch.randn(batch, config.num_views, 3, size, size, generator=generator),
        "ego_status": torch.randn(batch, config.ego_status_dim, generator=generator),
    }


@pytest.fixture
def tiny_model() -> OccVLAForPlanning:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config())
    model.set_occupancy_vae(StandInOccupancyVAE())
    return model.eval()


# ------------------------------------------------------------------ sim dataset folder, tiny VAE, stage-2 recipe


@pytest.fixture(scope="session")
def sim_dataroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sim generator's `tiny` preset (scene-0061 / mini_train and scene-0103 / mini_val, 6 keyframes each,
    160 x 90 images) with Occ3D labels (`gts/`) and nuScenes-QA files (`nuscenes_qa/`). Read-only for tests."""
    from occvla_hf.sim import generate_dataset

    root = tmp_path_factory.mktemp("sim_dataroot")
    generate_dataset(root, preset="tiny", seed=0, version=SIM_VERSION, progress=False)
    return root


@pytest.fixture(scope="session")
def training_data_dir(sim_dataroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sim_dataroot` built into the planning / qa / occupancy configs and saved like `occvla-hf data build`."""
    from occvla_hf.data.hub import build_dataset, save_dataset

    root = tmp_path_factory.mktemp("sim_data")
    built = build_dataset(
        sim_dataroot,
        SIM_VERSION,
        occ3d_root=sim_dataroot / "gts",
        qa_root=sim_dataroot / "nuscenes_qa",
        cache_dir=root / "cache",
    )
    return save_dataset(built, root / "data", version=SIM_VERSION, image_mode="path")


def full_grid_vae_config(latent_type: str = "kl") -> OccupancyVAEConfig:
    """A tiny VAE config over the Occ3D grid (200, 200, 16) with a (4, 25, 25) latent."""
    return OccupancyVAEConfig(
        grid_shape=OCC_GRID_SHAPE,
        class_embedding_dim=1,
        block_channels=(4, 4, 4, 4),
        num_res_blocks=1,
        norm_num_groups=2,
        latent_channels=4,
        latent_type=latent_type,
        codebook_size=32,
    )


@pytest.fixture(scope="session")
def occupancy_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained VAE checkpoint over the Occ3D grid: latent (4, 25, 25)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("occupancy_vae")
    OccupancyVAE(full_grid_vae_config("kl")).save_pretrained(path)
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
    "text_config": {key: value for key, value in TINY_TEXT_CONFIG.items() if key != "vocab_size"},
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


def static_decode_step_kwargs(model, inputs: dict) -> dict:
    """The keyword arguments of the first decoding step of a static-cache `generate` of `model` (OccVLA or a
    transformers model) on `inputs`, with a copy of its cache."""
    captured: list[dict] = []

    def record(module, args, kwargs) -> None:
        if kwargs["input_ids"].shape[1] == 1 and not captured:
            captured.append({**kwargs, "cache": copy.deepcopy(kwargs["cache"])})

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, cache_implementation="static")
    finally:
        handle.remove()
    return captured[0]
