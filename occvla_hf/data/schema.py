"""The dataset row schema: the columns of each config, their `Features`, what each holds, and the decoders.

Three configs (`DATASET_CONFIG_NAMES`), one row per keyframe (`planning`, `occupancy`) or per nuScenes-QA question
(`qa`). Every row starts with the keyframe columns; the keyframe configs then hold its camera columns, once per
keyframe, and QA rows none: they take them from the `IMAGES_CONFIG` row of the same `sample_token`
(`occvla_hf.data.keyframes.join_keyframes`).

  keyframe    sample_token str, scene_name str, timestamp int64 (us)
  camera      images: 6 images in CAMERA_NAMES order (PIL on access), camera_intrinsics (6, 3, 3) float32,
              camera_extrinsics (6, 4, 4) float32 camera->ego (calibrated, ego at the camera's time),
              camera_to_keyframe_ego (6, 4, 4) float32 camera->ego at the keyframe (what projections onto the BEV use;
              see `occvla_hf.data.nuscenes`)
  planning    keyframe + camera columns, then ego_status (6,) float32 [vx, vy m/s, ax, ay m/s^2, yaw_rate rad/s,
              steering rad] with ego_status_valid (6,) bool; trajectory (6, 2) float32 m, ego frame (x forward,
              y left), one waypoint per keyframe (nominally 0.5 s), trajectory_mask (6,) bool; past_trajectory (4, 2)
              float32 (oldest first), past_trajectory_mask (4,); meta_action class label ("<speed>, <path>", -1
              without future); reasoning str (critical objects, road, decision: `occvla_hf.reasoning`);
              agent_boxes: 7 lists (t = 0..6 keyframes) of rows [x, y, z, length, width, height, yaw] (BOX_FIELDS)
              in the current ego frame, every annotation of that keyframe; agent_categories: 7 lists of class labels
              of full nuScenes category names; agent_instances: 7 lists of instance tokens
  qa          keyframe columns, then question str, answer str, template_type class label (QA_QUESTION_TYPES),
              num_hop class label (QA_HOPS: id 0 = H0, 1 = H1)
  occupancy   keyframe + camera columns, then semantics, mask_camera, mask_lidar: compressed bytes;
              `decode_occupancy` gives (200, 200, 16) uint8 and bool arrays (see `occvla_hf.data.occ3d`)

Class labels are stored as ids (`occvla_hf.class_labels`: names, `label_name` to read either form).

Label-scarce copies (`occvla_hf.experiments.label_scarcity`) add `labelled` bool (`LABELLED_COLUMN`) to every planning
row: False where the keyframe's task labels are withheld (its trajectory, meta_action and reasoning are blanked, and
training uses it for occupancy only). `labelled_mask` reads it; data without the column is labelled throughout.

With `dataset.with_format("numpy")` the arrays come back as numpy arrays of the shapes above; with the default format
they are nested lists. `agent_boxes_arrays(row["agent_boxes"])` gives the 7 box arrays (N_t, 7) in either format.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasets import Array2D, Array3D, ClassLabel, Dataset, Features, Image, List, Value

from occvla_hf.class_labels import CLASS_LABEL_NAMES
from occvla_hf.constants import (
    BOX_FIELDS,
    CAMERA_NAMES,
    DATASET_CONFIG_NAMES,
    EGO_STATUS_FEATURES,
    LABELLED_COLUMN,
    NUM_BOX_STEPS,
    NUM_PAST_WAYPOINTS,
    NUM_WAYPOINTS,
    QA_HOPS,
    QA_QUESTION_TYPES,
)
from occvla_hf.data.occ3d import OCC_ARRAY_NAMES, decode_occupancy


def _keyframe_features() -> dict:
    """The columns every row starts with: the keyframe it is about."""
    return {"sample_token": Value("string"), "scene_name": Value("string"), "timestamp": Value("int64")}


def _camera_features() -> dict:
    """A keyframe's camera columns: stored once per keyframe (planning and occupancy rows); QA rows join them."""
    return {
        "images": List(Image(), length=len(CAMERA_NAMES)),
        "camera_intrinsics": Array3D((len(CAMERA_NAMES), 3, 3), "float32"),
        "camera_extrinsics": Array3D((len(CAMERA_NAMES), 4, 4), "float32"),
        "camera_to_keyframe_ego": Array3D((len(CAMERA_NAMES), 4, 4), "float32"),
    }


KEYFRAME_COLUMNS: tuple[str, ...] = tuple(_keyframe_features())
CAMERA_COLUMNS: tuple[str, ...] = tuple(_camera_features())
# Configs whose rows hold the camera columns.
CONFIGS_WITH_CAMERAS: tuple[str, ...] = ("planning", "occupancy")
# The config whose rows hold the camera columns of every keyframe of a split: where QA rows get their images.
IMAGES_CONFIG: str = "planning"


def _class_label(column: str) -> ClassLabel:
    return ClassLabel(names=list(CLASS_LABEL_NAMES[column]))


def config_features(config: str) -> Features:
    """Explicit `Features` of a config (column order = row format order)."""
    specific = {
        "planning": {
            "ego_status": List(Value("float32"), length=len(EGO_STATUS_FEATURES)),
            "ego_status_valid": List(Value("bool"), length=len(EGO_STATUS_FEATURES)),
            "trajectory": Array2D((NUM_WAYPOINTS, 2), "float32"),
            "trajectory_mask": List(Value("bool"), length=NUM_WAYPOINTS),
            "past_trajectory": Array2D((NUM_PAST_WAYPOINTS, 2), "float32"),
            "past_trajectory_mask": List(Value("bool"), length=NUM_PAST_WAYPOINTS),
            "meta_action": _class_label("meta_action"),
            "reasoning": Value("string"),
            "agent_boxes": List(List(List(Value("float32"), length=len(BOX_FIELDS))), length=NUM_BOX_STEPS),
            "agent_categories": List(List(_class_label("agent_categories")), length=NUM_BOX_STEPS),
            "agent_instances": List(List(Value("string")), length=NUM_BOX_STEPS),
        },
        "qa": {
            "question": Value("string"),
            "answer": Value("string"),
            "template_type": _class_label("template_type"),
            "num_hop": _class_label("num_hop"),
        },
        "occupancy": {name: Value("binary") for name in OCC_ARRAY_NAMES},
    }
    if config not in specific:
        raise ValueError(f"config: expected one of {DATASET_CONFIG_NAMES}, got {config!r}")
    cameras = _camera_features() if config in CONFIGS_WITH_CAMERAS else {}
    return Features({**_keyframe_features(), **cameras, **specific[config]})


def labelled_mask(rows: Dataset) -> np.ndarray:
    """(N,) bool: which rows keep their task labels (the `labelled` column; all of them without it)."""
    if LABELLED_COLUMN not in rows.column_names:
        return np.ones(len(rows), dtype=bool)
    return np.asarray(rows[LABELLED_COLUMN], dtype=bool)


def agent_boxes_arrays(agent_boxes: Sequence) -> list[np.ndarray]:
    """A row's `agent_boxes` (lists or numpy format) as 7 float32 arrays (N_t, 7), empty steps as (0, 7)."""
    return [np.asarray(step, dtype=np.float32).reshape(-1, len(BOX_FIELDS)) for step in agent_boxes]


FIELD_DESCRIPTIONS: dict[str, str] = {
    "sample_token": "nuScenes sample (keyframe) token",
    "scene_name": "nuScenes scene name",
    "timestamp": "keyframe time, microseconds",
    "images": f"6 camera images in the order {', '.join(CAMERA_NAMES)}",
    "camera_intrinsics": "(6, 3, 3) float32 pinhole intrinsics, pixels",
    "camera_extrinsics": "(6, 4, 4) float32 calibrated camera -> ego transforms (ego at each camera's time), metres",
    "camera_to_keyframe_ego": "(6, 4, 4) float32 camera -> ego at the LIDAR_TOP keyframe (for projections onto the "
    "BEV), metres",
    "ego_status": f"(6,) float32 {', '.join(EGO_STATUS_FEATURES)}: m/s, m/s^2, rad/s, rad (causal differences of "
    "the 2 Hz ego poses; steering-wheel angle from the CAN bus expansion's vehicle_monitor)",
    "ego_status_valid": "(6,) bool, False where an ego-status entry is unavailable (scene start, no CAN bus)",
    "trajectory": "(6, 2) float32 future ego positions at 0.5 s steps (3 s), ego frame (x forward, y left), metres",
    "trajectory_mask": "(6,) bool, False past the end of the scene",
    "past_trajectory": "(4, 2) float32 past ego positions (-2.0 to -0.5 s, oldest first), same frame",
    "past_trajectory_mask": "(4,) bool, False before the start of the scene",
    "meta_action": "class label: the '<speed>, <path>' driving decision derived from the trajectory (-1 without "
    "future waypoints)",
    "reasoning": "critical objects, road situation and the decision with its reason, generated from this row (and "
    "the sim's traffic light) by occvla_hf.reasoning.generate_reasoning",
    "agent_boxes": f"7 lists (t = 0..6 keyframes) of boxes [{', '.join(BOX_FIELDS)}] in the current ego frame "
    "(metres, radians): every annotation of that keyframe",
    "agent_categories": "7 lists of class labels (full nuScenes category names) matching agent_boxes",
    "agent_instances": "7 lists of nuScenes instance tokens matching agent_boxes",
    "question": "nuScenes-QA question",
    "answer": "nuScenes-QA answer (as a string)",
    "template_type": f"class label: the question type, one of {', '.join(QA_QUESTION_TYPES)}",
    "num_hop": f"class label: reasoning hops, {', '.join(f'{i} ({name})' for i, name in enumerate(QA_HOPS))}",
    LABELLED_COLUMN: "label-scarce copies only: False where the keyframe's task labels are withheld (trajectory, "
    "meta_action and reasoning blanked; trained for occupancy only)",
    "semantics": "zstd-compressed (200, 200, 16) uint8 Occ3D class ids (17 = free); decode with decode_occupancy",
    "mask_camera": "zstd-compressed bit-packed (200, 200, 16) bool camera visibility mask (evaluation mask)",
    "mask_lidar": "zstd-compressed bit-packed (200, 200, 16) bool lidar visibility mask",
}


def config_columns(config: str) -> tuple[str, ...]:
    """The column names of a config, in row order."""
    return tuple(config_features(config))


__all__ = [
    "CAMERA_COLUMNS",
    "CONFIGS_WITH_CAMERAS",
    "FIELD_DESCRIPTIONS",
    "IMAGES_CONFIG",
    "KEYFRAME_COLUMNS",
    "agent_boxes_arrays",
    "config_columns",
    "config_features",
    "decode_occupancy",
    "labelled_mask",
]
