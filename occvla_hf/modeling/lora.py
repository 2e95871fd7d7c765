"""The model's own LoRA defaults: which modules get adapters and which train fully, so that a plain
`get_peft_model(model, default_lora_config())` fine-tunes the language model and keeps OccVLA's heads trainable
(peft freezes every module it neither adapts nor lists in `modules_to_save`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peft import LoraConfig

# Projections of the language model's attention and MLP blocks that get adapters (Gemma / Llama module names).
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Modules new to OccVLA (no pretrained weights to adapt): trained fully, saved with the adapters.
LORA_TRAINED_MODULES: tuple[str, ...] = (
    "trajectory_head",
    "occupancy_head",
    "occupancy_queries",
    "occupancy_transformer",
)


def import_peft() -> Any:
    """The `peft` module, imported on first use (the package trains without LoRA where peft is absent), with an
    error that names it when it is missing."""
    try:
        import peft
    except ImportError as error:
        raise ImportError("lora: needs the `peft` package (pip install peft), which is not installed") from error
    return peft


def default_lora_config(target_modules: Sequence[str] = DEFAULT_LORA_TARGETS, **lora_kwargs: Any) -> LoraConfig:
    """A peft `LoraConfig` for `OccVLAForPlanning`: adapters on the `target_modules` projections inside the language
    model only (names as `q_proj`; the vision tower's projections share them and stay frozen), and the modules of
    `LORA_TRAINED_MODULES` trained fully (`modules_to_save`, unless `lora_kwargs` names its own). Other `lora_kwargs`
    are `LoraConfig` fields (`r`, `lora_alpha`, `lora_dropout`, ...); vision tower, projector and embeddings stay
    frozen."""
    if isinstance(target_modules, str) or not target_modules:
        raise ValueError(f"target_modules: expected a non-empty list of module names, got {target_modules!r}")
    lora_kwargs.setdefault("modules_to_save", list(LORA_TRAINED_MODULES))
    pattern = rf"model\.language_model\..*\.({'|'.join(re.escape(name) for name in target_modules)})"
    return import_peft().LoraConfig(target_modules=pattern, **lora_kwargs)


__all__ = ["DEFAULT_LORA_TARGETS", "LORA_TRAINED_MODULES", "default_lora_config", "import_peft"]
