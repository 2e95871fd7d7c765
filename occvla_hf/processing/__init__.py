"""Processor (images, prompts, ego status, targets -> model inputs) and the meta-action / trajectory text codecs.

Importing this package registers `OccVLAProcessor` with `AutoProcessor` for the `occvla` model type.
"""

from transformers import AutoProcessor

from ..modeling.configuration_occvla import OccVLAConfig
from .meta_action import MetaAction, all_meta_actions, classify_path, classify_speed, meta_action_from_trajectory
from .processing_occvla import OccVLAProcessor, ego_status_statistics
from .tokenization import build_tokenizer
from .trajectory_text import trajectory_from_text, trajectory_to_text

AutoProcessor.register(OccVLAConfig, OccVLAProcessor, exist_ok=True)

__all__ = [
    "MetaAction",
    "OccVLAProcessor",
    "all_meta_actions",
    "build_tokenizer",
    "classify_path",
    "classify_speed",
    "ego_status_statistics",
    "meta_action_from_trajectory",
    "trajectory_from_text",
    "trajectory_to_text",
]
