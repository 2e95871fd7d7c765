"""Batched evaluation of an OccVLA checkpoint on the `planning`, `qa` and `occupancy` dataset configs.

Each function runs the model greedily (deterministic) over a dataset split and returns a JSON-ready report built by
the metric accumulators of this package; `occvla-hf eval` is a thin layer over them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..class_labels import label_names
from ..data.keyframes import IMAGE_COLUMN, require_images
from ..data.occ3d import decode_occupancy
from ..data.schema import agent_boxes_arrays
from ..modeling import OccVLAForPlanning, load_pretrained
from ..processing import OccVLAProcessor
from ..training.image_cache import ImageCache
from .baselines import constant_velocity_trajectories, history_constant_velocity_trajectories
from .occupancy import OccupancyMetricAccumulator
from .planning import PlanningMetricAccumulator
from .qa import QAAccuracyAccumulator

# Prompt under which occupancy is decoded: the occupancy rows carry no question, and the queries read only images.
OCCUPANCY_PROMPT_QUESTION = "What is around the ego vehicle?"
CONSTANT_VELOCITY_SOURCES: tuple[str, ...] = ("ego_status", "ego_history")  # evaluate_constant_velocity's sources


def load_model_and_processor(
    model_path: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[OccVLAForPlanning, OccVLAProcessor]:
    """Checkpoint folder (or Hub id) -> model in eval mode on `device` (bf16 on GPU by default) and its processor."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = load_pretrained(OccVLAForPlanning, model_path, dtype=dtype).to(device).eval()
    return model, OccVLAProcessor.from_pretrained(model_path)


class _PreparedBatches(torch.utils.data.Dataset):
    """Item `i`: the `i`-th slice of `batch_size` rows of `dataset` (a column batch, its `images` the keyframes'
    cached views when `images` is given) and `prepare` of it."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        prepare: Callable[[dict[str, list]], Any],
        images: ImageCache | None = None,
    ) -> None:
        if images is not None:
            images.check(dataset["sample_token"])
            dataset = dataset.select_columns([name for name in dataset.column_names if name != IMAGE_COLUMN])
        self.dataset, self.batch_size, self.prepare, self.images = dataset, batch_size, prepare, images

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[dict[str, list], Any]:
        rows = self.dataset[index * self.batch_size : (index + 1) * self.batch_size]
        if self.images is not None:  # the rows of one keyframe share its view arrays: the processor takes them once
            views = {token: self.images.views(token) for token in dict.fromkeys(rows["sample_token"])}
            rows[IMAGE_COLUMN] = [views[token] for token in rows["sample_token"]]
        return rows, self.prepare(rows)


def _as_is(item: Any) -> Any:
    return item


def prepared_batches(
    dataset: Dataset,
    batch_size: int,
    prepare: Callable[[dict[str, list]], Any],
    *,
    num_workers: int = 0,
    description: str = "batches",
    images: ImageCache | None = None,
) -> Iterator[tuple[dict[str, list], Any]]:
    """`(rows, prepare(rows))` for consecutive slices of `batch_size` rows of `dataset`, in order. With
    `num_workers` > 0, that many loader processes prepare the next batches (decode images, tokenize) while the model
    runs on this one; the results are the same. With `images` (the resized views of every row's keyframe,
    `training.image_cache`) the rows' `images` are their keyframe's cached views and the dataset's own are never read
    (QA rows need not be joined with their keyframes): nothing is decoded or resized again, the same inputs."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers: expected >= 0, got {num_workers}")
    batches = _PreparedBatches(dataset, batch_size, prepare, images)
    loader = DataLoader(batches, batch_size=None, num_workers=num_workers, collate_fn=_as_is)
    yield from tqdm(loader, desc=description, unit="batch", total=len(batches))


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
    subsets: Mapping[str, Collection[str]] | None = None,
    num_workers: int = 0,
    images: ImageCache | None = None,
) -> dict[str, Any]:
    """L2 and collision (ST-P3 and UniAD protocols, per meta-action) plus meta-action accuracy on planning rows.

    A processor with `planning_target="reasoning"` plans with `reasoning=True` (the meta-action follows the
    reasoning); `max_new_tokens` None takes `plan`'s default for that target.
    Rows without a valid future step are skipped (counted in `skipped_no_future`); `normalization` is
    `PlanningMetricAccumulator`'s. `subsets` (name -> sample tokens) adds `report["subsets"][name]`, the same report
    on the rows of those tokens, from the same plans: each row is planned once. `num_workers` loader
    processes prepare the batches, from the cached views `images` when given (`prepared_batches`).
    """
    if model.config.use_ego_status != processor.use_ego_status:
        raise ValueError(
            f"use_ego_status: the model says {model.config.use_ego_status}, the processor {processor.use_ego_status}"
        )
    tokens = {name: frozenset(subset) for name, subset in (subsets or {}).items()}
    scores = {name: _PlanningScore(normalization) for name in (None, *tokens)}
    prepare = partial(_planning_inputs, processor)
    for batch, (keep, inputs) in prepared_batches(
        dataset, batch_size, prepare, num_workers=num_workers, description="planning", images=images
    ):
        valid = np.zeros(len(batch["trajectory_mask"]), dtype=bool)
        valid[keep] = True
        members = {None: np.ones(len(valid), dtype=bool)}
        for name, subset in tokens.items():
            members[name] = np.array([token in subset for token in batch["sample_token"]], dtype=bool)
        for name, score in scores.items():
            score.skipped += int((members[name] & ~valid).sum())
        if inputs is None:
            continue
        rows = _take(batch, keep)
        plan = model.plan(
            **model_inputs(inputs, model),
            tokenizer=processor.tokenizer,
            max_new_tokens=max_new_tokens,
            reasoning=processor.planning_target == "reasoning",
        )
        pred = plan.trajectory.float().cpu().numpy()
        for name, score in scores.items():
            chosen = np.flatnonzero(members[name][keep])
            if len(chosen):
                score.update(pred[chosen], [plan.meta_action[j] for j in chosen], _take(rows, chosen))
    report = scores.pop(None).report()
    if subsets is not None:
        report["subsets"] = {name: score.report() for name, score in scores.items()}
    return report


def _planning_inputs(processor: OccVLAProcessor, batch: dict[str, list]) -> tuple[np.ndarray, Any]:
    """The indices of the rows of `batch` with a valid future step, and the processor's inputs of those rows (None
    without any)."""
    keep = np.flatnonzero(np.asarray(batch["trajectory_mask"], dtype=bool).any(axis=1))
    if not len(keep):
        return keep, None
    return keep, processor.from_rows(_take(batch, keep), task="planning", training=False)


class _PlanningScore:
    """`evaluate_planning`'s running metrics of one set of rows: the accumulator, meta-action hits, skipped rows."""

    def __init__(self, normalization: str) -> None:
        self.accumulator = PlanningMetricAccumulator(normalization)
        self.correct = self.total = self.skipped = 0

    def update(self, pred: np.ndarray, meta_actions: Sequence[str], rows: Mapping[str, Sequence[Any]]) -> None:
        """Adds planned rows: `pred` (rows, 6, 2) waypoints and meta-actions against the rows' logged ones."""
        mask = np.asarray(rows["trajectory_mask"], dtype=bool)
        self.accumulator.update(pred=pred, mask=mask, **planning_targets(rows))
        truth = label_names("meta_action", rows["meta_action"])  # a built dataset stores class ids
        self.correct += sum(p == t for p, t in zip(meta_actions, truth, strict=True))
        self.total += len(meta_actions)

    def report(self) -> dict[str, Any]:
        """The accumulator's report plus `meta_action_accuracy_pct` and `skipped_no_future`."""
        if not self.total:
            raise ValueError("dataset: no planning row with a valid future step to score")
        report = self.accumulator.compute()
        report["meta_action_accuracy_pct"] = 100.0 * self.correct / self.total
        report["skipped_no_future"] = self.skipped
        return report


def _take(rows: Mapping[str, Sequence[Any]], indices: Sequence[int] | np.ndarray) -> dict[str, list]:
    """The rows at `indices` of a column batch."""
    return {name: [values[i] for i in indices] for name, values in rows.items()}


def evaluate_constant_velocity(
    dataset: Dataset, *, normalization: str = "valid_steps", source: str = "ego_status"
) -> dict[str, Any]:
    """`evaluate_planning`'s L2 and collision report (both protocols) of the constant-velocity baseline on the rows
    `evaluate_planning` scores (those with a valid future step), with the velocity of `source`: `"ego_status"`
    (`baselines.constant_velocity_trajectories` of the rows' raw ego status, zero where a row marks it invalid, as at
    a scene's first keyframe) or `"ego_history"` (`baselines.history_constant_velocity_trajectories`: the last step
    of the past trajectory, the baseline without ego status)."""
    if source not in CONSTANT_VELOCITY_SOURCES:
        raise ValueError(f"source: expected one of {CONSTANT_VELOCITY_SOURCES}, got {source!r}")
    rows = dataset.select(np.flatnonzero(np.asarray(dataset["trajectory_mask"], dtype=bool).any(axis=1)))
    if source == "ego_status":
        ego_status = np.asarray(rows["ego_status"], dtype=np.float32) * np.asarray(rows["ego_status_valid"], dtype=bool)
        pred = constant_velocity_trajectories(ego_status)
    else:
        pred = history_constant_velocity_trajectories(rows["past_trajectory"], rows["past_trajectory_mask"])
    accumulator = PlanningMetricAccumulator(normalization)
    accumulator.update(
        pred=pred,
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
    num_workers: int = 0,
    images: ImageCache | None = None,
) -> dict[str, Any]:
    """nuScenes-QA accuracy (overall, per hop, per question type) of greedy answers on QA rows with their images
    (the `qa` config stores none: `data.join_keyframes(rows, planning_rows)` or `data.load_split(source, "qa")`) or
    with the cached views of their keyframes, `images`; `num_workers` loader processes prepare the batches
    (`prepared_batches`)."""
    if images is None:
        require_images(dataset, "dataset")
    accumulator = QAAccuracyAccumulator()
    prepare = partial(processor.from_rows, task="qa", training=False)
    for batch, inputs in prepared_batches(
        dataset, batch_size, prepare, num_workers=num_workers, description="qa", images=images
    ):
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
    num_workers: int = 0,
    images: ImageCache | None = None,
) -> dict[str, Any]:
    """Occ3D mIoU / IoU of the occupancy decoded from the occupancy queries through the frozen VAE decoder
    (`predict_occupancy`), counted on the model's device; `num_workers` loader processes prepare the batches, from
    the cached views `images` when given (`prepared_batches`)."""
    check_occupancy_modules(model)
    accumulator = OccupancyMetricAccumulator()
    prepare = partial(_occupancy_inputs, processor)
    for _, (inputs, semantics, mask_camera) in prepared_batches(
        dataset, batch_size, prepare, num_workers=num_workers, description="occupancy", images=images
    ):
        device = model.device
        accumulator.update(_predicted_classes(model, inputs), semantics.to(device), mask_camera.to(device))
    return {"num_samples": accumulator.num_samples, **accumulator.summary()}


def _occupancy_inputs(processor: OccVLAProcessor, batch: dict[str, list]) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The processor's inputs of occupancy rows (`occupancy_prompt_inputs` of their images) and their decoded labels:
    semantics and camera masks, (batch, X, Y, Z) each."""
    batch = decode_occupancy(batch)
    semantics, mask_camera = np.stack(batch["semantics"]), np.stack(batch["mask_camera"])
    return occupancy_prompt_inputs(processor, batch["images"]), torch.as_tensor(semantics), torch.as_tensor(mask_camera)


def check_occupancy_modules(model: OccVLAForPlanning) -> None:
    """ValueError unless `model` can decode occupancy: it has the occupancy queries and head and carries the VAE."""
    if model.occupancy_head is None or model.occupancy_vae is None:
        missing = "occupancy head" if model.occupancy_head is None else "occupancy VAE"
        raise ValueError(
            f"model: predicted occupancy needs the occupancy head and the frozen VAE, this checkpoint has no "
            f"{missing} (an inference export, or trained without a VAE)"
        )


def occupancy_prompt_inputs(processor: OccVLAProcessor, images: Sequence[Sequence[Any]]) -> Any:
    """The processor's inputs that decode occupancy from `images` (batch x six camera views): the images under
    `OCCUPANCY_PROMPT_QUESTION` (the queries read only the images)."""
    return processor(images=list(images), question=[OCCUPANCY_PROMPT_QUESTION] * len(images))


def _predicted_classes(model: OccVLAForPlanning, inputs: Any) -> torch.Tensor:
    """(batch, X, Y, Z) int64 class ids on the model's device."""
    return model(**model_inputs(inputs, model), return_occupancy=True).occupancy_logits.argmax(dim=1)


@torch.inference_mode()
def predict_occupancy(
    model: OccVLAForPlanning, processor: OccVLAProcessor, images: Sequence[Sequence[Any]]
) -> torch.Tensor:
    """(batch, X, Y, Z) int64 class ids on CPU: the occupancy the model's queries predict for `images` (batch x six
    camera views), decoded by its frozen VAE (argmax of the voxel logits). The queries read only the images."""
    check_occupancy_modules(model)
    return _predicted_classes(model, occupancy_prompt_inputs(processor, images)).cpu()
