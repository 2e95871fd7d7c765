"""Fixtures of the training tests.

* `planning_sample`: one per-sample processor output for `tests.conftest.tiny_config` models (answers, trajectories
  and occupancy targets a model can learn).
* The sim dataset folder, tiny VAE and `tiny_recipe` fixtures live in `tests/conftest.py` (shared with the
  evaluation tests).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from occvla_hf.constants import OCC_FREE_CLASS
from occvla_hf.modeling import OccVLAConfig
from tests.conftest import TINY_GRID, TINY_IMAGE_TOKEN

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
