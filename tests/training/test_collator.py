"""OccVLADataCollator: padding and stacking processed samples, occupancy targets, dataset rows through the
processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occvla_hf.modeling.loss import loss_item_counts
from occvla_hf.modeling.modeling_occvla import OccVLAForPlanning
from occvla_hf.training.collator import OCCUPANCY_INPUTS, OccVLADataCollator
from tests.conftest import TINY_GRID, StandInOccupancyVAE, tiny_config
from tests.training.conftest import dataset_rows, planning_sample, row_model_and_processor


def test_collator_pads_processed_samples_on_the_right_and_stacks_targets():
    config = tiny_config()
    short, long = planning_sample(config, 0), planning_sample(config, 2, answer_length=4)
    batch = OccVLADataCollator(pad_token_id=0)([short, {key: value[None] for key, value in long.items()}])
    length = long["input_ids"].shape[0]
    pad = length - short["input_ids"].shape[0]
    assert pad > 0 and batch["input_ids"].shape == (2, length)
    assert batch["input_ids"][0, -pad:].tolist() == [0] * pad
    assert batch["attention_mask"][0, -pad:].tolist() == [0] * pad
    assert batch["labels"][0, -pad:].tolist() == [-100] * pad
    assert batch["token_type_ids"][0, -pad:].tolist() == [0] * pad
    torch.testing.assert_close(batch["input_ids"][1], long["input_ids"])
    assert batch["pixel_values"].shape == (2, *short["pixel_values"].shape)
    assert batch["occupancy"].shape == (2, *TINY_GRID) and batch["occupancy"].dtype == torch.uint8
    assert batch["trajectory_mask"].dtype == torch.bool
    padded = OccVLADataCollator(pad_token_id=0, pad_to_multiple_of=16)([short, long])
    assert padded["input_ids"].shape[1] % 16 == 0


def test_collator_keeps_occupancy_of_a_partly_labelled_batch_and_rejects_partial_inputs():
    config = tiny_config()
    with_occupancy, without = planning_sample(config, 0), planning_sample(config, 1)
    del without["occupancy"], without["occupancy_mask"]
    batch = OccVLADataCollator(pad_token_id=0)([with_occupancy, without])
    assert batch["occupancy_sample_mask"].tolist() == [True, False]
    assert not batch["occupancy_mask"][1].any() and "trajectory" in batch
    del with_occupancy["occupancy"], with_occupancy["occupancy_mask"]
    unlabelled = OccVLADataCollator(pad_token_id=0)([with_occupancy, without])
    assert not set(OCCUPANCY_INPUTS) & set(unlabelled)
    with_occupancy = planning_sample(config, 0)
    del without["ego_status"]
    with pytest.raises(ValueError, match="ego_status"):
        OccVLADataCollator(pad_token_id=0)([with_occupancy, without])
    with pytest.raises(ValueError, match="pad_token_id"):
        OccVLADataCollator()([with_occupancy])


def test_collator_runs_dataset_rows_through_the_processor():
    _, processor = row_model_and_processor()
    planning = dataset_rows(2, "planning")
    batch = OccVLADataCollator(processor)(planning)
    expected = processor.from_rows(planning, task="planning", training=True)
    assert set(batch) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(batch[key], value)
    ablation = OccVLADataCollator(processor, occupancy_supervision=False)(planning)
    assert "occupancy" not in ablation and "occupancy_mask" not in ablation
    qa = OccVLADataCollator(processor)(dataset_rows(2, "qa"))
    assert "trajectory" not in qa and (qa["labels"] != -100).any()
    with pytest.raises(ValueError, match="mixes the tasks"):
        OccVLADataCollator(processor)(dataset_rows(1, "qa") + dataset_rows(1, "planning"))
    with pytest.raises(ValueError, match="remove_unused_columns"):
        OccVLADataCollator(processor)([{"images": planning[0]["images"]}])


@pytest.mark.parametrize("missing", [[0], [1], [0, 2]], ids=["first", "middle", "two"])
@pytest.mark.parametrize("kind", ["grids", "latents"])
def test_rows_without_occupancy_mask_only_themselves_out_of_the_batch(missing: list[int], kind: str):
    _, processor = row_model_and_processor()
    rows = dataset_rows(3, "planning")
    if kind == "latents":
        rows = [{**row, "occupancy_latent": np.full((4, 8, 8), float(i), np.float32)} for i, row in enumerate(rows)]
    for index in missing:
        for key in ("semantics", "mask_camera", "occupancy_latent"):
            rows[index].pop(key, None)
    batch = OccVLADataCollator(processor)(rows)
    has_targets = [index not in missing for index in range(3)]
    assert batch["occupancy_sample_mask"].tolist() == has_targets
    assert batch["occupancy"].shape[0] == 3 and batch["occupancy_mask"].shape[0] == 3
    for index in missing:
        assert not batch["occupancy_mask"][index].any()
    if kind == "latents":
        expected = [0.0 if index in missing else float(index) for index in range(3)]
        assert batch["occupancy_latents"][:, 0, 0, 0].tolist() == expected
    counts = loss_item_counts(batch)
    assert counts["occupancy_latent_loss"] == sum(has_targets)
    assert counts["occupancy_voxel_loss"] == sum(int(rows[i]["mask_camera"].sum()) for i in range(3) if has_targets[i])


def test_occupancy_terms_of_a_partly_labelled_batch_equal_those_of_its_labelled_samples():
    torch.manual_seed(0)
    config = tiny_config(occupancy_voxel_loss_weight=0.5)
    model = OccVLAForPlanning(config).eval()
    model.set_occupancy_vae(StandInOccupancyVAE())
    samples = [planning_sample(config, index) for index in range(3)]
    del samples[1]["occupancy"], samples[1]["occupancy_mask"]
    collator = OccVLADataCollator(pad_token_id=0)
    with torch.no_grad():
        mixed = model(**collator(samples))
        labelled = model(**collator([samples[0], samples[2]]))
    for term in ("occupancy_latent_loss", "occupancy_voxel_loss"):
        assert getattr(mixed, term) is not None
        torch.testing.assert_close(getattr(mixed, term), getattr(labelled, term), rtol=1e-4, atol=1e-5)


def test_unlabelled_rows_are_occupancy_only_and_leave_the_task_terms_to_the_labelled_rows():
    model, processor = row_model_and_processor()
    rows = dataset_rows(4, "planning")
    rows = [{**row, "labelled": index % 2 == 0} for index, row in enumerate(rows)]
    batch = OccVLADataCollator(processor)(rows)
    unlabelled = torch.tensor([False, True, False, True])
    assert (batch["labels"][unlabelled] == -100).all() and (batch["labels"][~unlabelled] != -100).any(dim=1).all()
    assert not batch["trajectory_mask"][unlabelled].any() and batch["trajectory_mask"][~unlabelled].all()
    assert "occupancy_sample_mask" not in batch  # every row has its occupancy target
    for index in (1, 3):
        torch.testing.assert_close(batch["occupancy"][index], torch.from_numpy(rows[index]["semantics"]))
        torch.testing.assert_close(batch["occupancy_mask"][index], torch.from_numpy(rows[index]["mask_camera"]))
    counts = loss_item_counts(batch)
    assert counts["occupancy_latent_loss"] == 4 and counts["trajectory_loss"] == 12
    model.eval()
    with torch.no_grad():
        mixed = model(**batch)
        labelled = model(**OccVLADataCollator(processor)([rows[0], rows[2]]))
    for term in ("lm_loss", "trajectory_loss"):
        torch.testing.assert_close(getattr(mixed, term), getattr(labelled, term), rtol=1e-4, atol=1e-6)
    latents = [{**row, "occupancy_latent": np.ones((4, 8, 8), np.float32)} for row in rows]
    assert OccVLADataCollator(processor)(latents)["occupancy_latents"].shape == (4, 4, 8, 8)


def test_an_all_unlabelled_batch_has_a_finite_loss_and_no_lm_or_trajectory_gradient():
    model, processor = row_model_and_processor()
    rows = [{**row, "labelled": False} for row in dataset_rows(3, "planning")]
    batch = OccVLADataCollator(processor)(rows)
    assert (batch["labels"] == -100).all() and not batch["trajectory_mask"].any()
    counts = loss_item_counts(batch)
    assert counts["lm_loss"] == 0 and counts["trajectory_loss"] == 0 and counts["occupancy_latent_loss"] == 3
    model.train()
    outputs = model(**batch)
    assert torch.isfinite(outputs.loss) and outputs.lm_loss == 0 and outputs.trajectory_loss == 0
    weights = model.config.occupancy_loss_weight * model.config.occupancy_latent_loss_weight
    torch.testing.assert_close(outputs.loss, weights * outputs.occupancy_latent_loss)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    for term in ("lm_loss", "trajectory_loss"):
        grads = torch.autograd.grad(getattr(outputs, term), parameters, retain_graph=True, allow_unused=True)
        assert all(grad is None or not grad.any() for grad in grads), term
    occupancy_grads = torch.autograd.grad(outputs.loss, parameters, retain_graph=True, allow_unused=True)
    assert any(grad is not None and grad.any() for grad in occupancy_grads)
    # As the trainer calls it: each term normalised over the accumulated batch's items, absent terms left out.
    totals = {**{name: float(count) for name, count in counts.items()}, "lm_loss": 5.0, "trajectory_loss": 6.0}
    scaled = model(**batch, loss_item_totals=totals)
    torch.testing.assert_close(scaled.loss, weights * scaled.occupancy_latent_loss)
