"""Stage-2 training machinery: `OccVLATrainer`, its data collator, task-grouped batching, the occupancy-weight
schedule and the planning L2 metric that picks the best checkpoint.

The loss is the model's (`occvla_hf.modeling.loss`): the trainer passes the scheduled occupancy weight and, in
training, the items of each loss term over the whole accumulated batch (all micro-batches, all processes, counted in
`get_batch_samples`), so k micro-batches of b samples on n processes give the gradient of one batch of k * b * n
samples; it multiplies the loss by the number of processes, which DDP/FSDP average gradients over, and logs each term.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import Dataset, Sampler
from transformers import EvalPrediction, Trainer
from transformers.trainer_utils import EvalLoopOutput

from occvla_hf.evaluation.planning import PROTOCOLS, l2_errors, protocol_summary
from occvla_hf.modeling.loss import IGNORE_INDEX, LOSS_TERMS, loss_item_counts
from occvla_hf.processing.processing_occvla import TASKS, OccVLAProcessor

from .model_card import ModelCardInfo, render_model_card

# Dataset-row columns `OccVLAProcessor.from_rows` reads (plus `task`); the Trainer keeps them in the batches.
ROW_COLUMNS: tuple[str, ...] = (
    "task",
    "images",
    "question",
    "answer",
    "meta_action",
    "ego_status",
    "ego_status_valid",
    "trajectory",
    "trajectory_mask",
    "semantics",
    "mask_camera",
)
OCCUPANCY_ROW_COLUMNS: tuple[str, ...] = ("semantics", "mask_camera")
OCCUPANCY_INPUTS: tuple[str, ...] = ("occupancy", "occupancy_mask")
# Batch keys that are padded along the sequence, with their padding value (None: the tokenizer's pad id).
_SEQUENCE_PADDING: dict[str, int | None] = {
    "input_ids": None,
    "attention_mask": 0,
    "token_type_ids": 0,
    "labels": IGNORE_INDEX,
}
# Per-sample keys stacked as they are; a batch has each either for every sample or for none.
_STACKED_INPUTS: tuple[str, ...] = ("pixel_values", "ego_status", "trajectory", "trajectory_mask")


# ------------------------------------------------------------------------------------------- occupancy weight


@dataclass(frozen=True)
class OccupancyWeightSchedule:
    """Multiplier of `config.occupancy_loss_weight` over optimiser steps: `start_factor` until `start_step`, then
    linear to `end_factor` over `ramp_steps` steps, then `end_factor`.

    Warm-up: `OccupancyWeightSchedule(start_factor=0.0, ramp_steps=500)`; warm-down after step 5000:
    `OccupancyWeightSchedule(end_factor=0.0, start_step=5000, ramp_steps=1000)`. The default is constant 1.
    """

    start_factor: float = 1.0
    end_factor: float = 1.0
    start_step: int = 0
    ramp_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("start_factor", "end_factor", "start_step", "ramp_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"occupancy_weight_schedule.{name}: expected >= 0, got {getattr(self, name)}")

    def __call__(self, step: int) -> float:
        """The multiplier at optimiser step `step` (0 = the first update)."""
        if step <= self.start_step:
            return self.start_factor
        if step >= self.start_step + self.ramp_steps:
            return self.end_factor
        progress = (step - self.start_step) / self.ramp_steps
        return self.start_factor + progress * (self.end_factor - self.start_factor)


# ------------------------------------------------------------------------------------------- loss logging


class _TermMeans:
    """Item-weighted running means of the loss terms since the last read, summed across processes when read."""

    def __init__(self, device: torch.device) -> None:
        self._totals = torch.zeros(2, len(LOSS_TERMS), dtype=torch.float64, device=device)  # (sums, counts)

    def add(self, name: str, mean: torch.Tensor, count: int) -> None:
        index = LOSS_TERMS.index(name)
        self._totals[0, index] += mean.detach().to(self._totals) * count
        self._totals[1, index] += count

    def pop(self, accelerator: Accelerator) -> dict[str, float]:
        """Means of the terms seen by any process since the last call; resets. Every process must call it."""
        sums, counts = accelerator.reduce(self._totals.clone(), reduction="sum").tolist()
        self._totals.zero_()
        return {name: total / count for name, total, count in zip(LOSS_TERMS, sums, counts) if count > 0}


# -------------------------------------------------------------------------------------------------- collator


def row_task(row: Mapping[str, Any]) -> str:
    """Task of a dataset row: its `task` column, else `qa` for rows with a question, `planning` for rows with a
    trajectory."""
    if "task" in row:
        task = row["task"]
    elif "question" in row:
        task = "qa"
    elif "trajectory" in row:
        task = "planning"
    else:
        raise ValueError(
            f"features: cannot tell the task of a row with columns {sorted(row)}: add a `task` column, and with a "
            "transformers/TRL trainer set remove_unused_columns=False so the row columns reach the collator"
        )
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    return task


@dataclass
class OccVLADataCollator:
    """Batches training samples for `OccVLAForPlanning.forward`.

    Accepts either dataset rows (the `planning`/`qa` configs, optionally with decoded `semantics`/`mask_camera`
    occupancy columns and a `task` column), which go through `processor.from_rows`, or per-sample processor outputs
    (`input_ids` (L,) or (1, L), `pixel_values` (V, 3, H, W) or (1, V, 3, H, W), ...), which are padded and stacked.
    Padding is on the right (training): `input_ids` with the tokenizer's pad id, `attention_mask`/`token_type_ids`
    with 0, `labels` with -100.

    Mixed batches. All samples of a batch must share a task (planning prompts end with `<traj>`, QA prompts do not);
    `OccVLATrainer` groups batches by task for datasets with a `tasks` attribute. Occupancy targets are batched only
    when every sample has them; a batch where some sample lacks them (e.g. a keyframe without Occ3D labels) is
    trained without the occupancy term. `ego_status`, `trajectory`(`_mask`) and `pixel_values` must be present for
    all samples or for none.

    Args:
        processor: turns dataset rows into model inputs; its tokenizer gives the pad id of processed samples.
        occupancy_supervision: `False` drops every occupancy target, so the model never builds occupancy queries
            (the ablation: same data, no occupancy term).
        pad_token_id: pad id for processed samples without a processor.
        pad_to_multiple_of: round the padded length of processed samples up to a multiple of this.
    """

    processor: OccVLAProcessor | None = None
    occupancy_supervision: bool = True
    pad_token_id: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("features: expected at least one sample, got none")
        if all("images" in feature for feature in features):
            batch = self._from_rows(features)
        elif all("input_ids" in feature for feature in features):
            batch = self._from_processed(features)
        else:
            raise ValueError(
                "features: expected dataset rows (with `images`) or processor outputs (with `input_ids`) for every "
                f"sample, got columns {[sorted(feature) for feature in features]}"
            )
        if not self.occupancy_supervision:
            for key in OCCUPANCY_INPUTS:
                batch.pop(key, None)
        return batch

    def _from_rows(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if self.processor is None:
            raise ValueError("processor: required to collate dataset rows (it builds pixel values and token ids)")
        tasks = {row_task(row) for row in rows}
        if len(tasks) > 1:
            raise ValueError(
                f"features: a batch mixes the tasks {sorted(tasks)}; batch each task separately (OccVLATrainer does "
                "so for datasets with a `tasks` attribute, see TaskGroupedSampler)"
            )
        drop = () if self.occupancy_supervision else OCCUPANCY_ROW_COLUMNS
        rows = [{key: value for key, value in row.items() if key not in drop} for row in rows]
        return dict(self.processor.from_rows(rows, task=tasks.pop(), training=True))

    def _pad_id(self) -> int:
        if self.pad_token_id is not None:
            return self.pad_token_id
        if self.processor is not None:
            return self.processor.tokenizer.pad_token_id
        raise ValueError("pad_token_id: required to pad processed samples when no processor is given")

    def _from_processed(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        samples = [_unbatched(feature, index) for index, feature in enumerate(features)]
        length = max(sample["input_ids"].shape[0] for sample in samples)
        if self.pad_to_multiple_of:
            length = math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, torch.Tensor] = {}
        for key, pad_value in _SEQUENCE_PADDING.items():
            present = [key in sample for sample in samples]
            if not any(present):
                continue
            if not all(present):
                raise ValueError(f"features: `{key}` is given for some samples only ({sum(present)}/{len(samples)})")
            value = self._pad_id() if pad_value is None else pad_value
            batch[key] = torch.stack([_right_pad(sample[key], length, value, key) for sample in samples])
        for key in _STACKED_INPUTS:
            present = [key in sample for sample in samples]
            if all(present):
                batch[key] = _stack(samples, key)
            elif any(present):
                raise ValueError(f"features: `{key}` is given for some samples only ({sum(present)}/{len(samples)})")
        if all("occupancy" in sample for sample in samples):
            batch["occupancy"] = _stack(samples, "occupancy")
            if all("occupancy_mask" in sample for sample in samples):
                batch["occupancy_mask"] = _stack(samples, "occupancy_mask")
        return batch


def _unbatched(feature: Mapping[str, Any], index: int) -> dict[str, torch.Tensor]:
    """One processed sample as tensors without a batch dimension (a leading batch of 1 is removed)."""
    sample = {key: torch.as_tensor(np.asarray(value)) for key, value in feature.items()}
    input_ids = sample["input_ids"]
    if input_ids.dim() == 2:
        if input_ids.shape[0] != 1:
            raise ValueError(f"features[{index}].input_ids: expected (L,) or (1, L), got {tuple(input_ids.shape)}")
        sample = {key: value[0] for key, value in sample.items()}
    elif input_ids.dim() != 1:
        raise ValueError(f"features[{index}].input_ids: expected (L,) or (1, L), got {tuple(input_ids.shape)}")
    return sample


def _right_pad(values: torch.Tensor, length: int, pad_value: int, key: str) -> torch.Tensor:
    if values.dim() != 1:
        raise ValueError(f"features.{key}: expected (L,) per sample, got {tuple(values.shape)}")
    return torch.cat([values, values.new_full((length - values.shape[0],), pad_value)])


def _stack(samples: Sequence[Mapping[str, torch.Tensor]], key: str) -> torch.Tensor:
    shapes = {tuple(sample[key].shape) for sample in samples}
    if len(shapes) > 1:
        raise ValueError(f"features.{key}: every sample must have one shape, got {sorted(shapes)}")
    return torch.stack([sample[key] for sample in samples])


# --------------------------------------------------------------------------------------------------- sampler


class TaskGroupedSampler(Sampler[int]):
    """Sample indices in runs of `batch_size` that share one task, so every batch the DataLoader cuts is single-task.

    Per epoch: indices are shuffled within each task and cut into batches, the last batch of a task is filled up with
    random indices of that task, and the batch order is shuffled. Deterministic in (`seed`, epoch), so resuming from
    a checkpoint replays the same order.

    Args:
        tasks: the task of every dataset index.
        batch_size: samples per batch (the per-device batch size).
        seed: base seed; the epoch set by `set_epoch` is added to it.
    """

    def __init__(self, tasks: Sequence[str], batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.groups = {task: torch.tensor([i for i, t in enumerate(tasks) if t == task]) for task in sorted(set(tasks))}
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(math.ceil(len(indices) / self.batch_size) * self.batch_size for indices in self.groups.values())

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches: list[torch.Tensor] = []
        for indices in self.groups.values():
            shuffled = indices[torch.randperm(len(indices), generator=generator)]
            fill = -len(shuffled) % self.batch_size
            if fill:
                extra = torch.randint(len(shuffled), (fill,), generator=generator)
                shuffled = torch.cat([shuffled, shuffled[extra]])
            batches.extend(shuffled.view(-1, self.batch_size))
        for order in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[order].tolist()


# --------------------------------------------------------------------------------------------------- metrics


def planning_l2_metrics(eval_prediction: EvalPrediction) -> dict[str, float | None]:
    """`compute_metrics` for `OccVLATrainer`: L2 (m) of the predicted waypoints at 1 s, 2 s, 3 s and their average,
    read per protocol (`stp3_l2_avg_m`: mean over the steps up to each horizon; `uniad_l2_avg_m`: the step itself).

    `predictions`: (N, T, 2) waypoints; `label_ids`: (N, T, 3) target waypoints and validity (1 = valid), as
    `OccVLATrainer.prediction_step` returns them. Invalid steps are left out; a step with no valid sample is None.
    """
    predicted = np.asarray(eval_prediction.predictions, dtype=np.float64)
    targets = np.asarray(eval_prediction.label_ids, dtype=np.float64)
    if predicted.ndim != 3 or predicted.shape[-1] != 2 or targets.shape != (*predicted.shape[:2], 3):
        raise ValueError(
            f"eval_prediction: expected predictions (N, T, 2) and label_ids (N, T, 3), got {predicted.shape} and "
            f"{targets.shape}"
        )
    valid = targets[..., 2] > 0.5
    with np.errstate(invalid="ignore"):
        l2_per_step_m = np.where(valid, l2_errors(predicted, targets[..., :2]), 0.0).sum(0) / valid.sum(0)
    return {
        f"{protocol}_{key}": value
        for protocol in PROTOCOLS
        for key, value in protocol_summary(l2_per_step_m, {}, protocol).items()
    }


# --------------------------------------------------------------------------------------------------- trainer


class OccVLATrainer(Trainer):
    """`Trainer` for `OccVLAForPlanning`: trains on the model's loss with the scheduled occupancy weight (see the
    module docstring), logs each term next to the total (`lm_loss`, `trajectory_loss`, `occupancy_latent_loss`,
    `occupancy_voxel_loss`, `occupancy_loss_weight`; evaluation adds them with the `eval_` prefix), batches
    multi-task datasets by task, returns predicted trajectories for `planning_l2_metrics` during evaluation and
    writes the OccVLA model card.

    Args:
        occupancy_weight_schedule: multiplier of `config.occupancy_loss_weight` per optimiser step; default constant.
        model_card_info: what the model card states about the training run (data licence, base model, ...).
        **kwargs: `transformers.Trainer` arguments. `data_collator` defaults to `OccVLADataCollator(processor)` when
            `processing_class` is an `OccVLAProcessor`; `compute_loss_func` is not supported (the loss is ours).
    """

    # The loss is already normalised over the accumulated batch (see `compute_loss`).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        occupancy_weight_schedule: OccupancyWeightSchedule | None = None,
        model_card_info: ModelCardInfo | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("compute_loss_func: OccVLATrainer computes the loss itself; subclass compute_loss instead")
        processor = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None and isinstance(processor, OccVLAProcessor):
            kwargs["data_collator"] = OccVLADataCollator(processor)
        super().__init__(*args, **kwargs)
        self.occupancy_weight_schedule = occupancy_weight_schedule or OccupancyWeightSchedule()
        self.model_card_info = model_card_info or ModelCardInfo()
        self._train_terms = _TermMeans(self.args.device)
        self._eval_terms = _TermMeans(self.args.device)
        self._accumulated_item_counts: dict[str, float] | None = None
        self._applied_occupancy_weight = self.occupancy_loss_weight(0)

    # --- loss ---
    def occupancy_loss_weight(self, step: int) -> float:
        """`config.occupancy_loss_weight` times the schedule at optimiser step `step`."""
        return self.model.config.occupancy_loss_weight * self.occupancy_weight_schedule(step)

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor | int | None]:
        """Also counts, per loss term, the items of the whole accumulated batch over all processes."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        per_batch = [[loss_item_counts(batch)[name] for name in LOSS_TERMS] for batch in batch_samples]
        totals = torch.tensor(per_batch, dtype=torch.float64, device=device).reshape(-1, len(LOSS_TERMS)).sum(0)
        totals = self.accelerator.reduce(totals, reduction="sum")
        self._accumulated_item_counts = dict(zip(LOSS_TERMS, totals.tolist()))
        return batch_samples, num_items_in_batch

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The model's loss with the scheduled occupancy weight; logs each term.

        In training each term is normalised over the accumulated batch's items (counted in `get_batch_samples`) and
        the loss is multiplied by the number of processes, which makes gradient accumulation and data parallelism
        exact; `num_items_in_batch` (label tokens only) is therefore not needed. In evaluation the terms are this
        batch's means.
        """
        counts = loss_item_counts(inputs)
        if not any(counts.values()):
            raise ValueError(
                "inputs: the batch has no training target (labels, trajectory or occupancy with at least one item)"
            )
        occupancy_weight = self.occupancy_loss_weight(self.state.global_step)
        totals = self._accumulated_item_counts if model.training else None
        outputs = model(**inputs, occupancy_loss_weight=occupancy_weight, loss_item_totals=totals)
        terms = self._train_terms if model.training else self._eval_terms
        for name in LOSS_TERMS:
            value = getattr(outputs, name)
            if value is not None and counts[name] > 0:
                terms.add(name, value, counts[name])
        loss = outputs.loss
        if model.training:
            self._applied_occupancy_weight = occupancy_weight
        if totals is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    # --- logging ---
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean of each loss term since the last training log, and the occupancy weight of the last step."""
        if "loss" in logs:  # the periodic training log (evaluation logs `eval_loss`, the final summary `train_loss`)
            logs.update(self._train_terms.pop(self.accelerator))
            logs["occupancy_loss_weight"] = self._applied_occupancy_weight
        super().log(logs, start_time)

    # --- evaluation ---
    def evaluation_loop(
        self,
        dataloader: torch.utils.data.DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """The Trainer's loop, plus the mean of each loss term over the evaluated samples (`eval_lm_loss`, ...)."""
        self._eval_terms.pop(self.accelerator)
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        terms = self._eval_terms.pop(self.accelerator)
        output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in terms.items()})
        return output

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(loss, predicted waypoints (B, T, 2), targets (B, T, 3) = waypoints + validity) for planning batches;
        (loss, None, None) otherwise. LM logits are never gathered."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only or outputs.trajectory is None or "trajectory" not in inputs:
            return loss.detach(), None, None
        trajectory = inputs["trajectory"]
        mask = inputs.get("trajectory_mask")
        valid = torch.ones(trajectory.shape[:2], device=trajectory.device) if mask is None else mask
        targets = torch.cat([trajectory.float(), valid.unsqueeze(-1).float()], dim=-1)
        return loss.detach(), outputs.trajectory.detach().float(), targets

    # --- data ---
    def _set_signature_columns_if_needed(self) -> None:
        """Keeps the dataset-row columns the collator reads next to the model's inputs (`remove_unused_columns`)."""
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *ROW_COLUMNS]))

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        """`TaskGroupedSampler` for datasets with a `tasks` attribute (one task per index), else the Trainer's."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        tasks = getattr(dataset, "tasks", None)
        if tasks is None:
            return super()._get_train_sampler(train_dataset)
        return TaskGroupedSampler(tasks, self._train_batch_size, seed=self.args.seed)

    # --- model card ---
    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Writes `<output_dir>/README.md` from the OccVLA model card template (`model_card.md`), filled with
        `model_card_info`, the model config and the latest training and evaluation logs. `model_name`,
        `finetuned_from` and `dataset` override the corresponding `model_card_info` fields; the other arguments of
        `Trainer.create_model_card` are accepted for compatibility and ignored."""
        if not self.is_world_process_zero():
            return
        info = self.model_card_info
        card = render_model_card(
            info.replace(
                model_name=model_name or info.model_name,
                base_model=finetuned_from or info.base_model,
                datasets=[dataset] if isinstance(dataset, str) else list(dataset or info.datasets),
            ),
            config=self.model.config,
            repo_id=self.hub_model_id or self.args.hub_model_id or self.args.output_dir,
            log_history=self.state.log_history,
        )
        card.save(f"{self.args.output_dir}/README.md")


__all__ = [
    "LOSS_TERMS",
    "OccVLADataCollator",
    "OccVLATrainer",
    "OccupancyWeightSchedule",
    "TaskGroupedSampler",
    "loss_item_counts",
    "planning_l2_metrics",
    "row_task",
]
