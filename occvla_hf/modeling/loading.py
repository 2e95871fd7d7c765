"""`load_pretrained`: the one way our own code paths load weights, strict about what the checkpoint holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from transformers import CONFIG_NAME, PreTrainedModel

ModelT = TypeVar("ModelT", bound=PreTrainedModel)


def check_checkpoint_folder(path: str | Path) -> None:
    """FileNotFoundError for a local folder without `config.json` (a Hub id passes)."""
    folder = Path(path)
    if folder.is_dir() and not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint folder, it has no {CONFIG_NAME}")


def load_pretrained(model_class: type[ModelT], path: str | Path, **kwargs: Any) -> ModelT:
    """`model_class.from_pretrained(path, use_safetensors=True, **kwargs)` that fails instead of warning when a
    weight of the model is missing from the checkpoint (it would be initialised at random), the checkpoint holds
    weights the model has no place for, or a shape differs.

    A local folder must hold `config.json`: checked before anything is built (a model without it would be the
    full-size default). Anything else is tried as a Hub id.
    """
    check_checkpoint_folder(path)
    # Mismatched shapes come back in the report (not as transformers' RuntimeError) so the error can name them.
    model, info = model_class.from_pretrained(
        path, use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
    )
    mismatched = [
        f"{key} (checkpoint {tuple(saved)}, model {tuple(model_shape)})"
        for key, saved, model_shape in info["mismatched_keys"]
    ]
    problems = {
        "missing (would be random)": info["missing_keys"],
        "unexpected": info["unexpected_keys"],
        "mismatched shapes": mismatched,
        "errors": info["error_msgs"],
    }
    found = {kind: sorted(map(str, keys)) for kind, keys in problems.items() if keys}
    if found:
        listed = "; ".join(f"{kind}: {keys[:8]}{' ...' if len(keys) > 8 else ''}" for kind, keys in found.items())
        raise ValueError(f"{path}: the weights do not match {model_class.__name__}: {listed}")
    return model


__all__ = ["check_checkpoint_folder", "load_pretrained"]
