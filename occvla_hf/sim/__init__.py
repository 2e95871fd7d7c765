"""occvla_hf.sim: procedural driving scenes written in the real nuScenes, Occ3D-nuScenes and nuScenes-QA formats.

`generate_dataset(out_dir, num_scenes=..., seed=...)` writes a dataroot that `nuscenes.nuscenes.NuScenes` loads;
`simulate_scene(seed, config)` gives the underlying world state (ego poses, agent boxes) of one scene.
"""

from occvla_hf.sim.config import PRESETS, SimConfig
from occvla_hf.sim.generate import GenerationSummary, dataset_scene, generate_dataset
from occvla_hf.sim.nuscenes_tables import scene_names
from occvla_hf.sim.scene import Scene, simulate_scene

__all__ = [
    "PRESETS",
    "GenerationSummary",
    "Scene",
    "SimConfig",
    "dataset_scene",
    "generate_dataset",
    "scene_names",
    "simulate_scene",
]
