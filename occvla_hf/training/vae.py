"""Stage 1: train the occupancy VAE on the `occupancy` dataset config, then report its reconstruction mIoU/IoU.

Runs on the transformers `Trainer` (`OccupancyVAETrainer` only adds per-term loss logging): the same optimiser,
scheduler, bf16/multi-GPU (accelerate), checkpointing and resuming as stage 2, configured by `TrainingArguments`.
The VQ codebook statistics are summed across data-parallel ranks inside the model, so DDP runs stay in sync.

Python: `train_vae(dataset, training_args=TrainingArguments(...), model_config=OccupancyVAEConfig(...))`;
command line: `occvla-hf train vae --config configs/vae.yaml [--section.key value ...]` (`train_from_config` of a
`VAERecipe`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Value
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments, set_seed

from ..data.load import load_configs
from ..data.occ3d import decode_mask, decode_semantics
from ..evaluation.occupancy import OccupancyMetricAccumulator
from ..modeling.configuration_occupancy_vae import OccupancyVAEConfig
from ..modeling.occupancy_vae import OccupancyVAE
from .recipe import Recipe, check_fields, check_training_arguments, resolve_resume_checkpoint

logger = logging.getLogger(__name__)

STAGE_NAME: str = "vae"
# Metrics file written next to the checkpoint at the end of training.
METRICS_FILE: str = "reconstruction_metrics.json"
# ENet's class weighting w_c = 1 / ln(c + p_c) (Paszke et al., 2016): bounded in (1/ln(1 + c), 1/ln(c)].
_ENET_WEIGHT_OFFSET = 1.02


def _decode_stored(batch: dict[str, list]) -> dict[str, list]:
    """`with_transform` decoder for datasets that store the grids as compressed bytes (`occvla_hf.data.occ3d`)."""
    return {
        "voxels": [decode_semantics(data) for data in batch["voxels"]],
        "mask_camera": [decode_mask(data) for data in batch["mask_camera"]],
    }


def load_occupancy_dataset(source: Dataset | DatasetDict | str | os.PathLike, split: str | None = None) -> Dataset:
    """The occupancy rows of `source` as `voxels` (X, Y, Z) class ids and `mask_camera` (X, Y, Z) bool arrays.

    `source` is a `datasets.Dataset`/`DatasetDict`, or where `data.load.load_configs` finds the `occupancy` config:
    an `occvla-hf data build` folder, its `arrow/occupancy` folder or a Hub dataset id; `split` picks the split of a
    `DatasetDict`. The columns `semantics` and
    `mask_camera` may be fixed-shape arrays or the compressed bytes of `occvla_hf.data.occ3d`; other columns (camera
    images, ...) are dropped so they are never decoded.
    """
    if isinstance(source, (str, os.PathLike)):
        source = load_configs(source, ["occupancy"])["occupancy"]
    if isinstance(source, DatasetDict):
        if split not in source:
            raise ValueError(f"split: expected one of {sorted(source)} for this DatasetDict, got {split!r}")
        source = source[split]
    if not isinstance(source, Dataset):
        raise TypeError(
            f"dataset: expected a datasets.Dataset, DatasetDict or a dataset path / Hub id, got {type(source)}"
        )
    missing = [name for name in ("semantics", "mask_camera") if name not in source.column_names]
    if missing:
        raise ValueError(f"dataset: missing occupancy columns {missing}, found {source.column_names}")
    dataset = source.select_columns(["semantics", "mask_camera"]).rename_column("semantics", "voxels")
    stored_as_bytes = [dataset.features[name] == Value("binary") for name in ("voxels", "mask_camera")]
    if all(stored_as_bytes):
        return dataset.with_transform(_decode_stored)
    if any(stored_as_bytes):
        raise ValueError(
            f"dataset: semantics and mask_camera must both be arrays or both bytes, got {dataset.features}"
        )
    return dataset.with_format("numpy")


def collate_occupancy(rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Rows of `load_occupancy_dataset` -> `voxels` (batch, X, Y, Z) uint8 and `mask_camera` (batch, X, Y, Z) bool."""
    return {
        "voxels": torch.from_numpy(np.stack([np.asarray(row["voxels"], dtype=np.uint8) for row in rows])),
        "mask_camera": torch.from_numpy(np.stack([np.asarray(row["mask_camera"], dtype=bool) for row in rows])),
    }


def _check_grid(dataset: Dataset, config: OccupancyVAEConfig, name: str) -> None:
    if len(dataset) == 0:
        raise ValueError(f"{name}: the dataset is empty")
    shape = tuple(np.asarray(dataset[0]["voxels"]).shape)
    if shape != tuple(config.grid_shape):
        raise ValueError(
            f"{name}: semantics grids are {shape}, the model config expects grid_shape {config.grid_shape}"
        )


def class_voxel_counts(dataset: Dataset, num_classes: int, max_samples: int | None = None) -> np.ndarray:
    """(num_classes,) int64 voxel count per class over `dataset` (a `load_occupancy_dataset` result).

    With `max_samples`, counts an evenly spaced subset of that many samples (frequencies need no full pass).
    """
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(np.linspace(0, len(dataset) - 1, max_samples).round().astype(int).tolist())
    counts = np.zeros(num_classes, dtype=np.int64)
    for start in tqdm(range(0, len(dataset), 16), desc="class frequencies", leave=False):
        for grid in dataset[start : start + 16]["voxels"]:
            counts += np.bincount(np.asarray(grid, dtype=np.int64).reshape(-1), minlength=num_classes)[:num_classes]
    return counts


def class_weights_from_counts(counts: Sequence[int] | np.ndarray) -> list[float]:
    """Cross-entropy class weights from voxel counts: ENet's 1 / ln(1.02 + frequency), in (1.42, 50.5].

    Rare classes weigh up to ~35x more than a class covering most voxels (free space), without the unbounded
    weights of inverse frequency; absent classes get the maximum (harmless: they never appear as targets).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"counts: expected non-negative voxel counts per class with a positive total, got {counts}")
    frequencies = counts / counts.sum()
    return (1.0 / np.log(_ENET_WEIGHT_OFFSET + frequencies)).tolist()


@torch.no_grad()
def evaluate_reconstruction(
    model: OccupancyVAE, dataset: Dataset, batch_size: int = 2, device: torch.device | str | None = None
) -> OccupancyMetricAccumulator:
    """Reconstructs every grid of `dataset` (argmax of `model(voxels).logits`) and accumulates Occ3D metrics.

    Returns the accumulator: `.compute()` gives the camera-mask scores (Occ3D's standard), `.summary()` all of them.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    accumulator = OccupancyMetricAccumulator(num_classes=model.config.num_classes, free_class=model.config.free_class)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_occupancy)
    for batch in tqdm(loader, desc="reconstruction metrics", leave=False):
        voxels = batch["voxels"].to(device)
        predicted = model.decode(model.encode(voxels)).argmax(dim=1)
        accumulator.update(predicted, voxels, batch["mask_camera"].to(device))
    model.train(was_training)
    return accumulator


class OccupancyVAETrainer(Trainer):
    """`Trainer` that also logs each loss term of `OccupancyVAEOutput` (and the VQ perplexity), averaged over the
    optimisation steps since the last log, next to the total loss."""

    _TERMS: tuple[str, ...] = ("ce_loss", "lovasz_loss", "commitment_loss", "codebook_loss", "kl_loss", "perplexity")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_counts: dict[str, int] = {}

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        if model.training:
            for name in self._TERMS:
                value = outputs.get(name)
                if value is not None:
                    self._term_sums[name] = self._term_sums.get(name, 0.0) + value.detach().float()
                    self._term_counts[name] = self._term_counts.get(name, 0) + 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor, None, None]:
        """Loss only: the eval loop never gathers voxel logits; `evaluate_reconstruction` scores reconstructions."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_counts:
            for name, total in self._term_sums.items():
                logs[name] = round(float(total) / self._term_counts[name], 6)
            self._term_sums, self._term_counts = {}, {}
        super().log(logs, start_time)


@dataclass
class VAETrainingResult:
    """What `train_vae` produced.

    Args:
        model: the trained VAE (in eval mode).
        output_dir: folder of the `save_pretrained` checkpoint and of `reconstruction_metrics.json`.
        metrics: reconstruction scores of the evaluated split (`OccupancyMetricAccumulator.summary()` keys: `miou`,
            `iou`, `iou_<class>`, and `camera_*` for the camera mask), fractions in [0, 1].
        log_history: the Trainer's logs (loss, each loss term, VQ perplexity, learning rate, ...).
    """

    model: OccupancyVAE
    output_dir: Path
    metrics: dict[str, float]
    log_history: list[dict[str, float]]


def train_vae(
    train_dataset: Dataset | DatasetDict | str | os.PathLike,
    *,
    training_args: TrainingArguments,
    model_config: OccupancyVAEConfig | None = None,
    eval_dataset: Dataset | DatasetDict | str | os.PathLike | None = None,
    train_split: str = "train",
    eval_split: str = "val",
    max_eval_samples: int | None = None,
    resume_from_checkpoint: str | bool | None = None,
) -> VAETrainingResult:
    """Trains an `OccupancyVAE` from scratch, saves it to `training_args.output_dir` and scores its reconstructions.

    Datasets are anything `load_occupancy_dataset` accepts (splits picked from a `DatasetDict` by `train_split`,
    `eval_split`). Reconstruction metrics are computed on `eval_dataset` (at most `max_eval_samples`, evenly spaced),
    or on the training set without one, and written to `<output_dir>/reconstruction_metrics.json`.
    `resume_from_checkpoint` (a checkpoint folder, or `True` for the last complete one in `output_dir`) continues a
    run.
    """
    if training_args.output_dir is None:
        raise ValueError("training_args.output_dir: required, the checkpoint is written there")
    config = model_config if model_config is not None else OccupancyVAEConfig()
    train_rows = load_occupancy_dataset(train_dataset, train_split)
    _check_grid(train_rows, config, "train_dataset")
    eval_rows = None if eval_dataset is None else load_occupancy_dataset(eval_dataset, eval_split)
    if eval_rows is not None:
        _check_grid(eval_rows, config, "eval_dataset")

    set_seed(training_args.seed)  # the initial weights are part of the run: same seed, same model
    model = OccupancyVAE(config)
    trainer = OccupancyVAETrainer(
        model=model,
        args=training_args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collate_occupancy,
    )
    trainer.train(resume_from_checkpoint=resolve_resume_checkpoint(resume_from_checkpoint, training_args.output_dir))
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))

    scored_rows = eval_rows if eval_rows is not None else train_rows
    if max_eval_samples is not None and max_eval_samples < len(scored_rows):
        indices = np.linspace(0, len(scored_rows) - 1, max_eval_samples).round().astype(int).tolist()
        scored_rows = scored_rows.select(indices)
    model.eval()
    accumulator = evaluate_reconstruction(model, scored_rows, batch_size=training_args.per_device_eval_batch_size)
    metrics = accumulator.summary()
    if trainer.is_world_process_zero():
        scored = "eval" if eval_rows is not None else "train"
        report = {
            "split": scored,
            "num_samples": len(scored_rows),
            **_json_floats(metrics),
            "voxel_counts": accumulator.voxel_counts(),
        }
        (output_dir / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
        logger.info(
            "reconstruction on %s (%d samples): mIoU %.4f, IoU %.4f (camera mask: mIoU %.4f, IoU %.4f)",
            scored,
            len(scored_rows),
            metrics["miou"],
            metrics["iou"],
            metrics.get("camera_miou", math.nan),
            metrics.get("camera_iou", math.nan),
        )
    return VAETrainingResult(
        model=model, output_dir=output_dir, metrics=metrics, log_history=list(trainer.state.log_history)
    )


def _json_floats(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """NaN (a class never seen) becomes null so the file stays strict JSON."""
    return {name: None if math.isnan(value) else value for name, value in metrics.items()}


@dataclass(frozen=True, kw_only=True)
class VAERecipe(Recipe):
    """A stage-1 recipe (`configs/vae.yaml`, which comments every key).

    `class_weights: frequency` fills `model.class_weights` with ENet weights from `class_weight_samples` training
    grids; without it `model.class_weights` is used as given (null: uniform).
    """

    STAGE: ClassVar[str] = STAGE_NAME

    stage: str = STAGE_NAME
    dataset: str = field(metadata={"help": "the occupancy config: a data build folder, its arrow/occupancy, a Hub id"})
    train_split: str = "train"
    eval_split: str | None = None  # None: score the training set
    max_eval_samples: int | None = None
    class_weights: Literal["frequency"] | None = None
    class_weight_samples: int = 1000
    resume_from_checkpoint: str | bool | None = None
    model: dict[str, Any] = field(default_factory=dict)  # OccupancyVAEConfig fields
    training: dict[str, Any] = field(default_factory=dict)  # TrainingArguments fields

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self.model, OccupancyVAEConfig, "model")
        check_training_arguments(self.training)
        if self.class_weights == "frequency" and self.model.get("class_weights") is not None:
            raise ValueError("class_weights: 'frequency' computes model.class_weights; set one of the two, not both")


def train_from_config(recipe: VAERecipe | Mapping[str, Any]) -> VAETrainingResult:
    """Runs `train_vae` from a stage-1 recipe (a `VAERecipe`, or the parsed `configs/vae.yaml`)."""
    recipe = VAERecipe.from_dict(recipe)
    model_kwargs = dict(recipe.model)
    if recipe.class_weights == "frequency":
        counts = class_voxel_counts(
            load_occupancy_dataset(recipe.dataset, recipe.train_split),
            OccupancyVAEConfig(**model_kwargs).num_classes,
            recipe.class_weight_samples,
        )
        model_kwargs["class_weights"] = class_weights_from_counts(counts)
    return train_vae(
        recipe.dataset,
        training_args=TrainingArguments(**recipe.training),
        model_config=OccupancyVAEConfig(**model_kwargs),
        eval_dataset=recipe.dataset if recipe.eval_split is not None else None,
        train_split=recipe.train_split,
        eval_split=recipe.eval_split if recipe.eval_split is not None else "val",
        max_eval_samples=recipe.max_eval_samples,
        resume_from_checkpoint=recipe.resume_from_checkpoint,
    )


__all__ = [
    "OccupancyVAETrainer",
    "VAERecipe",
    "VAETrainingResult",
    "class_voxel_counts",
    "class_weights_from_counts",
    "collate_occupancy",
    "evaluate_reconstruction",
    "load_occupancy_dataset",
    "train_from_config",
    "train_vae",
]
