"""Stage 2: joint OccVLA training on driving QA + planning, with implicit occupancy supervision.

`train_joint(recipe)` runs one `JointRecipe` (`configs/joint.yaml`, which comments every key; the ablation
`configs/joint_no_occ.yaml` extends it with `occupancy_supervision: false`) in named steps: it loads the
`planning`/`qa`/`occupancy` datasets built by `occvla-hf data build`, builds the model (`from_pretrained`, `from_vlm`
or a fresh `config`) and its processor (a new processor fits its ego-status statistics, and a new model's trajectory
head then starts as the constant-velocity planner of that ego status), attaches the frozen stage-1 occupancy VAE,
optionally freezes the vision tower or wraps the language model in LoRA adapters (peft), trains with
`OccVLATrainer` (bf16, activation checkpointing, resume, evaluation with planning L2 as `metric_for_best_model`,
push_to_hub: all `TrainingArguments`), then writes the final model, processor, model card and `trainer_state.json`
(all logs) to `training.output_dir`.
Command line: `occvla-hf train joint --config configs/joint.yaml [--section.key VALUE ...]`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    PreTrainedConfig,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from occvla_hf.class_labels import NO_LABEL_NAME, label_name
from occvla_hf.constants import CAMERA_NAMES, DATA_SOURCES, PLANNING_TARGETS
from occvla_hf.data.keyframes import join_keyframes, require_images
from occvla_hf.data.load import load_configs
from occvla_hf.data.occ3d import decode_mask, decode_semantics
from occvla_hf.data.provenance import recorded_source
from occvla_hf.data.schema import IMAGES_CONFIG, labelled_mask
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning, default_lora_config, load_pretrained
from occvla_hf.modeling.loading import check_checkpoint_folder
from occvla_hf.modeling.lora import import_peft
from occvla_hf.modeling.occupancy_vae import OccupancyVAE
from occvla_hf.processing import OccVLAProcessor, build_tokenizer
from occvla_hf.processing.processing_occvla import TASKS

from .collator import OCCUPANCY_LATENT_COLUMN, OCCUPANCY_ROW_COLUMNS, ROW_COLUMNS, OccVLADataCollator
from .image_cache import ImageCache, open_image_cache
from .latent_cache import OccupancyLatentCache, open_occupancy_latent_cache
from .metrics import planning_l2_metrics
from .model_card import ModelCardInfo
from .recipe import Recipe, check_fields, check_training_arguments, parse_section, resolve_resume_checkpoint
from .trainer import OccVLATrainer, check_gradient_norm_steps
from .weight_schedule import OccupancyWeightSchedule

logger = logging.getLogger(__name__)

STAGE_NAME: str = "joint"
# Weights are trained in float32 whatever the checkpoint stores (PaliGemma-2 ships bfloat16): `training.bf16` is
# mixed precision (bf16 autocast over float32 weights and optimiser states), not bf16 weights.
TRAINING_DTYPE = torch.float32


# ---------------------------------------------------------------------------------------------------- recipe


@dataclass(frozen=True, kw_only=True)
class ModelRecipe:
    """The `model` section: where the model comes from.

    Args:
        from_pretrained: an OccVLA checkpoint and its processor.
        from_vlm: a PaliGemma-family checkpoint (SigLIP + Gemma); the processor is built from its tokenizer and image
            processor. Neither: random init from `config`, with the package's offline tokenizer.
        num_views: cameras in `CAMERA_NAMES` order, with `from_vlm` (default: all six); with `from_pretrained` it
            must be the checkpoint's (so a recipe written for `from_vlm` runs on a checkpoint unchanged).
        config: `OccVLAConfig` fields; a new model takes `occupancy_latent_shape` and `occupancy_num_classes` from the
            occupancy VAE unless given. With `from_pretrained` they override the checkpoint's config, except values
            that would reshape its weights: those keep the checkpoint's (`pretrained_config`).
        attn_implementation: the attention kernels, one of `ATTENTION_IMPLEMENTATIONS` for the whole model or a
            mapping `{text_config: ..., vision_config: ...}` (language model, vision tower); None: transformers'
            choice (SDPA, or eager where SDPA cannot express the layer, as Gemma-2's attention-logit soft-capping).
            `{text_config: flex_attention, vision_config: sdpa}` runs Gemma-2 layers, soft-capping included, in
            flex attention (compiled kernels: CUDA).
    """

    from_pretrained: str | None = None
    from_vlm: str | None = None
    num_views: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str | dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.from_pretrained and self.from_vlm:
            raise ValueError("model: give from_pretrained or from_vlm, not both")
        if self.num_views is not None and not (self.from_vlm or self.from_pretrained):
            raise ValueError("model.num_views: only used with from_vlm; set model.config.num_views instead")
        check_fields(self.config, OccVLAConfig, "model.config")
        check_attn_implementation(self.attn_implementation)


ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa", "flex_attention")
ATTENTION_SUBCONFIGS: tuple[str, ...] = ("text_config", "vision_config")


def check_attn_implementation(value: str | Mapping[str, str] | None) -> None:
    """ValueError naming `model.attn_implementation` unless `value` is None, an implementation, or a mapping of
    `ATTENTION_SUBCONFIGS` keys to implementations."""
    expected = f"one of {ATTENTION_IMPLEMENTATIONS} or a mapping of {ATTENTION_SUBCONFIGS} to them"
    if value is None or (isinstance(value, str) and value in ATTENTION_IMPLEMENTATIONS):
        return
    if isinstance(value, Mapping) and value and set(value) <= set(ATTENTION_SUBCONFIGS):
        if all(isinstance(v, str) and v in ATTENTION_IMPLEMENTATIONS for v in value.values()):
            return
    raise ValueError(f"model.attn_implementation: expected {expected}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DataRecipe:
    """The `data` section: the datasets of `occvla-hf data build` and what is trained and evaluated on.

    Args:
        path: an `occvla-hf data build` output folder or a Hub dataset id with the same configs.
        source: `nuscenes` | `sim`, the licence and wording of the model card; default (None): the source the
            dataset card records (`occvla-hf data build` writes it); when both are there they must agree.
        tasks: the dataset configs trained on (a subset of `planning`, `qa`); batches never mix tasks.
        train_split: split trained on.
        eval_split: split whose planning rows are scored during training (L2); None: no evaluation.
        max_eval_samples: evenly spaced subset of the eval split; None: all.
    """

    path: str = field(metadata={"help": "an `occvla-hf data build` output folder or a Hub dataset id"})
    source: str | None = None
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    train_split: str = "train"
    eval_split: str | None = None
    max_eval_samples: int | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in DATA_SOURCES:
            raise ValueError(f"data.source: expected one of {DATA_SOURCES} or null, got {self.source!r}")
        if not self.tasks or sorted(set(self.tasks) - set(TASKS)):
            raise ValueError(f"data.tasks: expected a non-empty subset of {TASKS}, got {self.tasks}")


@dataclass(frozen=True, kw_only=True)
class JointRecipe(Recipe):
    """A stage-2 recipe (`configs/joint.yaml`, which comments every key).

    Args:
        model: where the model comes from (`ModelRecipe`).
        occupancy_vae: stage-1 VAE checkpoint; loaded whenever given (also by the ablation, so that both models are
            the same), required for occupancy supervision unless the `from_pretrained` checkpoint carries one.
        occupancy_supervision: `False` never passes occupancy targets, so occupancy queries are never built.
        occupancy_latent_cache: a folder of the frozen VAE's latents per split (`<split>.safetensors`, built on first
            use, checked against the VAE after that): the latent loss reads them instead of encoding grids at every
            step, and grids are decoded only for the voxel loss (weight > 0). Unused without occupancy supervision.
        occupancy_weight_schedule: the occupancy weight per optimiser step (`OccupancyWeightSchedule`).
        data: the datasets (`DataRecipe`).
        planning_target: the planning answer trained on, `meta_action` or `reasoning` (the row's reasoning text, then
            the meta-action); set on the processor, which builds the answers and is saved with the model.
        use_command: planning prompts carry the UniAD / VAD high-level command (derived from the future trajectory:
            it leaks the ground truth, see `meta_action.command_from_trajectory`); set on the processor.
        freeze_vision_tower: train without updating the vision tower.
        lora: `peft.LoraConfig` fields (`r`, `lora_alpha`, `lora_dropout`, `target_modules` inside the language
            model); None: full fine-tuning.
        resume_from_checkpoint: a checkpoint folder, or True for the last complete one in `training.output_dir`.
        gradient_norm_steps: log each loss term's gradient norm on the shared layers this often (`OccVLATrainer`);
            0 never.
        normalize_images_on_device: the loader hands over resized uint8 images and the trainer normalises them on
            the device (same values; a quarter of the bytes and less of the loader's CPU time).
        image_cache: a folder of the resized camera views per split (`<folder>/<split>/`, `training.image_cache`,
            built on first use by the main process, checked against the processor after that): the loader then
            decodes and resizes no image.
        training: `transformers.TrainingArguments` fields; `output_dir` is required.
    """

    STAGE: ClassVar[str] = STAGE_NAME

    stage: str = STAGE_NAME
    model: ModelRecipe = field(default_factory=ModelRecipe)
    occupancy_vae: str | None = None
    occupancy_supervision: bool = True
    occupancy_latent_cache: str | None = None
    occupancy_weight_schedule: OccupancyWeightSchedule = field(default_factory=OccupancyWeightSchedule)
    data: DataRecipe
    planning_target: Literal[PLANNING_TARGETS] = PLANNING_TARGETS[0]
    use_command: bool = False
    freeze_vision_tower: bool = False
    lora: dict[str, Any] | None = None
    resume_from_checkpoint: str | bool | None = None
    gradient_norm_steps: int = 0
    normalize_images_on_device: bool = False
    image_cache: str | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_gradient_norm_steps(self.gradient_norm_steps)
        if self.lora is not None:
            check_fields(self.lora, import_peft().LoraConfig, "lora")
        check_training_arguments(self.training)

    @property
    def dataset_configs(self) -> list[str]:
        """The dataset configs the run reads: its tasks (and `planning`, whose rows hold the images of the QA rows),
        and `occupancy` with occupancy supervision."""
        images = [IMAGES_CONFIG] if IMAGES_CONFIG not in self.data.tasks else []
        return [*self.data.tasks, *images, *(["occupancy"] if self.occupancy_supervision else [])]


# ------------------------------------------------------------------------------------------------------ data


class JointDataset(torch.utils.data.Dataset):
    """Rows of several task datasets behind one index, each row tagged with its `task`.

    Planning rows without any future (a scene's last keyframe: empty `meta_action`, no valid waypoint) are left out:
    they have no target to learn. Planning rows whose keyframe has Occ3D labels in `occupancy` get them decoded as
    `semantics` (X, Y, Z) uint8 and `mask_camera` (X, Y, Z) bool, and those with a latent in `occupancy_latents` get
    it as `occupancy_latent` (C, H, W) (both joined by `sample_token`). Only the columns the collator reads are kept,
    so camera calibration and agent boxes are never decoded. `tasks` (one per index) lets `OccVLATrainer` batch by
    task.

    Label-scarce data: planning rows whose `labelled` column is False (`data.schema.labelled_mask`) are occupancy-only
    rows. With occupancy targets (`occupancy` or `occupancy_latents`) those whose keyframe has every kind given are
    kept, and the collator turns them into inputs with occupancy targets and no task target; without, they are left
    out. They are not in the index: the index (and `tasks`) holds the labelled rows only, the same with occupancy
    targets as without, so that both train on the same task rows equally often. Instead each labelled planning row
    takes one occupancy-only row along into its batch: `TaskGroupedSampler` gives it the index
    `(row, occupancy_only_row)` (`occupancy_only_rows` of them to choose from), which returns both rows as a list,
    and the collator batches the rows of the list (the same prompt, `<traj>` included). Unlabelled rows of the other
    tasks are left out (occupancy targets attach to planning rows). `row_counts` holds the rows of each kind
    (`planning`: labelled, `planning_occupancy_only`, `qa`), `describe()` says it in words.

    Args:
        datasets: task name (`planning`, `qa`) -> rows of that dataset config.
        occupancy: rows of the `occupancy` config (compressed grids), or None for no occupancy grids.
        occupancy_latents: cached VAE latents of the occupancy targets, or None.
        images: resized camera views of every row's keyframe (`training.image_cache`), or None: with a cache the
            `images` column is never read, and each row's `images` are its keyframe's cached (H, W, 3) uint8 views.
            Without a cache every task's rows must come with their images (QA rows joined with their keyframes':
            `data.join_keyframes`).
    """

    def __init__(
        self,
        datasets: Mapping[str, Dataset],
        occupancy: Dataset | None = None,
        occupancy_latents: OccupancyLatentCache | None = None,
        images: ImageCache | None = None,
    ) -> None:
        unknown = sorted(set(datasets) - set(TASKS))
        if unknown or not datasets:
            raise ValueError(f"datasets: expected tasks among {TASKS}, got {sorted(datasets)}")
        self.occupancy_rows = (
            {} if occupancy is None else {token: row for row, token in enumerate(occupancy["sample_token"])}
        )
        self.occupancy_latents = occupancy_latents
        datasets = {  # occupancy targets attach to planning rows: an unlabelled row of another task has none
            task: rows if task == "planning" else rows.select(np.flatnonzero(labelled_mask(rows)))
            for task, rows in datasets.items()
        }
        self.row_counts = {task: len(rows) for task, rows in datasets.items()}
        occupancy_only = None
        if "planning" in datasets:
            planning, occupancy_only = self._planning_rows(datasets["planning"], with_occupancy=occupancy is not None)
            datasets = {**datasets, "planning": planning}
            self.row_counts.update(planning=len(planning), planning_occupancy_only=len(occupancy_only))
        for task, rows in [*datasets.items(), *([("planning", occupancy_only)] if occupancy_only else [])]:
            if images is not None:
                images.check(rows["sample_token"])
            else:
                require_images(rows, f"datasets[{task!r}]")
        skipped = {"images"} if images is not None else set()

        def row_columns(rows: Dataset) -> Dataset:
            keep = [c for c in rows.column_names if (c in ROW_COLUMNS or c == "sample_token") and c not in skipped]
            return rows.select_columns(keep)

        self.datasets = {task: row_columns(rows) for task, rows in datasets.items()}
        self.occupancy_only = row_columns(occupancy_only) if occupancy_only else None
        self.images = images
        self.index = [(task, row) for task, rows in self.datasets.items() for row in range(len(rows))]
        self.tasks = [task for task, _ in self.index]
        self.occupancy = None if occupancy is None else occupancy.select_columns(list(OCCUPANCY_ROW_COLUMNS))

    def _planning_rows(self, rows: Dataset, with_occupancy: bool) -> tuple[Dataset, Dataset]:
        """(the labelled planning rows with a future, the occupancy-only rows): the unlabelled ones whose keyframe
        has every kind of occupancy target given (none without targets)."""
        labelled = labelled_mask(rows)
        keep = labelled & np.array([_has_meta_action(value) for value in rows["meta_action"]], dtype=bool)
        occupancy_only = np.zeros(len(rows), dtype=bool)
        if with_occupancy or self.occupancy_latents is not None:
            has_targets = [
                (not with_occupancy or token in self.occupancy_rows)
                and (self.occupancy_latents is None or token in self.occupancy_latents)
                for token in rows["sample_token"]
            ]
            occupancy_only = ~labelled & np.asarray(has_targets, dtype=bool)
        return rows.select(np.flatnonzero(keep)), rows.select(np.flatnonzero(occupancy_only))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def occupancy_only_rows(self) -> int:
        """How many occupancy-only rows `TaskGroupedSampler` pairs with the labelled planning rows."""
        return 0 if self.occupancy_only is None else len(self.occupancy_only)

    def describe(self) -> str:
        """`row_counts` in words, e.g. `planning 12 labelled + 30 occupancy-only, qa 24`."""
        counts = self.row_counts
        parts = [f"qa {counts['qa']}"] if "qa" in counts else []
        if "planning" in counts:
            occupancy_only = counts["planning_occupancy_only"]
            parts.insert(0, f"planning {counts['planning']} labelled + {occupancy_only} occupancy-only")
        return ", ".join(parts)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any] | list[dict[str, Any]]:
        """The row at `index`; for `(index, occupancy_only_row)` (from `TaskGroupedSampler`) that row and the
        occupancy-only row, as a list."""
        if isinstance(index, tuple):
            row_index, partner = index
            if self.occupancy_only is None or self.tasks[row_index] != "planning":
                raise IndexError(f"index: {index} pairs a row with an occupancy-only row, which only planning rows do")
            return [self[row_index], self._row("planning", self.occupancy_only[partner])]
        task, row_index = self.index[index]
        return self._row(task, self.datasets[task][row_index])

    def _row(self, task: str, stored: dict[str, Any]) -> dict[str, Any]:
        row = {**stored, "task": task}
        if self.images is not None:
            row["images"] = self.images.views(row["sample_token"])
        token = row.get("sample_token") if task == "planning" else None
        occupancy_row = self.occupancy_rows.get(token)
        if occupancy_row is not None:
            grid = self.occupancy[occupancy_row]
            row["semantics"] = decode_semantics(grid["semantics"])
            row["mask_camera"] = decode_mask(grid["mask_camera"])
        if self.occupancy_latents is not None and token in self.occupancy_latents:
            row[OCCUPANCY_LATENT_COLUMN] = self.occupancy_latents[token]
        return row


def _has_meta_action(meta_action: int | str) -> bool:
    """Whether a planning row has a meta-action (its class id or text; a keyframe without future has none)."""
    return label_name("meta_action", meta_action) != NO_LABEL_NAME


def load_training_data(path: str, configs: Sequence[str]) -> dict[str, DatasetDict]:
    """The dataset configs named by `configs` from an `occvla-hf data build` output folder or a Hub dataset id
    (`data.load.load_configs`)."""
    return load_configs(path, configs)


def _split(datasets: Mapping[str, DatasetDict], config: str, split: str) -> Dataset:
    if split not in datasets[config]:
        raise ValueError(f"data: the {config} config has no split {split!r} (found {sorted(datasets[config])})")
    return datasets[config][split]


# ----------------------------------------------------------------------------------------------------- model


def build_model_and_processor(
    section: ModelRecipe | Mapping[str, Any], occupancy_vae: OccupancyVAE | None = None
) -> tuple[OccVLAForPlanning, OccVLAProcessor, bool]:
    """The model and its processor from the recipe's `model` section, with its `attn_implementation`; the flag says
    whether the processor is new (its ego-status statistics still have to be fitted)."""
    section = parse_section(ModelRecipe, section, "model")
    model, processor, new_processor = _build_model_and_processor(section, occupancy_vae)
    if section.attn_implementation is not None:
        model.set_attn_implementation(section.attn_implementation)
    return model, processor, new_processor


def _build_model_and_processor(
    section: ModelRecipe, occupancy_vae: OccupancyVAE | None
) -> tuple[OccVLAForPlanning, OccVLAProcessor, bool]:
    """`build_model_and_processor` before the attention choice. A new model (`from_vlm`, `config`) takes its
    `occupancy_latent_shape` and `occupancy_num_classes` from `occupancy_vae` unless the config sets them. Checkpoints
    load in `TRAINING_DTYPE`."""
    config_kwargs = dict(section.config)
    if section.from_pretrained:
        config = pretrained_config(section.from_pretrained, config_kwargs)
        if section.num_views is not None and section.num_views != config.num_views:
            raise ValueError(
                f"model.num_views: {section.num_views}, but the checkpoint {section.from_pretrained} has "
                f"{config.num_views} views"
            )
        model = load_pretrained(OccVLAForPlanning, section.from_pretrained, config=config, dtype=TRAINING_DTYPE)
        return model, OccVLAProcessor.from_pretrained(section.from_pretrained), False
    if occupancy_vae is not None:
        config_kwargs.setdefault("occupancy_latent_shape", tuple(occupancy_vae.config.latent_shape))
        config_kwargs.setdefault("occupancy_num_classes", occupancy_vae.config.num_classes)
    if section.from_vlm:
        path = section.from_vlm
        vision = AutoConfig.from_pretrained(path).vision_config
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = AutoImageProcessor.from_pretrained(path)
        processor = OccVLAProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            num_views=section.num_views if section.num_views is not None else len(CAMERA_NAMES),
            image_seq_length=(vision.image_size // vision.patch_size) ** 2,
            ego_history_steps=config_kwargs.get("ego_history_steps", 0),
        )  # adds `<traj>` to the tokenizer: its id goes into the model config
        model = OccVLAForPlanning.from_vlm(
            path,
            num_views=processor.num_views,
            traj_token_id=processor.traj_token_id,
            dtype=TRAINING_DTYPE,
            **config_kwargs,
        )
        processor.use_ego_status = model.config.use_ego_status
        processor.trajectory_position = model.config.trajectory_position
        return model, processor, True
    tokenizer = build_tokenizer()
    text_config = dict(config_kwargs.pop("text_config", None) or {})
    text_config.setdefault("vocab_size", len(tokenizer))
    config_kwargs.setdefault("image_token_id", tokenizer.image_token_id)
    config_kwargs.setdefault("traj_token_id", tokenizer.traj_token_id)
    config_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = OccVLAConfig(text_config=text_config, **config_kwargs)
    return OccVLAForPlanning(config), OccVLAProcessor.from_model_config(config, tokenizer), True


def pretrained_config(path: str, overrides: Mapping[str, Any]) -> OccVLAConfig:
    """The config to load the OccVLA checkpoint at `path` with: its own, with the recipe's `model.config` values that
    leave every weight's shape as saved (loss weights, ...). A value that would reshape a weight (a head width, the
    query layout, the ego-status input: the sizes a new model is built with, as `configs/joint.yaml` gives them for
    `from_vlm`) keeps the checkpoint's, and a warning names it. The result is validated as a whole."""
    check_checkpoint_folder(path)
    saved = OccVLAConfig.from_pretrained(path)
    shapes = _weight_shapes(saved)
    config, kept = saved, {}
    for key, value in overrides.items():
        if _weight_shapes(_with_value(saved, key, value)) == shapes:
            config = _with_value(config, key, value)
        else:
            kept[key] = value
    if kept:
        logger.warning(
            "model.config: %s keeps its own %s; the recipe's values would reshape its weights (%s)",
            path,
            ", ".join(f"{key}={_saved_value(saved, key, value)!r}" for key, value in kept.items()),
            ", ".join(f"{key}={value!r}" for key, value in kept.items()),
        )
    return OccVLAConfig.from_dict(config.to_dict())


def _with_value(config: OccVLAConfig, key: str, value: Any) -> OccVLAConfig:
    """A copy of `config` with `key` set to `value`; a mapping for a sub-config (`text_config`, `vision_config`)
    changes only the keys it names."""
    config = copy.deepcopy(config)
    current = getattr(config, key)
    if isinstance(current, PreTrainedConfig) and isinstance(value, Mapping):
        value = type(current).from_dict({**current.to_dict(), **value})
    setattr(config, key, value)
    return config


def _saved_value(config: OccVLAConfig, key: str, value: Any) -> Any:
    """What `config` holds where the override `key: value` would go (of a sub-config, the keys `value` names)."""
    current = getattr(config, key)
    if isinstance(current, PreTrainedConfig) and isinstance(value, Mapping):
        return {name: getattr(current, name, None) for name in value}
    return current


def _weight_shapes(config: OccVLAConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of a model of `config` (built on the meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        model = OccVLAForPlanning(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_processor_matches_model(processor: OccVLAProcessor, config: OccVLAConfig) -> None:
    """ValueError naming the first field where processor and model disagree (token ids, views, image tokens)."""
    pairs = {
        "image_token_id": (processor.image_token_id, config.image_token_id),
        "traj_token_id": (processor.traj_token_id, config.traj_token_id),
        "num_views": (processor.num_views, config.num_views),
        "image_seq_length": (processor.image_seq_length, config.image_seq_length),
        "use_ego_status": (processor.use_ego_status, config.use_ego_status),
        "trajectory_position": (processor.trajectory_position, config.trajectory_position),
        "ego_history_steps": (processor.ego_history_steps, config.ego_history_steps),
    }
    for name, (from_processor, from_config) in pairs.items():
        if from_processor != from_config:
            raise ValueError(f"{name}: the processor has {from_processor}, the model config {from_config}")
    if len(processor.tokenizer) > config.text_config.vocab_size:
        raise ValueError(
            f"text_config.vocab_size: {config.text_config.vocab_size} is smaller than the tokenizer "
            f"({len(processor.tokenizer)} tokens)"
        )


def attach_occupancy_vae(model: OccVLAForPlanning, vae: OccupancyVAE) -> None:
    """Checks the VAE's latent against the model's occupancy head and attaches it, frozen."""
    if tuple(vae.config.latent_shape) != tuple(model.config.occupancy_latent_shape):
        raise ValueError(
            f"occupancy_vae: the VAE encodes to a {vae.config.latent_shape} latent, the model's "
            f"occupancy_latent_shape is {model.config.occupancy_latent_shape}"
        )
    model.set_occupancy_vae(vae)


def apply_lora(model: OccVLAForPlanning, section: Mapping[str, Any]) -> torch.nn.Module:
    """Wraps the model in peft LoRA adapters, `default_lora_config(**section)`: adapters on the language model's
    `target_modules`, the new heads and occupancy queries trained fully, everything else frozen."""
    peft_model = import_peft().get_peft_model(model, default_lora_config(**section))
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / total)
    return peft_model


# ---------------------------------------------------------------------------------------------------- recipe


@dataclass
class JointTrainingResult:
    """What `train_joint` produced.

    Args:
        model: the trained model (LoRA adapters merged), in eval mode.
        processor: its processor (saved next to it).
        output_dir: folder of the final checkpoint, processor and model card (README.md).
        metrics: final evaluation metrics (`eval_stp3_l2_avg_m`, `eval_lm_loss`, ...); empty without eval split.
        log_history: the Trainer's logs (training loss terms per logging step, evaluations).
    """

    model: OccVLAForPlanning
    processor: OccVLAProcessor
    output_dir: Path
    metrics: dict[str, float]
    log_history: list[dict[str, Any]]


def train_joint(
    recipe: JointRecipe | Mapping[str, Any], callbacks: Sequence[TrainerCallback] = ()
) -> JointTrainingResult:
    """Runs one stage-2 recipe (a `JointRecipe`, or the parsed `configs/joint.yaml`; see the module docstring);
    `callbacks` are added to the Trainer's (e.g. to time the steps)."""
    recipe = JointRecipe.from_dict(recipe)
    args = TrainingArguments(**recipe.training)
    datasets = load_training_data(recipe.data.path, recipe.dataset_configs)
    model, processor = prepare_model(recipe, datasets, seed=args.seed)
    trained_model = apply_lora(model, recipe.lora) if recipe.lora else model
    train_dataset, eval_dataset = joint_datasets(recipe, datasets, model, args, processor)
    if args.should_log:
        print(f"training rows ({recipe.data.train_split}): {train_dataset.describe()}", flush=True)
    trainer = OccVLATrainer(
        model=trained_model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        data_collator=OccVLADataCollator(
            processor,
            occupancy_supervision=recipe.occupancy_supervision,
            normalize_images=not recipe.normalize_images_on_device,
        ),
        compute_metrics=planning_l2_metrics if eval_dataset is not None else None,
        occupancy_weight_schedule=recipe.occupancy_weight_schedule,
        model_card_info=_model_card_info(recipe, args, trained_model),
        gradient_norm_steps=recipe.gradient_norm_steps,
        callbacks=list(callbacks),
    )
    return _train_and_save(trainer, recipe, processor, evaluate=eval_dataset is not None)


def prepare_model(
    recipe: JointRecipe, datasets: Mapping[str, DatasetDict], seed: int
) -> tuple[OccVLAForPlanning, OccVLAProcessor]:
    """The model and processor to train: built from `recipe.model` (new parameters seeded with `seed`), a new
    processor's ego-status statistics fitted on the planning rows of the training split (its ego-history statistics
    too, with `ego_history_steps`; and a new trajectory head set to the constant-velocity planner of the ego status,
    or without it of the ego history), the occupancy VAE attached, the vision tower frozen
    if asked."""
    vae = load_pretrained(OccupancyVAE, recipe.occupancy_vae) if recipe.occupancy_vae else None
    set_seed(seed)  # new parameters (heads, queries, LoRA) start the same in every run with this seed
    model, processor, new_processor = build_model_and_processor(recipe.model, vae)
    check_processor_matches_model(processor, model.config)
    processor.planning_target, processor.use_command = recipe.planning_target, recipe.use_command
    if new_processor and "planning" in recipe.data.tasks:
        ego = _split(datasets, "planning", recipe.data.train_split).select_columns(["ego_status", "ego_status_valid"])
        ego = ego.with_format("numpy")[:]
        processor.fit_ego_status_stats(ego["ego_status"], np.asarray(ego["ego_status_valid"], dtype=bool))
        if model.config.ego_history_steps:
            columns = ["past_trajectory", "past_trajectory_mask"]
            past = _split(datasets, "planning", recipe.data.train_split).select_columns(columns).with_format("numpy")[:]
            processor.fit_ego_history_stats(past["past_trajectory"], np.asarray(past["past_trajectory_mask"], bool))
        if model.config.use_ego_status or model.config.ego_history_steps:  # a new head: the constant-velocity planner
            model.trajectory_head.init_constant_velocity(
                processor.ego_status_mean,
                processor.ego_status_std,
                processor.ego_history_mean,
                processor.ego_history_std,
            )
    if vae is not None:
        attach_occupancy_vae(model, vae)
    if recipe.occupancy_supervision and model.occupancy_vae is None:
        raise ValueError("occupancy_vae: required for occupancy supervision (a stage-1 checkpoint folder)")
    if recipe.freeze_vision_tower:
        model.model.vision_tower.requires_grad_(False)
    return model, processor


def joint_datasets(
    recipe: JointRecipe,
    datasets: Mapping[str, DatasetDict],
    model: OccVLAForPlanning,
    args: TrainingArguments,
    processor: OccVLAProcessor,
) -> tuple[JointDataset, JointDataset | None]:
    """(training rows of every task, planning rows of the eval split or None), with occupancy targets when the
    recipe supervises occupancy: the grids, or with `occupancy_latent_cache` the latents of `model`'s VAE (the
    cache of a split is built on first use, by the main process first) and the grids only for the voxel loss.

    Label-scarce data: the training rows include the occupancy-only rows when the recipe supervises occupancy
    (`JointDataset`); the eval rows are the labelled ones only (before `max_eval_samples` picks among them). The
    image cache of a split holds every keyframe of its rows, labelled or not, whichever run builds it first."""
    data = recipe.data

    def joint_rows(split: str, task_rows: Mapping[str, Dataset]) -> JointDataset:
        images = None
        # the rows that hold the images of the split's keyframes
        keyframes = task_rows[IMAGES_CONFIG] if IMAGES_CONFIG in task_rows else _split(datasets, IMAGES_CONFIG, split)
        if recipe.image_cache:
            path = Path(recipe.image_cache) / split
            with args.main_process_first(local=False, desc=f"image cache {path}"):
                images = open_image_cache([keyframes], processor, path, num_workers=args.dataloader_num_workers)
        else:
            task_rows = {
                task: join_keyframes(rows, keyframes, where=f"{task} {split}") for task, rows in task_rows.items()
            }
        if not recipe.occupancy_supervision:
            return JointDataset(task_rows, images=images)
        occupancy = _split(datasets, "occupancy", split)
        if not recipe.occupancy_latent_cache:
            return JointDataset(task_rows, occupancy, images=images)
        path = Path(recipe.occupancy_latent_cache) / f"{split}.safetensors"
        with args.main_process_first(local=False, desc=f"occupancy latent cache {path}"):
            latents = open_occupancy_latent_cache(occupancy, model.occupancy_vae, path, device=args.device)
        grids = occupancy if model.config.occupancy_voxel_loss_weight > 0 else None  # the voxel loss reads grids
        return JointDataset(task_rows, grids, latents, images)

    train_rows = {task: _split(datasets, task, data.train_split) for task in data.tasks}
    train_dataset = joint_rows(data.train_split, train_rows)
    if data.eval_split is None or "planning" not in data.tasks:
        return train_dataset, None
    planning = _split(datasets, "planning", data.eval_split)
    planning = planning.select(np.flatnonzero(labelled_mask(planning)))
    limit = data.max_eval_samples
    if limit is not None and limit < len(planning):
        planning = planning.select(np.linspace(0, len(planning) - 1, limit).round().astype(int).tolist())
    return train_dataset, joint_rows(data.eval_split, {"planning": planning})


def data_source(data: DataRecipe) -> str:
    """The source of the training data: what its dataset card records (`data.provenance.recorded_source`), checked
    against `data.source` when the recipe names one; the recipe's alone when the card records none."""
    recorded = recorded_source(data.path)
    if recorded is None:
        if data.source is None:
            raise ValueError(
                f"data.source: {data.path!r} records no source (built before the record, or by other tools); "
                f"name it in the recipe: one of {DATA_SOURCES}"
            )
        return data.source
    if data.source is not None and data.source != recorded.name:
        raise ValueError(f"data.source: the recipe says {data.source!r} but {data.path!r} records {recorded.name!r}")
    return recorded.name


def _model_card_info(recipe: JointRecipe, args: TrainingArguments, model: torch.nn.Module) -> ModelCardInfo:
    """What the model card states about the run: data licence, base model, occupancy supervision, LoRA rank."""
    return ModelCardInfo(
        training_data=data_source(recipe.data),
        model_name=args.hub_model_id or Path(args.output_dir).name,
        base_model=recipe.model.from_vlm or recipe.model.from_pretrained,
        datasets=[str(recipe.data.path)],
        occupancy_supervision=recipe.occupancy_supervision,
        lora_rank=model.peft_config["default"].r if recipe.lora else None,
        evaluation_data=str(recipe.data.path) if recipe.data.eval_split is not None else None,
        evaluation_split=recipe.data.eval_split,
    )


def _train_and_save(
    trainer: OccVLATrainer, recipe: JointRecipe, processor: OccVLAProcessor, evaluate: bool
) -> JointTrainingResult:
    """Trains (resuming if asked), evaluates, merges LoRA adapters, writes the checkpoint, processor, state and model
    card to `output_dir` and pushes them if `push_to_hub`."""
    args = trainer.args
    if recipe.lora and trainer.is_fsdp_enabled:
        raise ValueError("lora: not supported with FSDP by this recipe (adapters are merged in memory); use DDP")
    trainer.train(resume_from_checkpoint=resolve_resume_checkpoint(recipe.resume_from_checkpoint, args.output_dir))
    metrics = trainer.evaluate() if evaluate else {}
    if recipe.lora:
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json: every logged loss term and evaluation
    trainer.create_model_card()
    if args.push_to_hub:
        trainer.push_to_hub()
    return JointTrainingResult(
        model=trainer.model.eval(),
        processor=processor,
        output_dir=Path(args.output_dir),
        metrics=metrics,
        log_history=list(trainer.state.log_history),
    )


__all__ = [
    "DataRecipe",
    "JointDataset",
    "JointRecipe",
    "JointTrainingResult",
    "ModelRecipe",
    "apply_lora",
    "attach_occupancy_vae",
    "build_model_and_processor",
    "check_processor_matches_model",
    "data_source",
    "joint_datasets",
    "load_training_data",
    "prepare_model",
    "pretrained_config",
    "train_joint",
]
