"""The OccVLA model card: the `occvla_hf/model_card.md` Jinja template (shipped with the package), filled from a run.

`render_model_card` fills the YAML header (licence, base model, datasets, tags) and the body (architecture summary,
training data and its licence, final loss terms, the planning L2 table of the latest evaluation, limitations,
citations). `OccVLATrainer.create_model_card` calls it, so `trainer.push_to_hub()` uploads this card.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import ModelCard, ModelCardData

from occvla_hf.constants import PLANNING_PROTOCOL_NAMES
from occvla_hf.evaluation.planning import PROTOCOLS

# The template shipped at the repository root.
MODEL_CARD_TEMPLATE: Path = Path(__file__).resolve().parents[1] / "model_card.md"
TRAINING_DATA_SOURCES: tuple[str, ...] = ("nuscenes", "sim")
# Licence of the weights by training data: nuScenes-derived weights follow the nuScenes terms of use.
WEIGHTS_LICENSES: dict[str, str] = {"nuscenes": "cc-by-nc-sa-4.0", "sim": "apache-2.0"}
CARD_TAGS: tuple[str, ...] = ("occvla", "vision-language-action", "autonomous-driving", "motion-planning", "occupancy")
_TRAIN_TERMS: tuple[str, ...] = (
    "loss",
    "lm_loss",
    "trajectory_loss",
    "occupancy_latent_loss",
    "occupancy_voxel_loss",
)


@dataclass(frozen=True)
class ModelCardInfo:
    """What the card states about a training run beyond the model config and the logs.

    Args:
        training_data: `"nuscenes"` (real data: the weights carry the nuScenes non-commercial licence) or `"sim"`
            (synthetic scenes of `occvla_hf.sim`).
        model_name: card title and repo id in the usage snippet; defaults to "OccVLA".
        base_model: checkpoint the model was initialised from (Hub id or path), if any.
        datasets: dataset ids or paths trained on.
        occupancy_supervision: whether occupancy queries were supervised (False for the ablation).
        lora_rank: LoRA rank when the language model was fine-tuned with (merged) LoRA adapters.
    """

    training_data: Literal["nuscenes", "sim"] = "nuscenes"
    model_name: str | None = None
    base_model: str | None = None
    datasets: Sequence[str] = field(default_factory=tuple)
    occupancy_supervision: bool = True
    lora_rank: int | None = None

    def __post_init__(self) -> None:
        if self.training_data not in TRAINING_DATA_SOURCES:
            raise ValueError(f"training_data: expected one of {TRAINING_DATA_SOURCES}, got {self.training_data!r}")

    def replace(self, **changes: Any) -> ModelCardInfo:
        return dataclasses.replace(self, **changes)


def _latest(log_history: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    """The last log entry holding `key`."""
    return next((entry for entry in reversed(log_history) if key in entry), None)


def _format_m(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_model_card(
    info: ModelCardInfo,
    *,
    config: Any,
    repo_id: str | None = None,
    log_history: Sequence[Mapping[str, Any]] = (),
    template_path: str | os.PathLike = MODEL_CARD_TEMPLATE,
    extra_sections: str = "",
) -> ModelCard:
    """The filled model card.

    Args:
        info: facts about the run (see `ModelCardInfo`).
        config: the trained model's `OccVLAConfig`.
        repo_id: Hub repo id or folder the usage snippet loads from; defaults to the model name.
        log_history: `trainer.state.log_history`; the last training log gives the loss table, the last evaluation
            with `eval_<protocol>_l2_avg_m` the planning table.
        template_path: Jinja template (defaults to the package's `model_card.md`).
        extra_sections: Markdown placed after the evaluation (e.g. an ablation over seeds on held-out data).
    """
    template = Path(template_path)
    if not template.is_file():
        raise FileNotFoundError(f"template_path: no model card template at {template}")
    model_name = info.model_name or "OccVLA"
    card_data = ModelCardData(
        license=WEIGHTS_LICENSES[info.training_data],
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=list(CARD_TAGS),
        base_model=info.base_model,
        datasets=list(info.datasets) or None,
    )
    train_log = _latest(log_history, "loss") or {}
    eval_log = _latest(log_history, f"eval_{PROTOCOLS[0]}_l2_avg_m") or {}
    planning_rows = [
        {
            "protocol": PLANNING_PROTOCOL_NAMES[protocol],
            **{
                key: _format_m(eval_log.get(f"eval_{protocol}_{key}"))
                for key in ("l2_1s_m", "l2_2s_m", "l2_3s_m", "l2_avg_m")
            },
        }
        for protocol in PROTOCOLS
        if eval_log
    ]
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        repo_id=repo_id or model_name,
        base_model=info.base_model,
        datasets=list(info.datasets),
        training_data=info.training_data,
        occupancy_supervision=info.occupancy_supervision,
        lora_rank=info.lora_rank,
        num_views=config.num_views,
        image_size=config.vision_config.image_size,
        num_waypoints=config.num_waypoints,
        use_ego_status=config.use_ego_status,
        num_occupancy_queries=config.num_occupancy_queries,
        occupancy_module=config.occupancy_module,
        occupancy_latent_shape=" x ".join(map(str, config.occupancy_latent_shape)),
        trajectory_loss_weight=config.trajectory_loss_weight,
        trajectory_loss_type=config.trajectory_loss_type,
        occupancy_loss_weight=config.occupancy_loss_weight,
        train_metrics={name: train_log[name] for name in _TRAIN_TERMS if name in train_log},
        train_step=train_log.get("step"),
        planning_rows=planning_rows,
        eval_step=eval_log.get("step"),
        extra_sections=extra_sections.strip(),
    )


__all__ = ["MODEL_CARD_TEMPLATE", "ModelCardInfo", "render_model_card"]
