"""nuScenes + Occ3D + nuScenes-QA -> Hugging Face datasets (planning, qa, occupancy configs) and the Hub.

Names are imported lazily, so that `occvla_hf.data.cli` (loaded by every `occvla-hf` call) stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    "agent_boxes_arrays": "occvla_hf.data.schema",
    "build_dataset": "occvla_hf.data.hub",
    "config_features": "occvla_hf.data.schema",
    "load_configs": "occvla_hf.data.load",
    "load_split": "occvla_hf.data.load",
    "push_to_hub": "occvla_hf.data.hub",
    "save_dataset": "occvla_hf.data.hub",
    "decode_occupancy": "occvla_hf.data.occ3d",
    "export_lerobot": "occvla_hf.data.lerobot",
    "join_keyframes": "occvla_hf.data.keyframes",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
