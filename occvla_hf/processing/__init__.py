"""Processor (images, prompts, ego status, targets -> model inputs), the trajectory text codec and the tokenizer.

Registration with `AutoProcessor` happens in `occvla_hf.modeling`, next to the model's (the processor does not
import the model).
"""

from .processing_occvla import OccVLAProcessor, ego_status_statistics
from .tokenization import build_tokenizer
from .trajectory_text import trajectory_from_text, trajectory_to_text

__all__ = [
    "OccVLAProcessor",
    "build_tokenizer",
    "ego_status_statistics",
    "trajectory_from_text",
    "trajectory_to_text",
]
