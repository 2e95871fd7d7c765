"""Model and configuration classes, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_occvla import OccVLAConfig
from .modeling_occvla import OccVLAForPlanning, OccVLAModel, OccVLAOutput, PlanningOutput

AutoConfig.register(OccVLAConfig.model_type, OccVLAConfig, exist_ok=True)
AutoModel.register(OccVLAConfig, OccVLAModel, exist_ok=True)
AutoModelForImageTextToText.register(OccVLAConfig, OccVLAForPlanning, exist_ok=True)

__all__ = ["OccVLAConfig", "OccVLAForPlanning", "OccVLAModel", "OccVLAOutput", "PlanningOutput"]
