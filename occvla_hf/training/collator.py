"""`OccVLADataCollator`: dataset rows or per-sample processor outputs -> one padded batch for
`OccVLAForPlanning.forward`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from occvla_hf.constants import LABELLED_COLUMN
from occvla_hf.modeling.loss import IGNORE_INDEX
from occvla_hf.processing.processing_occvla import TASKS, OccVLAProcessor

# Row column of a cached VAE latent (C, H, W) (`latent_cache.OccupancyLatentCache`); batched as `occupancy_latents`.
OCCUPANCY_LATENT_COLUMN = "occupancy_latent"
# Dataset-row columns `OccVLAProcessor.from_rows` reads (plus `task` and the cached latent); the Trainer keeps them in
# the batches.
ROW_COLUMNS: tuple[str, ...] = (
    "task",
    LABELLED_COLUMN,
    "images",
    "question",
    "answer",
    "meta_action",
    "reasoning",
    "ego_status",
    "ego_status_valid",
    "past_trajectory",
    "past_trajectory_mask",
    "trajectory",
    "trajectory_mask",
    "semantics",
    "mask_camera",
    OCCUPANCY_LATENT_COLUMN,
)
OCCUPANCY_ROW_COLUMNS: tuple[str, ...] = ("semantics", "mask_camera")
OCCUPANCY_INPUTS: tuple[str, ...] = ("occupancy", "occupancy_mask", "occupancy_latents", "occupancy_sample_mask")
# Batch keys that are padded along the sequence, with their padding value (None: the tokenizer's pad id).
_SEQUENCE_PADDING: dict[str, int | None] = {
    "input_ids": None,
    "attention_mask": 0,
    "token_type_ids": 0,
    "labels": IGNORE_INDEX,
}
# Per-sample keys stacked as they are; a batch has each either for every sample or for none.
_STACKED_INPUTS: tuple[str, ...] = ("pixel_values", "ego_status", "ego_history", "trajectory", "trajectory_mask")


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
    occupancy columns, a cached `occupancy_latent` (C, H, W) and a `task` column), which go through
    `processor.from_rows` (the latents are stacked as `occupancy_latents`), or per-sample processor outputs
    (`input_ids` (L,) or (1, L), `pixel_values` (V, 3, H, W) or (1, V, 3, H, W), `occupancy_latents` (C, H, W),
    ...), which are padded and stacked.
    Padding is on the right (training): `input_ids` with the tokenizer's pad id, `attention_mask`/`token_type_ids`
    with 0, `labels` with -100.

    Mixed batches. All samples of a batch must share a task (planning prompts end with `<traj>`, QA prompts do not);
    `OccVLATrainer` groups batches by task for datasets with a `tasks` attribute. When only some samples of a batch
    have occupancy targets (e.g. a keyframe without Occ3D labels), the others get all-zero placeholder targets (and
    an all-False `occupancy_mask`) and `occupancy_sample_mask` (batch,) bool marks the samples with targets: the
    occupancy terms average over those samples, and count only them (`modeling.loss.loss_item_counts`). A sample
    counts when it has every kind of target (grids, cached latents) the batch carries. `ego_status`,
    `trajectory`(`_mask`) and `pixel_values` must be present for all samples or for none.

    Occupancy-only rows. A row whose `labelled` column is False (label-scarce data) gives its model inputs and
    occupancy targets only (`processor.from_rows`): labels all -100 and an all-False `trajectory_mask`, so the LM and
    trajectory terms count none of its items and it adds nothing to them (a batch of such rows has those terms at
    0, with zero gradient). A feature that is a list of rows (`JointDataset` pairs each labelled planning row with
    an occupancy-only row) gives each of its rows as a sample.

    Args:
        processor: turns dataset rows into model inputs; its tokenizer gives the pad id of processed samples.
        occupancy_supervision: `False` drops every occupancy target, so the model never builds occupancy queries
            (the ablation: same data, no occupancy term).
        pad_token_id: pad id for processed samples without a processor.
        pad_to_multiple_of: round the padded length of processed samples up to a multiple of this.
        normalize_images: `False` leaves the rows' `pixel_values` as resized uint8 (`processor.from_rows`'s
            `normalize_images`): a quarter of the bytes, and the float work moves off the loader; `OccVLATrainer`
            normalises them on the device.
    """

    processor: OccVLAProcessor | None = None
    occupancy_supervision: bool = True
    pad_token_id: int | None = None
    pad_to_multiple_of: int | None = None
    normalize_images: bool = True

    def __call__(self, features: Sequence[Mapping[str, Any] | Sequence[Mapping[str, Any]]]) -> dict[str, torch.Tensor]:
        # a list is several rows of one index (`JointDataset`: a labelled planning row and its occupancy-only row)
        features = [row for feature in features for row in (feature if isinstance(feature, list) else [feature])]
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
        if not self.occupancy_supervision:
            rows = [_without(row, (*OCCUPANCY_ROW_COLUMNS, OCCUPANCY_LATENT_COLUMN)) for row in rows]
        rows, sample_mask = _with_placeholder_targets(rows, ("semantics", OCCUPANCY_LATENT_COLUMN), "mask_camera")
        latents = [row.get(OCCUPANCY_LATENT_COLUMN) for row in rows]
        rows = [_without(row, (OCCUPANCY_LATENT_COLUMN,)) for row in rows]
        batch = dict(
            self.processor.from_rows(rows, task=tasks.pop(), training=True, normalize_images=self.normalize_images)
        )
        if all(latent is not None for latent in latents):
            stacked = [{OCCUPANCY_LATENT_COLUMN: torch.as_tensor(latent)} for latent in latents]
            batch["occupancy_latents"] = _stack(stacked, OCCUPANCY_LATENT_COLUMN)
        if sample_mask is not None:
            batch["occupancy_sample_mask"] = sample_mask
        return batch

    def _pad_id(self) -> int:
        if self.pad_token_id is not None:
            return self.pad_token_id
        if self.processor is not None:
            return self.processor.tokenizer.pad_token_id
        raise ValueError("pad_token_id: required to pad processed samples when no processor is given")

    def _from_processed(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        samples = [_unbatched(feature, index) for index, feature in enumerate(features)]
        samples, sample_mask = _with_placeholder_targets(samples, ("occupancy", "occupancy_latents"), "occupancy_mask")
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
        if all("occupancy_latents" in sample for sample in samples):
            batch["occupancy_latents"] = _stack(samples, "occupancy_latents")
        if sample_mask is not None:
            batch["occupancy_sample_mask"] = sample_mask
        return batch


def _without(sample: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: value for key, value in sample.items() if key not in keys}


def _with_placeholder_targets(
    samples: Sequence[Mapping[str, Any]], target_keys: Sequence[str], mask_key: str
) -> tuple[list[dict[str, Any]], torch.Tensor | None]:
    """Samples where some lack occupancy targets, completed with all-zero placeholders, and which have them.

    `target_keys`: the kinds of target (grids, cached latents); `mask_key`: the voxel mask, all False (zeros) in a
    placeholder. Returns the samples unchanged and None when every sample has every kind the batch carries (or the
    batch carries none); without the occupancy keys and None when no sample has them all; else the completed
    samples and the (batch,) bool mask of the samples that have every kind.
    """
    kinds = [key for key in target_keys if any(sample.get(key) is not None for sample in samples)]
    complete = [all(sample.get(key) is not None for key in kinds) for sample in samples]
    if all(complete):
        return [dict(sample) for sample in samples], None
    if not any(complete):
        return [_without(sample, (*target_keys, mask_key)) for sample in samples], None
    filled = []
    for sample, has_targets in zip(samples, complete):
        sample = dict(sample)
        for key in kinds if has_targets else (*kinds, mask_key):
            template = next((other[key] for other in samples if other.get(key) is not None), None)
            if sample.get(key) is None and template is not None:
                sample[key] = (
                    torch.zeros_like(template) if isinstance(template, torch.Tensor) else np.zeros_like(template)
                )
        filled.append(sample)
    return filled, torch.tensor(complete)


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


__all__ = [
    "OCCUPANCY_INPUTS",
    "OCCUPANCY_LATENT_COLUMN",
    "OCCUPANCY_ROW_COLUMNS",
    "ROW_COLUMNS",
    "OccVLADataCollator",
    "row_task",
]
