"""Checkpoint folders that load without this package: `trust_remote_code=True` with the modeling code inside."""

from __future__ import annotations

import json
import re
from pathlib import Path

from transformers import PreTrainedModel

_MODELING_DIR = Path(__file__).resolve().parent
# `from .x import` (the module's folder) and `from ..x import` (its parent, e.g. the package root's constants); both
# become `from .x import` in the flat folder of the checkpoint.
_RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)(\.{1,2})(\w+)(\s+import\b)", re.MULTILINE)

AUTO_MAP: dict[str, str] = {
    "AutoConfig": "configuration_occvla.OccVLAConfig",
    "AutoModel": "modeling_occvla.OccVLAModel",
    "AutoModelForImageTextToText": "modeling_occvla.OccVLAForPlanning",
}


def _code_closure(entry: str) -> dict[str, str]:
    """Source text of `entry` (a module of modeling/) and of every module it imports relatively, flattened (the
    package root's modules resolve their own `from .x import` in the package root)."""
    sources: dict[str, str] = {}
    pending = [(_MODELING_DIR, entry)]
    while pending:
        folder, name = pending.pop()
        if name in sources:
            continue
        text = (folder / f"{name}.py").read_text()
        for match in _RELATIVE_IMPORT.finditer(text):
            dots, module = match.group(2), match.group(3)
            pending.append((folder if dots == "." else folder.parent, module))
        sources[name] = _RELATIVE_IMPORT.sub(r"\1.\3\4", text)
    return sources


def save_with_remote_code(model: PreTrainedModel, save_directory: str | Path, **save_kwargs) -> Path:
    """`save_pretrained` plus the modeling sources and an `auto_map`, so that
    `AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)` works without occvla_hf installed.
    """
    save_directory = Path(save_directory)
    model.save_pretrained(save_directory, **save_kwargs)
    for name, source in _code_closure("modeling_occvla").items():
        (save_directory / f"{name}.py").write_text(source)
    config_path = save_directory / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return save_directory
