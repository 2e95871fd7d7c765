"""Conventions shared across the package: cameras, Occ3D classes and grid, planning horizon, meta-actions.

Every literal that more than one module needs lives here, once.
"""

from __future__ import annotations

# nuScenes camera order used everywhere (processor input order, dataset columns, renderer, plots).
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
# Yaw of each camera's optical axis in the ego frame (degrees, counter-clockwise from x forward), in CAMERA_NAMES
# order: the nuScenes rig (front cameras about 70 degrees wide, the back camera about 110).
CAMERA_YAWS_DEG: tuple[float, ...] = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)
# The cameras as they sit on the car seen from above (plots' mosaics): front row, back row, each left to right.
CAMERA_ROWS: tuple[tuple[str, str, str], tuple[str, str, str]] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
# The nuScenes lidar channel (the readers take keyframe ego poses from its sample data).
LIDAR_CHANNEL: str = "LIDAR_TOP"

# Occ3D-nuScenes semantic classes, index = label id in `labels.npz["semantics"]`.
OCC_CLASS_NAMES: tuple[str, ...] = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
)
NUM_OCC_CLASSES: int = len(OCC_CLASS_NAMES)  # 18
OCC_FREE_CLASS: int = OCC_CLASS_NAMES.index("free")  # 17

# Occ3D-nuScenes grid: 200 x 200 x 16 voxels of 0.4 m over x, y in [-40, 40] m and z in [-1, 5.4] m (ego frame).
OCC_GRID_SHAPE: tuple[int, int, int] = (200, 200, 16)
OCC_VOXEL_SIZE_M: float = 0.4
OCC_RANGE_MIN_M: tuple[float, float, float] = (-40.0, -40.0, -1.0)
OCC_RANGE_MAX_M: tuple[float, float, float] = (40.0, 40.0, 5.4)
# Vertical placement of the labels: real Occ3D-nuScenes files put the driveable surface in z-layer 0 and objects in
# the layers above it (about one metre lower than the documented z range implies; the CVPR 2023 occupancy
# challenge's voxel/image alignment threads report it). Layer k is centred (k - OCC_GROUND_LAYER) * 0.4 m above the
# ground plane of the ego frame.
OCC_GROUND_LAYER: int = 0

# Official splits of each nuScenes version (names as the devkit's `create_splits_scenes` returns them): the dataset
# builds' splits. The second split of a version is its validation split (what evaluation reads by default).
NUSCENES_VERSION_SPLITS: dict[str, tuple[str, ...]] = {
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-trainval": ("train", "val"),
    "v1.0-test": ("test",),
}
VALIDATION_SPLITS: tuple[str, ...] = tuple(splits[1] for splits in NUSCENES_VERSION_SPLITS.values() if len(splits) > 1)

# Planning: six future waypoints at 2 Hz (3 s), ego frame (x forward, y left), metres.
NUM_WAYPOINTS: int = 6
WAYPOINT_STEP_S: float = 0.5
# Agent boxes are stored at t = 0 (the keyframe) and at each future waypoint.
NUM_BOX_STEPS: int = NUM_WAYPOINTS + 1

# Ego-status features in the order the processor and the datasets store them.
EGO_STATUS_FEATURES: tuple[str, ...] = ("vx", "vy", "ax", "ay", "yaw_rate", "steering")
# The ego velocity (m/s, ego frame x forward, y left) within the ego status: what constant velocity extrapolates.
EGO_VELOCITY_FEATURES: tuple[str, str] = ("vx", "vy")

# Meta-action vocabulary: speed x path.
SPEED_ACTIONS: tuple[str, ...] = ("stop", "decelerate", "keep", "accelerate")
PATH_ACTIONS: tuple[str, ...] = ("straight", "left turn", "right turn", "left lane change", "right lane change")

# High-level driving commands (UniAD / VAD navigation commands), derived from the future trajectory.
DRIVING_COMMANDS: tuple[str, ...] = ("turn left", "turn right", "go straight")

# Training targets of planning prompts: the meta-action alone, or the reasoning text followed by the meta-action.
PLANNING_TARGETS: tuple[str, ...] = ("meta_action", "reasoning")

# Where the planning `<traj>` token sits: at the end of the prompt (the trajectory reads the prompt only), or after
# the generated text (the trajectory conditions on the meta-action and reasoning the model wrote).
TRAJECTORY_POSITIONS: tuple[str, ...] = ("prompt", "after_text")

# States of a traffic light facing the ego (the sim's signals: green, then amber, then red).
TRAFFIC_LIGHT_STATES: tuple[str, ...] = ("green", "amber", "red")
# The sim's table of the light the ego faces, `<version>/traffic_light.json` beside the nuScenes tables (nuScenes has
# none): one record per keyframe with a light ahead, {"token", "sample_token", "state", "stop_line_m"} (state in
# TRAFFIC_LIGHT_STATES; stop_line_m: distance along the route from the ego origin to the stop line).
TRAFFIC_LIGHT_TABLE: str = "traffic_light"

# nuScenes-QA question types and hop counts.
QA_QUESTION_TYPES: tuple[str, ...] = ("exist", "count", "object", "status", "comparison")
QA_HOPS: tuple[str, ...] = ("H0", "H1")

# nuScenes-QA vocabulary (qiantianwen/NuScenes-QA): object words (detection classes with spaces), status words (from
# the nuScenes attributes), the six directions of the H1 templates, the largest count answered, and the official
# closed answer vocabulary of 30 (`src/datasets/answer_dict.json`, in its order).
QA_OBJECTS: tuple[str, ...] = (
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction vehicle",
    "motorcycle",
    "pedestrian",
    "traffic cone",
    "trailer",
    "truck",
)
QA_STATUSES: tuple[str, ...] = (
    "moving",
    "not standing",
    "parked",
    "standing",
    "stopped",
    "with rider",
    "without rider",
)
QA_RELATIONS: tuple[str, ...] = ("front", "front left", "back left", "back", "back right", "front right")
QA_MAX_COUNT: int = 10
NUSCENES_QA_ANSWERS: tuple[str, ...] = (
    *(str(n) for n in range(QA_MAX_COUNT + 1)),
    "no",
    "yes",
    *sorted(QA_OBJECTS + QA_STATUSES),
)

# (nuScenes category, description, Occ3D class name): all 23 official detection-era categories, the ones nuScenes
# annotations use. The order is that of the `agent_categories` class labels of the built datasets (id = index):
# append, never reorder.
NUSCENES_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("human.pedestrian.adult", "Adult subcategory.", "pedestrian"),
    ("human.pedestrian.child", "Child subcategory.", "pedestrian"),
    ("human.pedestrian.wheelchair", "Wheelchairs.", "others"),
    ("human.pedestrian.stroller", "Strollers.", "others"),
    ("human.pedestrian.personal_mobility", "Scooters, skateboards, segways.", "others"),
    ("human.pedestrian.police_officer", "Police officer.", "pedestrian"),
    ("human.pedestrian.construction_worker", "Construction worker.", "pedestrian"),
    ("animal", "All animals.", "others"),
    ("vehicle.car", "Vehicle designed primarily for personal use.", "car"),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle.", "motorcycle"),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle.", "bicycle"),
    ("vehicle.bus.bendy", "Bendy bus subcategory.", "bus"),
    ("vehicle.bus.rigid", "Rigid bus subcategory.", "bus"),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo.", "truck"),
    ("vehicle.construction", "Vehicles primarily designed for construction.", "construction_vehicle"),
    ("vehicle.emergency.ambulance", "All types of ambulances.", "car"),
    ("vehicle.emergency.police", "All types of police vehicles.", "car"),
    ("vehicle.trailer", "Any vehicle trailer.", "trailer"),
    ("movable_object.barrier", "Temporary road barrier placed in the scene to redirect traffic.", "barrier"),
    ("movable_object.trafficcone", "All types of traffic cones.", "traffic_cone"),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull.", "others"),
    ("movable_object.debris", "Movable object that is left on the driveable surface.", "others"),
    ("static_object.bicycle_rack", "Area or device intended to park or secure bicycles.", "others"),
)
NUSCENES_CATEGORY_NAMES: tuple[str, ...] = tuple(name for name, _, _ in NUSCENES_CATEGORIES)

# Agent boxes (datasets, collision metric, plots): one row per box, ego frame of the current keyframe, metres/radians.
BOX_FIELDS: tuple[str, ...] = ("x", "y", "z", "length", "width", "height", "yaw")

# Special tokens shared by the tokenizer, the processor and the model config.
IMAGE_TOKEN: str = "<image>"
TRAJ_TOKEN: str = "<traj>"
# Label of positions without a next-token loss (torch's cross-entropy default): the processor writes it, the loss
# (`modeling.loss`) skips it.
IGNORE_INDEX: int = -100

# Past ego trajectory stored with the planning data (ego-status baselines): 4 waypoints at 2 Hz (2 s), oldest first.
NUM_PAST_WAYPOINTS: int = 4

# Occ3D class colours for pictures (RGB, index = class id): the palette of the Occ3D-nuScenes visualisation scripts.
OCC_CLASS_COLORS_RGB: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # others
    (255, 120, 50),  # barrier
    (255, 192, 203),  # bicycle
    (255, 255, 0),  # bus
    (0, 150, 245),  # car
    (0, 255, 255),  # construction_vehicle
    (200, 180, 0),  # motorcycle
    (255, 0, 0),  # pedestrian
    (255, 240, 150),  # traffic_cone
    (135, 60, 0),  # trailer
    (160, 32, 240),  # truck
    (255, 0, 255),  # driveable_surface
    (175, 0, 75),  # other_flat
    (75, 0, 75),  # sidewalk
    (150, 240, 80),  # terrain
    (230, 230, 250),  # manmade
    (0, 175, 0),  # vegetation
    (255, 255, 255),  # free
)

# How tables and model cards name the open-loop planning protocols (keys: `evaluation.planning.PROTOCOLS`).
PLANNING_PROTOCOL_NAMES: dict[str, str] = {"stp3": "ST-P3", "uniad": "UniAD"}
# Divisors of the per-step planning values: the samples valid at a step, or all samples (UniAD's tables).
PLANNING_NORMALIZATIONS: tuple[str, ...] = ("valid_steps", "all_samples")

# Configs of the datasets built by `occvla-hf data build` (one Hub dataset, one config per task).
DATASET_CONFIG_NAMES: tuple[str, ...] = ("planning", "qa", "occupancy")
# Planning column of label-scarce data (`experiments.label_scarcity`): False where the keyframe's task labels are
# withheld, so the row trains occupancy only; every row is labelled in data without it.
LABELLED_COLUMN: str = "labelled"

# Licence of the package and of what it generates (the sim's scenes): the `license` of pyproject.toml, as a Hub id.
PROJECT_LICENSE: str = "apache-2.0"
# Where data (and the weights trained on it) comes from: real nuScenes keyframes or the sim's procedural scenes.
DATA_SOURCES: tuple[str, ...] = ("nuscenes", "sim")
# Licence of each source's data and of weights trained on it (nuScenes: its terms of use).
DATA_SOURCE_LICENSES: dict[str, str] = {"nuscenes": "cc-by-nc-sa-4.0", "sim": PROJECT_LICENSE}
# The provenance marker `occvla-hf sim` leaves in its dataroot (generator, package version, seed, settings; JSON).
SIM_PROVENANCE_FILE: str = "occvla_sim.json"
