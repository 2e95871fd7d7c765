"""The OccVLA loss (`occvla_hf.modeling.loss`): item counts, weights, and normalisation over a larger batch."""

from __future__ import annotations

import pytest
import torch

from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.modeling.loss import LOSS_TERMS, loss_item_counts, loss_weights, weighted_loss
from occvla_hf.training.collator import OccVLADataCollator
from tests.conftest import StandInOccupancyVAE, tiny_config
from tests.training.conftest import planning_sample


def test_loss_item_counts_count_the_items_each_term_averages_over():
    batch = {
        "labels": torch.tensor([[-100, -100, 5, 6, 1], [-100, 7, 1, -100, -100]]),  # position 0 is never predicted
        "trajectory": torch.zeros(2, 6, 2),
        "trajectory_mask": torch.tensor([[True] * 6, [True] * 4 + [False] * 2]),
        "occupancy": torch.zeros(2, 3, 3, 2, dtype=torch.uint8),
        "occupancy_mask": torch.tensor([True, False]).repeat(18).view(2, 3, 3, 2),
    }
    assert loss_item_counts(batch) == {
        "lm_loss": 5,
        "trajectory_loss": 10,
        "occupancy_latent_loss": 2,
        "occupancy_voxel_loss": 18,
    }
    without_masks = {"trajectory": torch.zeros(3, 6, 2), "occupancy": torch.zeros(3, 2, 2, 2, dtype=torch.uint8)}
    assert loss_item_counts(without_masks) == {
        "lm_loss": 0,
        "trajectory_loss": 18,
        "occupancy_latent_loss": 3,
        "occupancy_voxel_loss": 24,
    }


def test_loss_weights_come_from_the_config_and_the_occupancy_weight_can_be_replaced():
    config = tiny_config(
        trajectory_loss_weight=0.5,
        occupancy_loss_weight=2.0,
        occupancy_latent_loss_weight=0.75,
        occupancy_voxel_loss_weight=0.25,
    )
    assert loss_weights(config) == {
        "lm_loss": 1.0,
        "trajectory_loss": 0.5,
        "occupancy_latent_loss": 1.5,
        "occupancy_voxel_loss": 0.5,
    }
    scheduled = loss_weights(config, occupancy_loss_weight=0.4)
    assert scheduled["occupancy_latent_loss"] == pytest.approx(0.3)
    assert scheduled["occupancy_voxel_loss"] == pytest.approx(0.1)
    assert scheduled["trajectory_loss"] == 0.5


def test_weighted_loss_scales_terms_by_their_share_of_the_items_and_skips_absent_ones():
    terms = {"lm_loss": torch.tensor(2.0), "trajectory_loss": torch.tensor(3.0), "occupancy_latent_loss": None}
    weights = dict.fromkeys(LOSS_TERMS, 1.0) | {"trajectory_loss": 0.5}
    assert float(weighted_loss(terms, weights)) == pytest.approx(2.0 + 0.5 * 3.0)
    counts = dict.fromkeys(LOSS_TERMS, 0) | {"lm_loss": 3}  # this batch has answer tokens but no valid waypoint
    totals = dict.fromkeys(LOSS_TERMS, 8.0)
    assert float(weighted_loss(terms, weights, counts, totals)) == pytest.approx(2.0 * 3 / 8)
    assert weighted_loss({"lm_loss": None}, weights) is None
    with pytest.raises(ValueError, match="item_counts/item_totals"):
        weighted_loss(terms, weights, item_counts=counts)


def test_micro_batch_losses_normalised_by_the_item_totals_add_up_to_the_large_batch_loss():
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config(occupancy_voxel_loss_weight=0.5, trajectory_loss_weight=0.7)).train()
    model.set_occupancy_vae(StandInOccupancyVAE())
    collate = OccVLADataCollator(pad_token_id=0)
    # Answers of 1, 2, 3 and 6 tokens and partly invalid waypoints: the halves hold unequal numbers of items.
    samples = [planning_sample(model.config, index, length) for index, length in enumerate((1, 2, 3, 6))]
    whole = collate(samples)
    halves = [collate(samples[:2]), collate(samples[2:])]
    totals = {name: float(count) for name, count in loss_item_counts(whole).items()}
    assert loss_item_counts(halves[0]) != loss_item_counts(halves[1])
    with torch.no_grad():
        expected = model(**whole, occupancy_loss_weight=0.3).loss
        parts = [model(**half, occupancy_loss_weight=0.3, loss_item_totals=totals).loss for half in halves]
        unnormalised = [model(**half, occupancy_loss_weight=0.3).loss for half in halves]
    torch.testing.assert_close(parts[0] + parts[1], expected)
    assert not torch.allclose((unnormalised[0] + unnormalised[1]) / 2, expected)  # plain means would differ
    config_weight = model(**whole).loss
    assert not torch.allclose(config_weight, expected)  # the override replaced config.occupancy_loss_weight


def test_cached_latents_alone_count_as_occupancy_targets_and_need_no_vae():
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config()).train()  # no VAE: cached latents are the targets themselves
    collate = OccVLADataCollator(pad_token_id=0)
    samples = []
    for index, length in enumerate((1, 2, 3, 6)):
        sample = planning_sample(model.config, index, length)
        del sample["occupancy"], sample["occupancy_mask"]
        sample["occupancy_latents"] = torch.randn(*model.config.occupancy_latent_shape)
        samples.append(sample)
    whole = collate(samples)
    halves = [collate(samples[:1]), collate(samples[1:])]
    counts = loss_item_counts(whole)
    assert counts["occupancy_latent_loss"] == 4 and counts["occupancy_voxel_loss"] == 0
    totals = {name: float(count) for name, count in counts.items()}
    with torch.no_grad():
        expected = model(**whole)
        parts = [model(**half, loss_item_totals=totals).loss for half in halves]
    assert expected.occupancy_latent_loss is not None and expected.occupancy_voxel_loss is None
    torch.testing.assert_close(parts[0] + parts[1], expected.loss)
    without_occupancy = {key: value for key, value in whole.items() if key != "occupancy_latents"}
    with torch.no_grad():
        assert not torch.allclose(model(**without_occupancy).loss, expected.loss)  # the latent term is in the loss
