"""`OccVLATrainer`: the transformers `Trainer` for `OccVLAForPlanning` (stage 2).

The loss is the model's (`occvla_hf.modeling.loss`): the trainer passes the scheduled occupancy weight and, in
training, the items of each loss term over the whole accumulated batch (all micro-batches, all processes, counted in
`get_batch_samples`), so k micro-batches of b samples on n processes give the gradient of one batch of k * b * n
samples; it multiplies the loss by the number of processes, which DDP/FSDP average gradients over, and logs each term.
Its pieces live next to it: the collator (`collator.py`), task-grouped batching (`sampler.py`), the occupancy-weight
schedule (`weight_schedule.py`) and the planning L2 metric (`metrics.py`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset, Sampler
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput

from occvla_hf.modeling.loss import LOSS_TERMS, loss_item_counts, loss_weights
from occvla_hf.processing.processing_occvla import OccVLAProcessor

from .collator import ROW_COLUMNS, OccVLADataCollator
from .model_card import ModelCardInfo, render_model_card
from .sampler import TaskGroupedSampler
from .weight_schedule import OccupancyWeightSchedule

# Training-log keys of the per-term gradient norms: `grad_norm_<term>`, and `grad_norm_step` (the step measured).
GRADIENT_NORM_PREFIX: str = "grad_norm_"


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


def check_gradient_norm_steps(value: object) -> None:
    """ValueError unless `value` is an int >= 0 (`OccVLATrainer`'s `gradient_norm_steps`, also a recipe key)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"gradient_norm_steps: expected an int >= 0, got {value!r}")


class OccVLATrainer(Trainer):
    """`Trainer` for `OccVLAForPlanning`: trains on the model's loss with the scheduled occupancy weight (see the
    module docstring), logs each term next to the total (`lm_loss`, `trajectory_loss`, `occupancy_latent_loss`,
    `occupancy_voxel_loss`, `occupancy_loss_weight`; evaluation adds them with the `eval_` prefix), batches
    multi-task datasets by task, returns predicted trajectories for `planning_l2_metrics` during evaluation and
    writes the OccVLA model card.

    Args:
        occupancy_weight_schedule: multiplier of `config.occupancy_loss_weight` per optimiser step; default constant.
        model_card_info: what the model card states about the training run (data licence, base model, ...).
        gradient_norm_steps: every this many optimiser steps (0: never), the first training batch with at least two
            loss terms also logs each weighted term's gradient norm on the parameters every term reaches (vision
            tower, projector, language model), `grad_norm_<term>`: which term drives the shared layers. It costs one
            extra backward pass per term at those steps; one process only.
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
        gradient_norm_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        check_gradient_norm_steps(gradient_norm_steps)
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("compute_loss_func: OccVLATrainer computes the loss itself; subclass compute_loss instead")
        processor = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None and isinstance(processor, OccVLAProcessor):
            kwargs["data_collator"] = OccVLADataCollator(processor)
        super().__init__(*args, **kwargs)
        self._check_fsdp_enabled()
        self.occupancy_weight_schedule = occupancy_weight_schedule or OccupancyWeightSchedule()
        self.model_card_info = model_card_info or ModelCardInfo()
        self._train_terms = _TermMeans(self.args.device)
        self._eval_terms = _TermMeans(self.args.device)
        self._accumulated_item_counts: dict[str, float] | None = None
        self._applied_occupancy_weight = self.occupancy_loss_weight(0)
        if gradient_norm_steps and self.accelerator.num_processes > 1:
            raise ValueError(
                f"gradient_norm_steps: measured in one process only, got {self.accelerator.num_processes} processes"
            )
        self.gradient_norm_steps = gradient_norm_steps
        self._gradient_norms: dict[str, float] = {}
        self._gradient_norms_step = -1  # the last step whose norms were measured

    # --- FSDP ---
    def _check_fsdp_enabled(self) -> None:
        """Fails when FSDP was asked for (`TrainingArguments.fsdp`, or accelerate's FSDP config through
        `accelerate launch`) but accelerate did not enable it. accelerate hands its FSDP plugin only to accelerator
        devices (GPUs, ...): on CPU the processes would train without sharding (DDP, or independent processes)."""
        requested = bool(self.args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        if requested and not self.is_fsdp_enabled:
            raise ValueError(
                f"fsdp: FSDP was requested but accelerate runs {self.accelerator.distributed_type} without it; "
                "accelerate enables FSDP only on accelerator devices (GPUs), use DDP on CPU"
            )

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
        if model.training and self._gradient_norms_due(outputs):
            self._gradient_norms = self.term_gradient_norms(model, outputs, occupancy_weight)
            self._gradient_norms_step = self.state.global_step
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

    def _gradient_norms_due(self, outputs: Any) -> bool:
        if not self.gradient_norm_steps:
            return False
        step = self.state.global_step
        last_due = step - step % self.gradient_norm_steps
        present = sum(getattr(outputs, name) is not None for name in LOSS_TERMS)
        return present >= 2 and self._gradient_norms_step < last_due

    def term_gradient_norms(self, model: torch.nn.Module, outputs: Any, occupancy_weight: float) -> dict[str, float]:
        """`grad_norm_<term>`: the L2 norm of each present weighted loss term's gradient on the shared parameters
        (the vision tower, projector and language model that train), the graph kept for the training backward."""
        base = self.accelerator.unwrap_model(model)
        shared = [
            parameter
            for name, parameter in base.model.named_parameters()
            if parameter.requires_grad and not name.startswith(("occupancy_queries", "occupancy_transformer"))
        ]
        weights = loss_weights(base.config, occupancy_weight)
        norms = {}
        for name in LOSS_TERMS:
            value = getattr(outputs, name)
            if value is None or weights[name] == 0:
                continue
            grads = torch.autograd.grad(weights[name] * value, shared, retain_graph=True, allow_unused=True)
            squares = [grad.float().pow(2).sum() for grad in grads if grad is not None]
            norms[f"{GRADIENT_NORM_PREFIX}{name}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
        return norms

    # --- logging ---
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean of each loss term since the last training log, and the occupancy weight of the last step."""
        if "loss" in logs:  # the periodic training log (evaluation logs `eval_loss`, the final summary `train_loss`)
            logs.update(self._train_terms.pop(self.accelerator))
            logs["occupancy_loss_weight"] = self._applied_occupancy_weight
            if self._gradient_norms:  # measured at optimiser step `grad_norm_step`, at or before this log
                logs.update(self._gradient_norms, **{f"{GRADIENT_NORM_PREFIX}step": self._gradient_norms_step})
                self._gradient_norms = {}
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
    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The Trainer's device placement; uint8 `pixel_values` (a collator with `normalize_images=False`) are then
        normalised on the device by the processor (`OccVLAProcessor.normalize_pixels`)."""
        inputs = super()._prepare_inputs(inputs)
        pixels = inputs.get("pixel_values")
        if isinstance(pixels, torch.Tensor) and pixels.dtype == torch.uint8:
            if not isinstance(self.processing_class, OccVLAProcessor):
                raise ValueError(
                    "pixel_values: uint8 images need the trainer's processing_class (an OccVLAProcessor) to be "
                    "normalised on the device"
                )
            inputs["pixel_values"] = self.processing_class.normalize_pixels(pixels)
        return inputs

    def _set_signature_columns_if_needed(self) -> None:
        """Keeps the dataset-row columns the collator reads next to the model's inputs (`remove_unused_columns`)."""
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *ROW_COLUMNS]))

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        """`TaskGroupedSampler` for datasets with a `tasks` attribute (one task per index; with
        `occupancy_only_rows`, the occupancy-only rows it pairs with the planning rows: `JointDataset`), else the
        Trainer's."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        tasks = getattr(dataset, "tasks", None)
        if tasks is None:
            return super()._get_train_sampler(train_dataset)
        occupancy_only_rows = getattr(dataset, "occupancy_only_rows", 0)
        return TaskGroupedSampler(tasks, self._train_batch_size, self.args.seed, occupancy_only_rows)

    # --- saving ---
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The Trainer's `save_model`, which writes no weights under FSDP with `SHARDED_STATE_DICT` (checkpoints get
        only the per-process shards for resuming): here the full state dict is gathered and saved with
        `save_pretrained` as well, so the output folder and every `checkpoint-N` load with `from_pretrained`.
        Every process must call it (the gathering is collective)."""
        if self.is_fsdp_enabled and "SHARDED" in str(self.accelerator.state.fsdp_plugin.state_dict_type):
            self._save(output_dir or self.args.output_dir, state_dict=self.accelerator.get_state_dict(self.model))
        super().save_model(output_dir, _internal_call)

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


__all__ = ["OccVLATrainer"]
