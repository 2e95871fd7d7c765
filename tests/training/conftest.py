"""Fixtures of the training tests.

* `planning_sample`: one per-sample processor output for `tests.conftest.tiny_config` models (answers, trajectories
  and occupancy targets a model can learn).
* `dataset_rows`, `row_model_and_processor`: random dataset rows and a tiny 6-view model with its processor, for the
  tests that feed rows through the processor.
* The sim dataset folder, tiny VAE and `tiny_recipe` fixtures live in `tests/conftest.py` (shared with the
  evaluation tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from occvla_hf.constants import OCC_FREE_CLASS
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.processing import OccVLAProcessor
from occvla_hf.training.joint import build_model_and_processor
from tests.conftest import TINY_GRID, TINY_IMAGE_TOKEN, TINY_MODEL_CONFIG, StandInOccupancyVAE

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


def dataset_rows(count: int, task: str) -> list[dict[str, Any]]:
    """`count` random dataset rows of `task` (`planning` with occupancy columns, or `qa`), six 20 x 24 images each."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        row: dict[str, Any] = {"images": [rng.integers(0, 255, (20, 24, 3), dtype=np.uint8) for _ in range(6)]}
        if task == "qa":
            row.update(question="Are there any cars?", answer="yes")
        else:
            row.update(
                ego_status=rng.normal(size=6).astype(np.float32),
                ego_status_valid=[True] * 6,
                trajectory=rng.normal(size=(6, 2)).astype(np.float32),
                trajectory_mask=[True] * 6,
                meta_action="keep, straight",
                semantics=rng.integers(0, 18, TINY_GRID, dtype=np.uint8),
                mask_camera=rng.random(TINY_GRID) < 0.5,
            )
        rows.append(row)
    return rows


def row_model_and_processor() -> tuple[OccVLAForPlanning, OccVLAProcessor]:
    """A tiny 6-view model and its processor (package tokenizer) for tests that feed dataset rows."""
    torch.manual_seed(0)
    section = {"config": {**TINY_MODEL_CONFIG, "num_occupancy_queries_hw": [2, 2], "occupancy_latent_shape": [4, 8, 8]}}
    model, processor, _ = build_model_and_processor(section)
    model.set_occupancy_vae(StandInOccupancyVAE())
    return model, processor


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny models run an order of magnitude faster than with two on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
