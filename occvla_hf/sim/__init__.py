"""occvla_hf.sim: procedural driving scenes written in the real nuScenes, Occ3D-nuScenes and nuScenes-QA formats.

`generate_dataset(out_dir, num_scenes=..., seed=...)` writes a dataroot that `nuscenes.nuscenes.NuScenes` loads;
`simulate_scene(seed, config)` gives the underlying world state (ego poses, agent boxes) of one scene;
`occvla_hf.sim.closed_loop` runs the same world as a simulator in which a planner drives the ego. Names are imported
lazily, so that `occvla_hf.sim.cli` (loaded by every `occvla-hf` call) stays cheap.

Where the real files and their documentation disagree, the sim follows the files: Occ3D `labels.npz` masks are uint8
0/1 with `mask_camera` inside `mask_lidar`, the driveable surface lies in z-layer 0 (`OCC_GROUND_LAYER`), and
`category` records carry their lidarseg `index` (see `sim.occupancy` and `sim.nuscenes_tables`). Measured on sim
data: the lidar mask covers about 20-30 % of the grid and the camera mask slightly less (real files: about 9 % and
7 %); the buildings that line the sim's streets return rays at every height within the 40 m range.
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
