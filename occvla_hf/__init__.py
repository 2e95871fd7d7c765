"""occvla-hf: OccVLA, a vision-language-action model with implicit 3D occupancy supervision, for transformers.

Importing the package registers the model, VAE and processor with the transformers Auto classes. Training,
evaluation, data and simulation names load on first access, so the command line stays quick to start.
"""

from __future__ import annotations

import importlib

from .modeling import (
    OccupancyVAE,
    OccupancyVAEConfig,
    OccVLAConfig,
    OccVLAForPlanning,
    OccVLAModel,
    OccVLAOutput,
    PlanningOutput,
)
from .processing import OccVLAProcessor, build_tokenizer

__version__ = "0.1.0"

_LAZY_EXPORTS: dict[str, str] = {
    "OccVLATrainer": "occvla_hf.training.trainer",
    "OccVLADataCollator": "occvla_hf.training.collator",
    "train_joint": "occvla_hf.training.joint",
    "train_vae": "occvla_hf.training.vae",
    "build_dataset": "occvla_hf.data.hub",
    "load_saved": "occvla_hf.data.hub",
    "push_to_hub": "occvla_hf.data.hub",
    "evaluate_planning": "occvla_hf.evaluation.runner",
    "evaluate_qa": "occvla_hf.evaluation.runner",
    "evaluate_occupancy": "occvla_hf.evaluation.runner",
    "PlanningMetricAccumulator": "occvla_hf.evaluation.planning",
    "QAAccuracyAccumulator": "occvla_hf.evaluation.qa",
    "OccupancyMetricAccumulator": "occvla_hf.evaluation.occupancy",
    "generate_dataset": "occvla_hf.sim.generate",
    "save_with_remote_code": "occvla_hf.modeling.export",
}

__all__ = [
    "OccVLAConfig",
    "OccVLAForPlanning",
    "OccVLAModel",
    "OccVLAOutput",
    "OccVLAProcessor",
    "OccupancyVAE",
    "OccupancyVAEConfig",
    "PlanningOutput",
    "build_tokenizer",
    *_LAZY_EXPORTS,
]


def __getattr__(name: str) -> object:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
