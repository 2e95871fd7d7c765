"""Pipelines on the embedded model and a sim keyframe: `image-text-to-text` answers a plain question (and a chat) as
`generate` does on the processor's QA input; `driving-planning` returns what `model.plan` returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import pipeline

from occvla_hf.constants import CAMERA_NAMES
from occvla_hf.data.load import load_split
from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.pipelines import PLANNING_TASK, DrivingPlanningPipeline
from occvla_hf.pretrained import EMBEDDED_MODEL_PATH
from occvla_hf.processing import OccVLAProcessor

QUESTION = "How many cars are to the front left of me?"
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def embedded() -> tuple[OccVLAForPlanning, OccVLAProcessor]:
    return OccVLAForPlanning.from_pretrained(EMBEDDED_MODEL_PATH).eval(), OccVLAProcessor.from_pretrained(
        EMBEDDED_MODEL_PATH
    )


@pytest.fixture(scope="module")
def planning_rows(training_data_dir: Path) -> list[dict[str, Any]]:
    split = load_split(training_data_dir, "planning", "mini_val")
    return [split[index] for index in range(2)]


def _answer(model: OccVLAForPlanning, processor: OccVLAProcessor, **inputs: Any) -> str:
    batch = processor(**inputs)
    with torch.inference_mode():
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return processor.post_process_image_text_to_text(generated[:, batch["input_ids"].shape[1] :])[0]


def test_image_text_to_text_pipeline_answers_a_plain_question(embedded, planning_rows) -> None:
    model, processor = embedded
    images = planning_rows[0]["images"]
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    out = pipe(images=images, text=QUESTION, max_new_tokens=MAX_NEW_TOKENS, return_full_text=False)
    assert out[0]["generated_text"] == _answer(model, processor, images=images, text=QUESTION)


def test_image_text_to_text_pipeline_chat_uses_the_qa_prompt(embedded, planning_rows) -> None:
    model, processor = embedded
    images = planning_rows[0]["images"]
    chat = [{"role": "user", "content": [*({"type": "image", "image": view} for view in images)]}]
    chat[0]["content"].append({"type": "text", "text": QUESTION})
    pipe = pipeline("image-text-to-text", model=str(EMBEDDED_MODEL_PATH))
    out = pipe(text=chat, max_new_tokens=MAX_NEW_TOKENS)
    reply = out[0]["generated_text"][-1]
    assert reply["role"] == "assistant"
    assert reply["content"] == _answer(model, processor, images=images, question=QUESTION)


def test_driving_planning_pipeline_returns_the_plan(embedded, planning_rows) -> None:
    model, processor = embedded
    planner = pipeline(PLANNING_TASK, model=str(EMBEDDED_MODEL_PATH))
    assert isinstance(planner, DrivingPlanningPipeline)
    row = planning_rows[0]
    expected_inputs = processor(
        images=row["images"], ego_status=row["ego_status"], ego_status_valid=np.asarray(row["ego_status_valid"])
    )
    plan = model.plan(**expected_inputs, tokenizer=processor.tokenizer)
    for result in (
        planner(row["images"], ego_status=row["ego_status"], ego_status_valid=np.asarray(row["ego_status_valid"])),
        planner(row),  # a planning row as it is
        planner(
            dict(zip(CAMERA_NAMES, row["images"])),
            ego_status=row["ego_status"],
            ego_status_valid=row["ego_status_valid"],
        ),
    ):
        assert set(result) == {"meta_action", "trajectory"}
        assert result["meta_action"] == plan.meta_action[0]
        assert result["trajectory"].shape == (6, 2) and result["trajectory"].dtype == np.float32
        np.testing.assert_allclose(result["trajectory"], plan.trajectory[0].numpy(), atol=1e-5, rtol=0)
    results = planner(planning_rows)
    assert len(results) == 2 and all(set(result) == {"meta_action", "trajectory"} for result in results)
    beams = planner(row, generate_kwargs={"num_beams": 2, "num_return_sequences": 2}, max_new_tokens=4)
    assert len(beams) == 2 and all(set(result) == {"meta_action", "trajectory"} for result in beams)
    with pytest.raises(ValueError, match="ego_status"):
        planner(row["images"])  # the embedded model plans with ego status
    with pytest.raises(ValueError, match="ego_status"):
        planner(row, ego_status=row["ego_status"])
