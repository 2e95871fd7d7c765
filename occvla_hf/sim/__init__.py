"""occvla_hf.sim: procedural driving scenes written in the real nuScenes, Occ3D-nuScenes and nuScenes-QA formats.

`generate_dataset(out_dir, num_scenes=..., seed=...)` writes a dataroot that `nuscenes.nuscenes.NuScenes` loads;
`simulate_scene(seed, config)` gives the underlying world state (ego poses, agent boxes) of one scene;
`occvla_hf.sim.closed_loop` runs the same world as a simulator in which a planner drives the ego.

Where the real files and their documentation disagree, the sim follows the files: Occ3D `labels.npz` masks are uint8
0/1 with `mask_camera` inside `mask_lidar`, the driveable surface lies in z-layer 0 (`OCC_GROUND_LAYER`), and
`category` records carry their lidarseg `index` (see `sim.occupancy` and `sim.nuscenes_tables`). Measured on sim
data: the lidar mask covers about 20-30 % of the grid and the camera mask slightly less (real files: about 9 % and
7 %); the buildings that line the sim's streets return rays at every height within the 40 m range.
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
