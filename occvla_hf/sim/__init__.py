"""occvla_hf.sim: procedural driving scenes written in the real nuScenes, Occ3D-nuScenes and nuScenes-QA formats.

`generate_dataset(out_dir, num_scenes=..., seed=...)` writes a dataroot that `nuscenes.nuscenes.NuScenes` loads;
`simulate_scene(seed, config)` gives the underlying world state (ego poses, agent boxes) of one scene. Names are
imported lazily, so that `occvla_hf.sim.cli` (loaded by every `occvla-hf` call) stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    "PRESETS": "occvla_hf.sim.config",
    "SimConfig": "occvla_hf.sim.config",
    "GenerationSummary": "occvla_hf.sim.generate",
    "dataset_scene": "occvla_hf.sim.generate",
    "generate_dataset": "occvla_hf.sim.generate",
    "scene_names": "occvla_hf.sim.nuscenes_tables",
    "Scene": "occvla_hf.sim.scene",
    "simulate_scene": "occvla_hf.sim.scene",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
