"""The processor's output runs through the model: planning (plan), QA (generate) and a training batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.processing import OccVLAProcessor
from occvla_hf.reasoning import split_reasoning
from tests.conftest import TINY_GRID, StandInOccupancyVAE, tiny_model_with_tokenizer


@pytest.fixture(scope="module")
def model_and_processor() -> tuple[OccVLAForPlanning, OccVLAProcessor]:
    return tiny_model_with_tokenizer(StandInOccupancyVAE())


def camera_images(batch: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.integers(0, 255, (30, 40, 3), dtype=np.uint8) for _ in range(6)] for _ in range(batch)]


def test_plan_on_processor_output_returns_a_planning_output(model_and_processor) -> None:
    model, processor = model_and_processor
    inputs = processor(
        images=camera_images(2),
        text=["Plan.", "Plan the next 3 seconds."],
        task="planning",
        ego_status=np.zeros((2, 6), np.float32),
    )
    assert inputs["pixel_values"].shape == (2, 6, 3, 28, 28)
    plan = model.plan(**inputs, tokenizer=processor.tokenizer, max_new_tokens=5)
    assert plan.trajectory.shape == (2, 6, 2) and torch.isfinite(plan.trajectory).all()
    assert len(plan.meta_action) == 2 and all(isinstance(text, str) for text in plan.meta_action)
    decoded = processor.post_process_plan(plan.sequences[:, inputs["input_ids"].shape[1] :], plan.trajectory)
    assert [item["meta_action"] for item in decoded] == plan.meta_action
    # Left padding must not change a sample's trajectory: plan the second sample alone.
    alone = processor(
        images=camera_images(2)[1:], text=["Plan the next 3 seconds."], task="planning", ego_status=np.zeros((1, 6))
    )
    torch.testing.assert_close(model.plan(**alone, max_new_tokens=1).trajectory, plan.trajectory[1:], atol=1e-5, rtol=0)


def test_plan_with_reasoning_returns_the_reasoning_and_the_meta_action_after_it(model_and_processor) -> None:
    model, processor = model_and_processor
    inputs = processor(images=camera_images(2), ego_status=np.zeros((2, 6), np.float32))
    plan = model.plan(**inputs, tokenizer=processor.tokenizer, max_new_tokens=12, reasoning=True)
    texts = processor.batch_decode(plan.sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert [split_reasoning(text) for text in texts] == list(zip(plan.reasoning, plan.meta_action, strict=True))
    assert model.plan(**inputs, max_new_tokens=12).reasoning is None
    torch.testing.assert_close(model.plan(**inputs, max_new_tokens=12).trajectory, plan.trajectory)
    with pytest.raises(ValueError, match="tokenizer: required with reasoning=True"):
        model.plan(**inputs, reasoning=True)


def test_static_cache_plan_with_reasoning_equals_the_dynamic_cache_plan(model_and_processor) -> None:
    model, processor = model_and_processor
    inputs = processor(images=camera_images(2), text=["Plan.", "Plan the next 3 seconds."], task="planning",
                       ego_status=np.zeros((2, 6), np.float32))  # fmt: skip
    assert not inputs["attention_mask"].all()  # left padded
    kwargs = {"tokenizer": processor.tokenizer, "max_new_tokens": 12, "min_new_tokens": 12, "reasoning": True}
    dynamic = model.plan(**inputs, **kwargs)
    static = model.plan(**inputs, **kwargs, cache_implementation="static")
    assert torch.equal(static.sequences, dynamic.sequences)
    assert (static.reasoning, static.meta_action) == (dynamic.reasoning, dynamic.meta_action)
    torch.testing.assert_close(static.trajectory, dynamic.trajectory, rtol=0, atol=1e-6)


def test_qa_generate_on_processor_output(model_and_processor) -> None:
    model, processor = model_and_processor
    inputs = processor(images=camera_images(2), question=["How many cars are there?", "Is there a bus?"])
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 4)
    assert len(processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)) == 2


def test_training_batch_from_the_processor_gives_every_loss_term(model_and_processor) -> None:
    model, processor = model_and_processor
    rng = np.random.default_rng(1)
    inputs = processor(
        images=camera_images(2),
        answer=["keep, straight", "decelerate, left turn"],
        ego_status=rng.normal(size=(2, 6)).astype(np.float32),
        trajectory=rng.normal(size=(2, 6, 2)).astype(np.float32),
        trajectory_mask=np.ones((2, 6), bool),
        occupancy=rng.integers(0, 18, (2, *TINY_GRID), dtype=np.uint8),
    )
    out = model.train()(**inputs)
    model.eval()
    for term in ("lm_loss", "trajectory_loss", "occupancy_latent_loss"):
        assert torch.isfinite(getattr(out, term)), term
