"""Model and configuration classes, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_occupancy_vae import OccupancyVAEConfig
from .configuration_occvla import OccVLAConfig
from .modeling_occvla import OccVLAForPlanning, OccVLAModel, OccVLAOutput, PlanningOutput
from .occupancy_vae import OccupancyVAE, OccupancyVAEOutput

AutoConfig.register(OccVLAConfig.model_type, OccVLAConfig, exist_ok=True)
AutoConfig.register(OccupancyVAEConfig.model_type, OccupancyVAEConfig, exist_ok=True)
AutoModel.register(OccVLAConfig, OccVLAModel, exist_ok=True)
AutoModel.register(OccupancyVAEConfig, OccupancyVAE, exist_ok=True)
AutoModelForImageTextToText.register(OccVLAConfig, OccVLAForPlanning, exist_ok=True)

__all__ = [
    "OccVLAConfig",
    "OccVLAForPlanning",
    "OccVLAModel",
    "OccVLAOutput",
    "OccupancyVAE",
    "OccupancyVAEConfig",
    "OccupancyVAEOutput",
    "PlanningOutput",
]
