"""The OccVLA training loss: its terms, their weights and their normalisation, in one place.

    loss = lm_loss + trajectory_loss_weight * trajectory_loss
           + occupancy_loss_weight * (occupancy_latent_loss_weight * occupancy_latent_loss
                                      + occupancy_voxel_loss_weight * occupancy_voxel_loss)

Each term is a mean over its own items (`loss_item_counts`): predicted answer tokens, valid waypoints, samples with
occupancy targets, visible voxels. `OccVLAForPlanning.forward` returns the terms of its batch and their weighted
total (`weighted_loss`). Given the item counts of a larger batch the micro-batch is part of (`item_totals`, e.g. all
micro-batches of one optimiser step on all processes), each term is scaled by `items here / items in total` instead:
the micro-batch losses then add up to the loss of the large batch, and a term absent from a micro-batch (QA rows have
no trajectory) does not dilute the others. Data-parallel training averages gradients over processes, so a trainer
multiplies that loss by the number of processes (as `transformers.Trainer` does with `num_items_in_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..constants import IGNORE_INDEX
from .configuration_occvla import OccVLAConfig

# The occupancy supervision's terms, and every `OccVLAOutput` field combined into the loss, in summation (and
# logging) order.
OCCUPANCY_LOSS_TERMS: tuple[str, ...] = ("occupancy_latent_loss", "occupancy_voxel_loss")
LOSS_TERMS: tuple[str, ...] = ("lm_loss", "trajectory_loss", *OCCUPANCY_LOSS_TERMS)


def loss_item_counts(batch: Mapping[str, Any]) -> dict[str, int]:
    """Items each loss term averages over in a collated batch (the model's inputs).

    `lm_loss`: predicted label tokens (`labels[:, 1:] != -100`, the causal shift); `trajectory_loss`: valid waypoints;
    `occupancy_latent_loss`: samples with occupancy targets (grids or cached latents); `occupancy_voxel_loss`: voxels
    inside `occupancy_mask` (all voxels without a mask). With `occupancy_sample_mask` (batch,) only the samples it
    marks (those with targets) count, for both occupancy terms. A term without targets in the batch counts 0.
    """
    counts = dict.fromkeys(LOSS_TERMS, 0)
    labels = batch.get("labels")
    if labels is not None:
        counts["lm_loss"] = int((labels[:, 1:] != IGNORE_INDEX).sum())
    trajectory = batch.get("trajectory")
    if trajectory is not None:
        mask = batch.get("trajectory_mask")
        counts["trajectory_loss"] = int(mask.sum()) if mask is not None else trajectory.shape[0] * trajectory.shape[1]
    occupancy, latents = batch.get("occupancy"), batch.get("occupancy_latents")
    samples = batch.get("occupancy_sample_mask")
    if latents is not None or occupancy is not None:
        num_samples = (latents if latents is not None else occupancy).shape[0]
        counts["occupancy_latent_loss"] = int(samples.sum()) if samples is not None else num_samples
    if occupancy is not None:
        mask = batch.get("occupancy_mask")
        voxels = torch.ones_like(occupancy, dtype=torch.bool) if mask is None else mask.bool()
        if samples is not None:
            voxels = voxels & samples.bool().view(-1, *([1] * (voxels.dim() - 1)))
        counts["occupancy_voxel_loss"] = int(voxels.sum())
    return counts


def loss_weights(config: OccVLAConfig, occupancy_loss_weight: float | None = None) -> dict[str, float]:
    """Weight of each term of `LOSS_TERMS` in the loss; `occupancy_loss_weight` replaces the config's (a trainer's
    schedule sets it per optimiser step)."""
    occupancy = config.occupancy_loss_weight if occupancy_loss_weight is None else occupancy_loss_weight
    return {
        "lm_loss": 1.0,
        "trajectory_loss": config.trajectory_loss_weight,
        "occupancy_latent_loss": occupancy * config.occupancy_latent_loss_weight,
        "occupancy_voxel_loss": occupancy * config.occupancy_voxel_loss_weight,
    }


def weighted_loss(
    terms: Mapping[str, torch.Tensor | None],
    weights: Mapping[str, float],
    item_counts: Mapping[str, int] | None = None,
    item_totals: Mapping[str, float] | None = None,
) -> torch.Tensor | None:
    """Sum of `weights[name] * terms[name]` over the terms that are present, in `LOSS_TERMS` order; None if none is.

    With `item_totals` (and this batch's `item_counts`), each term is scaled by `item_counts[name] /
    item_totals[name]`, and terms without items in this batch are left out.
    """
    if (item_counts is None) != (item_totals is None):
        raise ValueError("item_counts/item_totals: give both (normalise over a larger batch) or neither")
    loss = None
    for name in LOSS_TERMS:
        value = terms.get(name)
        if value is None or (item_counts is not None and item_counts[name] == 0):
            continue
        weight = weights[name] if item_totals is None else weights[name] * (item_counts[name] / item_totals[name])
        term = weight * value
        loss = term if loss is None else loss + term
    return loss


__all__ = ["IGNORE_INDEX", "LOSS_TERMS", "OCCUPANCY_LOSS_TERMS", "loss_item_counts", "loss_weights", "weighted_loss"]
