"""OccVLADataCollator: padding and stacking processed samples, occupancy targets, dataset rows through the
processor."""

from __future__ import annotations

import pytest
import torch

from occvla_hf.training.collator import OccVLADataCollator
from tests.conftest import TINY_GRID, tiny_config
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


def test_collator_drops_occupancy_unless_every_sample_has_it_and_rejects_partial_inputs():
    config = tiny_config()
    with_occupancy, without = planning_sample(config, 0), planning_sample(config, 1)
    del without["occupancy"], without["occupancy_mask"]
    batch = OccVLADataCollator(pad_token_id=0)([with_occupancy, without])
    assert "occupancy" not in batch and "occupancy_mask" not in batch
    assert "trajectory" in batch
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
