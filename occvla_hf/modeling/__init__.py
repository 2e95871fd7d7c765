"""Model and configuration classes; importing this package registers them, and the processor, with the transformers
Auto classes, and the `driving-planning` pipeline with `PIPELINE_REGISTRY` (the one place of registration: the
processor never imports the model, the model side may import the processor, which comes before it in the data flow).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from ..pipelines import PLANNING_TASK, DrivingPlanningPipeline
from ..processing.processing_occvla import OccVLAProcessor
from .configuration_occupancy_vae import OccupancyVAEConfig
from .configuration_occvla import OccVLAConfig
from .loading import load_pretrained
from .lora import default_lora_config
from .modeling_occvla import OccVLAForPlanning, OccVLAModel, OccVLAOutput, PlanningOutput
from .occupancy_vae import OccupancyVAE, OccupancyVAEOutput

AutoConfig.register(OccVLAConfig.model_type, OccVLAConfig, exist_ok=True)
AutoConfig.register(OccupancyVAEConfig.model_type, OccupancyVAEConfig, exist_ok=True)
AutoModel.register(OccVLAConfig, OccVLAModel, exist_ok=True)
AutoModel.register(OccupancyVAEConfig, OccupancyVAE, exist_ok=True)
AutoModelForImageTextToText.register(OccVLAConfig, OccVLAForPlanning, exist_ok=True)
AutoProcessor.register(OccVLAConfig, OccVLAProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    PLANNING_TASK, pipeline_class=DrivingPlanningPipeline, pt_model=AutoModelForImageTextToText, type="multimodal"
)

__all__ = [
    "OccVLAConfig",
    "OccVLAForPlanning",
    "OccVLAModel",
    "OccVLAOutput",
    "OccupancyVAE",
    "OccupancyVAEConfig",
    "OccupancyVAEOutput",
    "PlanningOutput",
    "default_lora_config",
    "load_pretrained",
]
