"""Batched evaluation of an OccVLA checkpoint on the `planning`, `qa` and `occupancy` dataset configs.

Each function runs the model greedily (deterministic) over a dataset split and returns a JSON-ready report built by
the metric accumulators of this package; `occvla-hf eval` is a thin layer over them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..data.occ3d import decode_occupancy
from ..data.schema import agent_boxes_arrays
from ..modeling import OccVLAForPlanning, load_pretrained
from ..processing import OccVLAProcessor
from .baselines import constant_velocity_trajectories
from .occupancy import OccupancyMetricAccumulator
from .planning import PlanningMetricAccumulator
from .qa import QAAccuracyAccumulator

# Prompt under which occupancy is decoded: the occupancy rows carry no question, and the queries read only images.
OCCUPANCY_PROMPT_QUESTION = "What is around the ego vehicle?"


def load_model_and_processor(
    model_path: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[OccVLAForPlanning, OccVLAProcessor]:
    """Checkpoint folder (or Hub id) -> model in eval mode on `device` (bf16 on GPU by default) and its processor."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = load_pretrained(OccVLAForPlanning, model_path, dtype=dtype).to(device).eval()
    return model, OccVLAProcessor.from_pretrained(model_path)


def _batches(dataset: Dataset, batch_size: int, description: str) -> Iterator[dict[str, list]]:
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    for start in tqdm(range(0, len(dataset), batch_size), desc=description, unit="batch"):
        yield dataset[start : start + batch_size]


def model_inputs(inputs: Any, model: OccVLAForPlanning) -> dict[str, torch.Tensor]:
    """The processor outputs the model takes at inference (no targets), on its device, images and ego status in its
    dtype."""
    keys = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "ego_status", "ego_history")
    moved = {key: inputs[key].to(model.device) for key in keys if key in inputs}
    for key in ("pixel_values", "ego_status", "ego_history"):
        if key in moved:
            moved[key] = moved[key].to(model.dtype)
    return moved


def row_agents(row: Mapping[str, Any]) -> dict[str, Any]:
    """`evaluate_planning_sample`'s agent arguments of one planning row: boxes, categories and instances at the 6
    future steps (entry 0 of the agent columns, the current keyframe, gives only `current_instances`)."""
    instances = [list(step) for step in row["agent_instances"]]
    return {
        "agent_boxes": agent_boxes_arrays(row["agent_boxes"])[1:],
        "agent_categories": [list(step) for step in row["agent_categories"]][1:],
        "agent_instances": instances[1:],
        "current_instances": frozenset(instances[0]),
    }


def planning_targets(rows: Mapping[str, Sequence[Any]] | Dataset) -> dict[str, Any]:
    """`PlanningMetricAccumulator.update`'s targets of planning rows (a column batch or a Dataset): logged waypoints,
    the other agents (`row_agents`, per sample) and the meta-actions."""
    columns = ("agent_boxes", "agent_categories", "agent_instances")
    agents = [row_agents(dict(zip(columns, values))) for values in zip(*(rows[c] for c in columns))]
    targets = {"gt": np.asarray(rows["trajectory"], dtype=np.float32), "meta_actions": list(rows["meta_action"])}
    for key in ("agent_boxes", "agent_categories", "agent_instances", "current_instances"):
        targets[key] = [sample[key] for sample in agents]
    return targets


@torch.inference_mode()
def evaluate_planning(
    model: OccVLAForPlanning,
    processor: OccVLAProcessor,
    dataset: Dataset,
    *,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    normalization: str = "valid_steps",
) -> dict[str, Any]:
    """L2 and collision (ST-P3 and UniAD protocols, per meta-action) plus meta-action accuracy on planning rows.

    A processor with `planning_target="reasoning"` plans with `reasoning=True` (the meta-action follows the
    reasoning); `max_new_tokens` None takes `plan`'s default for that target.
    Rows without a valid future step are skipped (counted in `skipped_no_future`); `normalization` is
    `PlanningMetricAccumulator`'s.
    """
    if model.config.use_ego_status != processor.use_ego_status:
        raise ValueError(
            f"use_ego_status: the model says {model.config.use_ego_status}, the processor {processor.use_ego_status}"
        )
    accumulator = PlanningMetricAccumulator(normalization)
    correct = total = skipped = 0
    for batch in _batches(dataset, batch_size, "planning"):
        masks = np.asarray(batch["trajectory_mask"], dtype=bool)
        keep = [i for i in range(len(masks)) if masks[i].any()]
        skipped += len(masks) - len(keep)
        if not keep:
            continue
        rows = {name: [values[i] for i in keep] for name, values in batch.items()}
        inputs = processor.from_rows(rows, task="planning", training=False)
        plan = model.plan(
            **model_inputs(inputs, model),
            tokenizer=processor.tokenizer,
            max_new_tokens=max_new_tokens,
            reasoning=processor.planning_target == "reasoning",
        )
        accumulator.update(pred=plan.trajectory.float().cpu().numpy(), mask=masks[keep], **planning_targets(rows))
        correct += sum(p == t for p, t in zip(plan.meta_action, rows["meta_action"], strict=True))
        total += len(keep)
    report = accumulator.compute()
    report["meta_action_accuracy_pct"] = 100.0 * correct / total
    report["skipped_no_future"] = skipped
    return report


def evaluate_constant_velocity(dataset: Dataset, *, normalization: str = "valid_steps") -> dict[str, Any]:
    """`evaluate_planning`'s L2 and collision report (both protocols) of the constant-velocity baseline
    (`baselines.constant_velocity_trajectories` of the rows' raw ego status, zero where a row marks it invalid, as at
    a scene's first keyframe) on the rows `evaluate_planning` scores: those with a valid future step."""
    rows = dataset.select(np.flatnonzero(np.asarray(dataset["trajectory_mask"], dtype=bool).any(axis=1)))
    ego_status = np.asarray(rows["ego_status"], dtype=np.float32) * np.asarray(rows["ego_status_valid"], dtype=bool)
    accumulator = PlanningMetricAccumulator(normalization)
    accumulator.update(
        pred=constant_velocity_trajectories(ego_status),
        mask=np.asarray(rows["trajectory_mask"], dtype=bool),
        **planning_targets(rows),
    )
    return accumulator.compute()


@torch.inference_mode()
def evaluate_qa(
    model: OccVLAForPlanning,
    processor: OccVLAProcessor,
    dataset: Dataset,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 8,
) -> dict[str, Any]:
    """nuScenes-QA accuracy (overall, per hop, per question type) of greedy answers."""
    accumulator = QAAccuracyAccumulator()
    for batch in _batches(dataset, batch_size, "qa"):
        inputs = processor.from_rows(batch, task="qa", training=False)
        generated = model.generate(**model_inputs(inputs, model), max_new_tokens=max_new_tokens, do_sample=False)
        answers = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        accumulator.update(
            [answer.strip() for answer in answers], batch["answer"], batch["template_type"], batch["num_hop"]
        )
    return accumulator.compute()


@torch.inference_mode()
def evaluate_occupancy(
    model: OccVLAForPlanning,
    processor: OccVLAProcessor,
    dataset: Dataset,
    *,
    batch_size: int = 4,
) -> dict[str, Any]:
    """Occ3D mIoU / IoU of the occupancy decoded from the occupancy queries through the frozen VAE decoder
    (`predict_occupancy`)."""
    check_occupancy_modules(model)
    accumulator = OccupancyMetricAccumulator()
    for batch in _batches(dataset, batch_size, "occupancy"):
        batch = decode_occupancy(batch)
        accumulator.update(
            predict_occupancy(model, processor, batch["images"]),
            torch.as_tensor(np.stack(batch["semantics"])),
            torch.as_tensor(np.stack(batch["mask_camera"])),
        )
    return {"num_samples": accumulator.num_samples, **accumulator.summary()}


def check_occupancy_modules(model: OccVLAForPlanning) -> None:
    """ValueError unless `model` can decode occupancy: it has the occupancy queries and head and carries the VAE."""
    if model.occupancy_head is None or model.occupancy_vae is None:
        missing = "occupancy head" if model.occupancy_head is None else "occupancy VAE"
        raise ValueError(
            f"model: predicted occupancy needs the occupancy head and the frozen VAE, this checkpoint has no "
            f"{missing} (an inference export, or trained without a VAE)"
        )


@torch.inference_mode()
def predict_occupancy(
    model: OccVLAForPlanning, processor: OccVLAProcessor, images: Sequence[Sequence[Any]]
) -> torch.Tensor:
    """(batch, X, Y, Z) int64 class ids on CPU: the occupancy the model's queries predict for `images` (batch x six
    camera views), decoded by its frozen VAE (argmax of the voxel logits). The queries read only the images."""
    check_occupancy_modules(model)
    inputs = processor(images=list(images), question=[OCCUPANCY_PROMPT_QUESTION] * len(images))
    return model(**model_inputs(inputs, model), return_occupancy=True).occupancy_logits.argmax(dim=1).cpu()
