"""occvla-hf: OccVLA, a vision-language-action model with implicit 3D occupancy supervision, for transformers.

Every name loads on first access, so that `import occvla_hf` and the command line stay quick and the data and sim
layers never load the model. Resolving a model or processor name loads `occvla_hf.modeling`, which registers the
model, VAE and processor with the transformers Auto classes.
"""

from __future__ import annotations

import importlib

from .version import __version__ as __version__

_LAZY_EXPORTS: dict[str, str] = {
    "OccVLAConfig": "occvla_hf.modeling",
    "OccVLAForPlanning": "occvla_hf.modeling",
    "OccVLAModel": "occvla_hf.modeling",
    "OccVLAOutput": "occvla_hf.modeling",
    "OccupancyVAE": "occvla_hf.modeling",
    "OccupancyVAEConfig": "occvla_hf.modeling",
    "PlanningOutput": "occvla_hf.modeling",
    "default_lora_config": "occvla_hf.modeling",
    "OccVLAProcessor": "occvla_hf.processing",
    "build_tokenizer": "occvla_hf.processing",
    "OccVLATrainer": "occvla_hf.training.trainer",
    "OccVLADataCollator": "occvla_hf.training.collator",
    "train_joint": "occvla_hf.training.joint",
    "train_vae": "occvla_hf.training.vae",
    "build_dataset": "occvla_hf.data.hub",
    "load_configs": "occvla_hf.data.load",
    "push_to_hub": "occvla_hf.data.hub",
    "evaluate_planning": "occvla_hf.evaluation.runner",
    "evaluate_qa": "occvla_hf.evaluation.runner",
    "evaluate_occupancy": "occvla_hf.evaluation.runner",
    "PlanningMetricAccumulator": "occvla_hf.evaluation.planning",
    "QAAccuracyAccumulator": "occvla_hf.evaluation.qa",
    "OccupancyMetricAccumulator": "occvla_hf.evaluation.occupancy",
    "generate_dataset": "occvla_hf.sim.generate",
    "DrivingPlanningPipeline": "occvla_hf.pipelines",
}
# Modules whose classes the Auto classes must know once they are in use (registered by `occvla_hf.modeling`).
_AUTO_REGISTERED_MODULES: frozenset[str] = frozenset(
    {"occvla_hf.modeling", "occvla_hf.processing", "occvla_hf.pipelines"}
)

__all__ = list(_LAZY_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name = _LAZY_EXPORTS[name]
    if module_name in _AUTO_REGISTERED_MODULES:
        importlib.import_module("occvla_hf.modeling")
    return getattr(importlib.import_module(module_name), name)
