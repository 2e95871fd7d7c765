"""The OccVLA model card: the `occvla_hf/model_card.md` Jinja template (shipped with the package), filled from a run.

`render_model_card` fills the YAML header (licence, base model, datasets, tags, a `model-index` with the L2, collision
and QA results) and the body (architecture summary, training data and its licence, final loss terms, the planning L2
table of the latest evaluation, limitations, citations). `OccVLATrainer.create_model_card` calls it, so
`trainer.push_to_hub()` uploads this card. The Hub validates the YAML before a commit: only Hub ids go in
`base_model` and `datasets`; local paths are named in the body only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from occvla_hf.constants import DATA_SOURCE_LICENSES, DATA_SOURCES, PLANNING_PROTOCOL_NAMES
from occvla_hf.evaluation.planning import PROTOCOLS, REPORT_HORIZONS_S

# The template shipped at the repository root.
MODEL_CARD_TEMPLATE: Path = Path(__file__).resolve().parents[1] / "model_card.md"
CARD_TAGS: tuple[str, ...] = ("occvla", "vision-language-action", "autonomous-driving", "motion-planning", "occupancy")
# `model-index` dataset type of evaluation data that is not a Hub dataset, by training data source.
EVAL_DATASET_TYPES: dict[str, str] = {"nuscenes": "nuscenes", "sim": "occvla-hf-sim"}
EVAL_DATASET_NAMES: dict[str, str] = {"nuscenes": "nuScenes", "sim": "occvla-hf procedural sim scenes"}
# Horizon keys of the planning reports (`l2_1s_m`, ..., `collision_avg_pct`).
_HORIZON_KEYS: tuple[str, ...] = (*(f"{horizon:g}s" for horizon in REPORT_HORIZONS_S), "avg")
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
        datasets: dataset ids or paths (or descriptions) trained on.
        occupancy_supervision: whether occupancy queries were supervised (False for the ablation).
        lora_rank: LoRA rank when the language model was fine-tuned with (merged) LoRA adapters.
        evaluation: reports of `occvla-hf eval`: `{"planning": PlanningMetricAccumulator.compute(), "qa":
            QAAccuracyAccumulator.compute()}` (either may be missing); they fill the `model-index` (L2, collision,
            QA accuracy). Without a planning report, the L2 of the latest evaluation in the training log does.
        evaluation_data: the data evaluated on (Hub id, path or description); a Hub id is the `model-index` dataset,
            anything else is named in the body only.
        evaluation_split: its split.
    """

    training_data: Literal["nuscenes", "sim"] = "nuscenes"
    model_name: str | None = None
    base_model: str | None = None
    datasets: Sequence[str] = field(default_factory=tuple)
    occupancy_supervision: bool = True
    lora_rank: int | None = None
    evaluation: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evaluation_data: str | None = None
    evaluation_split: str | None = None

    def __post_init__(self) -> None:
        if self.training_data not in DATA_SOURCES:
            raise ValueError(f"training_data: expected one of {DATA_SOURCES}, got {self.training_data!r}")
        unknown = sorted(set(self.evaluation) - {"planning", "qa"})
        if unknown:
            raise ValueError(f"evaluation: expected 'planning' and/or 'qa' reports, got {unknown}")

    def replace(self, **changes: Any) -> ModelCardInfo:
        return dataclasses.replace(self, **changes)


def _latest(log_history: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    """The last log entry holding `key`."""
    return next((entry for entry in reversed(log_history) if key in entry), None)


def _format_cell(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def hub_id(name: str | None) -> str | None:
    """`name` if it can only be a Hub repo id (valid id syntax, not an existing local path), else None."""
    if not name or Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _planning_rows(info: ModelCardInfo, eval_log: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per protocol, `l2_<h>_m` and `collision_<h>_pct` at each horizon (None where unknown): from the planning
    report if there is one, else the L2 of the training log's latest evaluation; empty without either."""
    planning = info.evaluation.get("planning")
    if planning is None and not eval_log:
        return {}
    keys = [f"{metric}_{h}_{unit}" for metric, unit in (("l2", "m"), ("collision", "pct")) for h in _HORIZON_KEYS]
    return {
        protocol: {
            key: planning[protocol].get(key) if planning is not None else eval_log.get(f"eval_{protocol}_{key}")
            for key in keys
        }
        for protocol in PROTOCOLS
    }


def _eval_results(info: ModelCardInfo, eval_log: Mapping[str, Any]) -> list[EvalResult]:
    """`model-index` entries: L2 and collision per protocol and horizon, QA accuracy; none without results."""
    dataset = {
        "dataset_type": hub_id(info.evaluation_data) or EVAL_DATASET_TYPES[info.training_data],
        "dataset_name": hub_id(info.evaluation_data) or EVAL_DATASET_NAMES[info.training_data],
        "dataset_split": info.evaluation_split,
    }
    planning_task = {"task_type": "robotics", "task_name": "Open-loop planning"}
    results: list[EvalResult] = []
    for protocol, row in _planning_rows(info, eval_log).items():
        label = PLANNING_PROTOCOL_NAMES[protocol]
        metrics = [("l2", f"l2_{h}_m", f"L2 {h} (m, {label})") for h in _HORIZON_KEYS]
        metrics += [("collision_rate", f"collision_{h}_pct", f"Collision {h} (%, {label})") for h in _HORIZON_KEYS]
        results += [
            EvalResult(
                **planning_task,
                **dataset,
                metric_type=metric,
                metric_name=name,
                metric_config=protocol,
                metric_value=round(float(row[key]), 4),
            )
            for metric, key, name in metrics
            if row.get(key) is not None
        ]
    qa = info.evaluation.get("qa")
    if qa is not None and qa["overall"]["accuracy_pct"] is not None:
        results.append(
            EvalResult(
                task_type="visual-question-answering",
                task_name="Driving question answering",
                **dataset,
                metric_type="accuracy",
                metric_name="nuScenes-QA accuracy (%)",
                metric_value=round(float(qa["overall"]["accuracy_pct"]), 4),
            )
        )
    return results


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
    train_log = _latest(log_history, "loss") or {}
    eval_log = _latest(log_history, f"eval_{PROTOCOLS[0]}_l2_avg_m") or {}
    hub_datasets = [name for name in info.datasets if hub_id(name)]
    eval_results = _eval_results(info, eval_log)
    card_data = ModelCardData(
        license=DATA_SOURCE_LICENSES[info.training_data],  # nuScenes-derived weights: its terms of use
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=list(CARD_TAGS),
        base_model=hub_id(info.base_model),
        datasets=hub_datasets or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    planning_rows = [
        {"protocol": PLANNING_PROTOCOL_NAMES[protocol], **{key: _format_cell(value) for key, value in row.items()}}
        for protocol, row in _planning_rows(info, eval_log).items()
    ]
    qa = info.evaluation.get("qa")
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
        eval_step=None if "planning" in info.evaluation else eval_log.get("step"),
        evaluation_data=info.evaluation_data,
        evaluation_split=info.evaluation_split,
        qa_accuracy_pct=None if qa is None else qa["overall"]["accuracy_pct"],
        qa_num_questions=None if qa is None else qa["num_questions"],
        extra_sections=extra_sections.strip(),
    )


__all__ = ["MODEL_CARD_TEMPLATE", "ModelCardInfo", "hub_id", "render_model_card"]
