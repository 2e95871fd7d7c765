"""Stage 2: joint OccVLA training on driving QA + planning, with implicit occupancy supervision.

`train_joint(recipe)` runs one YAML recipe (`configs/joint.yaml`; the ablation `configs/joint_no_occ.yaml` differs
only by `occupancy_supervision: false`): it builds the model (`from_pretrained`, `from_vlm` or a fresh `config`) and
its processor (a new processor fits its ego-status statistics, and a new model's trajectory head then starts as the
constant-velocity planner of that ego status), attaches the frozen stage-1 occupancy VAE, optionally freezes the
vision tower or wraps the language model in LoRA adapters (peft), loads the `planning`/`qa`/`occupancy` datasets built
by `occvla-hf data build`, trains with `OccVLATrainer` (bf16, activation checkpointing, resume, evaluation with
planning L2 as `metric_for_best_model`, push_to_hub: all `TrainingArguments`), then writes the final model, processor,
model card and `trainer_state.json` (all logs) to `training.output_dir`.
Command line: `occvla-hf train joint --config configs/joint.yaml [--section.key VALUE ...]`.

Recipe keys (see `configs/joint.yaml` for every value with a comment):
    model: `from_pretrained` (an OccVLA checkpoint and its processor) | `from_vlm` (a PaliGemma-family checkpoint) |
        neither (random init from `config`, with the package's offline tokenizer); `config`: OccVLAConfig fields
        (overrides with a checkpoint); `num_views` with `from_vlm`.
    occupancy_vae: stage-1 VAE checkpoint; loaded whenever given (also by the ablation, so that both models are the
        same), required for occupancy supervision unless the `from_pretrained` checkpoint carries one.
    occupancy_supervision: `false` never passes occupancy targets, so occupancy queries are never built.
    occupancy_weight_schedule: `OccupancyWeightSchedule` fields.
    data: `path` (an `occvla-hf data build` output folder or a Hub dataset id), `source` (`nuscenes` | `sim`: the
        licence the model card states), `tasks`, `train_split`, `eval_split`, `max_eval_samples`.
    freeze_vision_tower, lora (`r`, `lora_alpha`, `lora_dropout`, `target_modules` inside the language model),
    resume_from_checkpoint (a checkpoint folder, or `true` for the last one in `output_dir`), training
    (`transformers.TrainingArguments`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    TrainingArguments,
    set_seed,
)

from occvla_hf.constants import CAMERA_NAMES, DATASET_CONFIG_NAMES
from occvla_hf.data.hub import load_saved
from occvla_hf.data.occ3d import decode_mask, decode_semantics
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.modeling.occupancy_vae import OccupancyVAE
from occvla_hf.processing import OccVLAProcessor, build_tokenizer
from occvla_hf.processing.processing_occvla import TASKS

from .collator import OCCUPANCY_ROW_COLUMNS, ROW_COLUMNS, OccVLADataCollator
from .metrics import planning_l2_metrics
from .model_card import TRAINING_DATA_SOURCES, ModelCardInfo
from .trainer import OccVLATrainer
from .weight_schedule import OccupancyWeightSchedule

logger = logging.getLogger(__name__)

STAGE_NAME: str = "joint"
RECIPE_KEYS: tuple[str, ...] = (
    "stage",
    "model",
    "occupancy_vae",
    "occupancy_supervision",
    "occupancy_weight_schedule",
    "data",
    "freeze_vision_tower",
    "lora",
    "resume_from_checkpoint",
    "training",
)
MODEL_KEYS: tuple[str, ...] = ("from_pretrained", "from_vlm", "num_views", "config")
DATA_KEYS: tuple[str, ...] = ("path", "source", "tasks", "train_split", "eval_split", "max_eval_samples")
# Modules new to OccVLA that LoRA runs train fully (peft `modules_to_save`); the language model gets adapters.
LORA_TRAINED_MODULES: tuple[str, ...] = ("trajectory_head", "occupancy_head", "occupancy_queries")
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------------------------------ data


class JointDataset(torch.utils.data.Dataset):
    """Rows of several task datasets behind one index, each row tagged with its `task`.

    Planning rows without any future (a scene's last keyframe: empty `meta_action`, no valid waypoint) are left out:
    they have no target to learn. Planning rows whose keyframe has Occ3D labels in `occupancy` get them decoded as
    `semantics` (X, Y, Z) uint8 and `mask_camera` (X, Y, Z) bool (joined by `sample_token`). Only the columns the
    collator reads are kept, so camera calibration and agent boxes are never decoded. `tasks` (one per index) lets
    `OccVLATrainer` batch by task.

    Args:
        datasets: task name (`planning`, `qa`) -> rows of that dataset config.
        occupancy: rows of the `occupancy` config (compressed grids), or None for no occupancy targets.
    """

    def __init__(self, datasets: Mapping[str, Dataset], occupancy: Dataset | None = None) -> None:
        unknown = sorted(set(datasets) - set(TASKS))
        if unknown or not datasets:
            raise ValueError(f"datasets: expected tasks among {TASKS}, got {sorted(datasets)}")
        if "planning" in datasets:
            datasets = {**datasets, "planning": datasets["planning"].filter(bool, input_columns="meta_action")}
        self.datasets = {
            task: rows.select_columns([c for c in rows.column_names if c in ROW_COLUMNS or c == "sample_token"])
            for task, rows in datasets.items()
        }
        self.index = [(task, row) for task, rows in self.datasets.items() for row in range(len(rows))]
        self.tasks = [task for task, _ in self.index]
        self.occupancy = None if occupancy is None else occupancy.select_columns(list(OCCUPANCY_ROW_COLUMNS))
        self.occupancy_rows = (
            {} if occupancy is None else {token: row for row, token in enumerate(occupancy["sample_token"])}
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        task, row_index = self.index[index]
        row = {**self.datasets[task][row_index], "task": task}
        occupancy_row = self.occupancy_rows.get(row.get("sample_token")) if task == "planning" else None
        if occupancy_row is not None:
            stored = self.occupancy[occupancy_row]
            row["semantics"] = decode_semantics(stored["semantics"])
            row["mask_camera"] = decode_mask(stored["mask_camera"])
        return row


def load_training_data(path: str, configs: Sequence[str]) -> dict[str, DatasetDict]:
    """The dataset configs named by `configs` from an `occvla-hf data build` output folder or a Hub dataset id."""
    unknown = sorted(set(configs) - set(DATASET_CONFIG_NAMES))
    if unknown:
        raise ValueError(f"data: unknown dataset configs {unknown}, expected some of {DATASET_CONFIG_NAMES}")
    if not Path(path).is_dir():
        return {config: load_dataset(path, config) for config in configs}
    saved = load_saved(path)
    missing = [config for config in configs if config not in saved]
    if missing:
        raise ValueError(f"data.path: {path} has no {missing} config (found {sorted(saved)})")
    return {config: saved[config] for config in configs}


def _check_keys(section: Mapping[str, Any], allowed: Sequence[str], name: str) -> None:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown}, expected some of {list(allowed)}")


def _split(datasets: Mapping[str, DatasetDict], config: str, split: str) -> Dataset:
    if split not in datasets[config]:
        raise ValueError(f"data: the {config} config has no split {split!r} (found {sorted(datasets[config])})")
    return datasets[config][split]


# ----------------------------------------------------------------------------------------------------- model


def build_model_and_processor(
    section: Mapping[str, Any], occupancy_vae: OccupancyVAE | None = None
) -> tuple[OccVLAForPlanning, OccVLAProcessor, bool]:
    """The model and its processor from the recipe's `model` section; the flag says whether the processor is new
    (its ego-status statistics still have to be fitted). A new model (`from_vlm`, `config`) takes its
    `occupancy_latent_shape` and `occupancy_num_classes` from `occupancy_vae` unless the config sets them."""
    _check_keys(section, MODEL_KEYS, "model")
    if section.get("from_pretrained") and section.get("from_vlm"):
        raise ValueError("model: give from_pretrained or from_vlm, not both")
    config_kwargs = dict(section.get("config") or {})
    if section.get("from_pretrained"):
        path = section["from_pretrained"]
        model = OccVLAForPlanning.from_pretrained(path, **config_kwargs)
        return model, OccVLAProcessor.from_pretrained(path), False
    if occupancy_vae is not None:
        config_kwargs.setdefault("occupancy_latent_shape", tuple(occupancy_vae.config.latent_shape))
        config_kwargs.setdefault("occupancy_num_classes", occupancy_vae.config.num_classes)
    if section.get("from_vlm"):
        path = section["from_vlm"]
        vision = AutoConfig.from_pretrained(path).vision_config
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = AutoImageProcessor.from_pretrained(path)
        processor = OccVLAProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            num_views=section.get("num_views", len(CAMERA_NAMES)),
            image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        )  # adds `<traj>` to the tokenizer: its id goes into the model config
        model = OccVLAForPlanning.from_vlm(
            path, num_views=processor.num_views, traj_token_id=processor.traj_token_id, **config_kwargs
        )
        processor.use_ego_status = model.config.use_ego_status
        return model, processor, True
    if "num_views" in section:
        raise ValueError("model.num_views: only used with from_vlm; set model.config.num_views instead")
    tokenizer = build_tokenizer()
    text_config = dict(config_kwargs.pop("text_config", None) or {})
    text_config.setdefault("vocab_size", len(tokenizer))
    config_kwargs.setdefault("image_token_id", tokenizer.image_token_id)
    config_kwargs.setdefault("traj_token_id", tokenizer.traj_token_id)
    config_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = OccVLAConfig(text_config=text_config, **config_kwargs)
    return OccVLAForPlanning(config), OccVLAProcessor.from_model_config(config, tokenizer), True


def check_processor_matches_model(processor: OccVLAProcessor, config: OccVLAConfig) -> None:
    """ValueError naming the first field where processor and model disagree (token ids, views, image tokens)."""
    pairs = {
        "image_token_id": (processor.image_token_id, config.image_token_id),
        "traj_token_id": (processor.traj_token_id, config.traj_token_id),
        "num_views": (processor.num_views, config.num_views),
        "image_seq_length": (processor.image_seq_length, config.image_seq_length),
        "use_ego_status": (processor.use_ego_status, config.use_ego_status),
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
    """Wraps the model in peft LoRA adapters on the language model's `target_modules`; the new heads and occupancy
    queries train fully (`LORA_TRAINED_MODULES`), everything else (vision tower, projector, embeddings) is frozen."""
    kwargs = dict(section)
    targets = kwargs.pop("target_modules", DEFAULT_LORA_TARGETS)
    kwargs.setdefault("modules_to_save", list(LORA_TRAINED_MODULES))
    pattern = rf"model\.language_model\..*\.({'|'.join(re.escape(name) for name in targets)})"
    peft_model = get_peft_model(model, LoraConfig(target_modules=pattern, **kwargs))
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


def train_joint(recipe: Mapping[str, Any]) -> JointTrainingResult:
    """Runs one stage-2 recipe (the parsed `configs/joint.yaml`, see the module docstring)."""
    _check_keys(recipe, RECIPE_KEYS, "joint recipe")
    if recipe.get("stage", STAGE_NAME) != STAGE_NAME:
        raise ValueError(f"stage: this recipe trains {STAGE_NAME!r}, got {recipe['stage']!r}")
    training_kwargs = dict(recipe.get("training") or {})
    if "output_dir" not in training_kwargs:
        raise ValueError("training.output_dir: required, the checkpoint is written there")
    data = dict(recipe.get("data") or {})
    _check_keys(data, DATA_KEYS, "data")
    if "path" not in data:
        raise ValueError("data.path: required, an `occvla-hf data build` output folder or a Hub dataset id")
    source = data.get("source", "nuscenes")
    if source not in TRAINING_DATA_SOURCES:
        raise ValueError(f"data.source: expected one of {TRAINING_DATA_SOURCES}, got {source!r}")
    tasks = list(data.get("tasks", TASKS))
    if not tasks or sorted(set(tasks) - set(TASKS)):
        raise ValueError(f"data.tasks: expected a non-empty subset of {TASKS}, got {tasks}")
    supervise_occupancy = bool(recipe.get("occupancy_supervision", True))
    schedule = OccupancyWeightSchedule(**(recipe.get("occupancy_weight_schedule") or {}))
    lora = recipe.get("lora")
    args = TrainingArguments(**training_kwargs)

    train_split, eval_split = data.get("train_split", "train"), data.get("eval_split")
    datasets = load_training_data(data["path"], [*tasks, *(["occupancy"] if supervise_occupancy else [])])
    model_section = dict(recipe.get("model") or {})
    vae = OccupancyVAE.from_pretrained(recipe["occupancy_vae"]) if recipe.get("occupancy_vae") else None
    set_seed(args.seed)  # new parameters (heads, queries, LoRA) start the same in every run with this seed
    model, processor, new_processor = build_model_and_processor(model_section, vae)
    check_processor_matches_model(processor, model.config)
    if new_processor and "planning" in tasks:
        ego = _split(datasets, "planning", train_split).select_columns(["ego_status", "ego_status_valid"])
        ego = ego.with_format("numpy")[:]
        processor.fit_ego_status_stats(ego["ego_status"], np.asarray(ego["ego_status_valid"], dtype=bool))
        if model.config.use_ego_status:  # a new head starts as the constant-velocity planner
            model.trajectory_head.init_constant_velocity(processor.ego_status_mean, processor.ego_status_std)
    if vae is not None:
        attach_occupancy_vae(model, vae)
    if supervise_occupancy and model.occupancy_vae is None:
        raise ValueError("occupancy_vae: required for occupancy supervision (a stage-1 checkpoint folder)")
    if recipe.get("freeze_vision_tower", False):
        model.model.vision_tower.requires_grad_(False)
    trained_model = apply_lora(model, lora) if lora else model

    def joint_rows(split: str, task_rows: Mapping[str, Dataset]) -> JointDataset:
        return JointDataset(task_rows, _split(datasets, "occupancy", split) if supervise_occupancy else None)

    train_dataset = joint_rows(train_split, {task: _split(datasets, task, train_split) for task in tasks})
    eval_dataset = None
    if eval_split is not None and "planning" in tasks:
        planning = _split(datasets, "planning", eval_split)
        limit = data.get("max_eval_samples")
        if limit is not None and limit < len(planning):
            planning = planning.select(np.linspace(0, len(planning) - 1, limit).round().astype(int).tolist())
        eval_dataset = joint_rows(eval_split, {"planning": planning})
    trainer = OccVLATrainer(
        model=trained_model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        data_collator=OccVLADataCollator(processor, occupancy_supervision=supervise_occupancy),
        compute_metrics=planning_l2_metrics if eval_dataset is not None else None,
        occupancy_weight_schedule=schedule,
        model_card_info=ModelCardInfo(
            training_data=source,
            model_name=args.hub_model_id or Path(args.output_dir).name,
            base_model=model_section.get("from_vlm") or model_section.get("from_pretrained"),
            datasets=[str(data["path"])],
            occupancy_supervision=supervise_occupancy,
            lora_rank=trained_model.peft_config["default"].r if lora else None,
        ),
    )
    if lora and trainer.is_fsdp_enabled:
        raise ValueError("lora: not supported with FSDP by this recipe (adapters are merged in memory); use DDP")
    trainer.train(resume_from_checkpoint=recipe.get("resume_from_checkpoint"))
    metrics = trainer.evaluate() if eval_dataset is not None else {}
    if lora:
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
    "JointDataset",
    "JointTrainingResult",
    "apply_lora",
    "attach_occupancy_vae",
    "build_model_and_processor",
    "check_processor_matches_model",
    "load_training_data",
    "train_joint",
]
