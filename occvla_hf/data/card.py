"""The dataset card (README.md) of built nuScenes datasets: YAML configs, fields, sizes, licence and citations."""

from __future__ import annotations

from datasets import DatasetDict
from huggingface_hub import DatasetCardData

from occvla_hf.constants import BOX_FIELDS, CAMERA_NAMES, EGO_STATUS_FEATURES, QA_QUESTION_TYPES

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
    "meta_action": "'<speed>, <path>' driving decision derived from the trajectory ('' without future waypoints)",
    "agent_boxes": f"7 lists (t = 0..6 keyframes) of boxes [{', '.join(BOX_FIELDS)}] in the current ego frame "
    "(metres, radians): every annotation of that keyframe",
    "agent_categories": "7 lists of full nuScenes category names matching agent_boxes",
    "agent_instances": "7 lists of nuScenes instance tokens matching agent_boxes",
    "question": "nuScenes-QA question",
    "answer": "nuScenes-QA answer (as a string)",
    "template_type": f"question type, one of {', '.join(QA_QUESTION_TYPES)}",
    "num_hop": "reasoning hops, 0 (H0) or 1 (H1)",
    "semantics": "zstd-compressed (200, 200, 16) uint8 Occ3D class ids (17 = free); decode with decode_occupancy",
    "mask_camera": "zstd-compressed bit-packed (200, 200, 16) bool camera visibility mask (evaluation mask)",
    "mask_lidar": "zstd-compressed bit-packed (200, 200, 16) bool lidar visibility mask",
}

_INTRO = """\
Keyframes of nuScenes read with the nuscenes-devkit, joined with Occ3D-nuScenes occupancy labels and nuScenes-QA
questions, in one config per task. Splits are the official nuScenes scene splits.

## Usage

```python
from datasets import load_dataset
from occvla_hf.data import decode_occupancy

planning = load_dataset(PATH, "planning")  # PATH: this repository id, or the local folder
occupancy = load_dataset(PATH, "occupancy").with_transform(decode_occupancy)  # arrays on access
```

`datasets` caches a local folder by its name: after rebuilding one, load it with `download_mode="force_redownload"`.
"""

_IMAGE_NOTES: dict[str, str] = {
    "path": "(the Parquet shards reference the JPEG files by absolute path on the build machine; the Arrow copies "
    "written by `save_to_disk` and the shards uploaded by `push_to_hub` embed the bytes).",
    "bytes": "(JPEG bytes embedded).",
}

_LICENCE = """\
## Licence

The nuScenes terms of use apply (https://www.nuscenes.org/terms-of-use): the data is released under CC BY-NC-SA 4.0
for non-commercial use. The Occ3D-nuScenes labels and nuScenes-QA questions are derived from nuScenes; cite all
three works when you use them.
"""

_CITATIONS = """\
## Citations

```bibtex
@inproceedings{caesar2020nuscenes,
  title     = {nuScenes: A Multimodal Dataset for Autonomous Driving},
  author    = {Caesar, Holger and Bankiti, Varun and Lang, Alex H. and Vora, Sourabh and Liong, Venice Erin and
               Xu, Qiang and Krishnan, Anush and Pan, Yu and Baldan, Giancarlo and Beijbom, Oscar},
  booktitle = {CVPR},
  year      = {2020}
}
@inproceedings{tian2023occ3d,
  title     = {Occ3D: A Large-Scale 3D Occupancy Prediction Benchmark for Autonomous Driving},
  author    = {Tian, Xiaoyu and Jiang, Tao and Yun, Longfei and Mao, Yucheng and Yang, Huitong and Wang, Yue and
               Wang, Yilun and Zhao, Hang},
  booktitle = {NeurIPS Datasets and Benchmarks},
  year      = {2023}
}
@inproceedings{qian2024nuscenesqa,
  title     = {NuScenes-QA: A Multi-Modal Visual Question Answering Benchmark for Autonomous Driving Scenario},
  author    = {Qian, Tianwen and Chen, Jingjing and Zhuo, Linhai and Jiao, Yang and Jiang, Yu-Gang},
  booktitle = {AAAI},
  year      = {2024}
}
```"""


def bytes_per_row(dataset_dict: DatasetDict) -> dict[str, float]:
    """Arrow bytes per row of each split, images left out (they are paths or JPEG bytes depending on the build)."""
    return {
        split: dataset.data.table.drop_columns(["images"]).nbytes / max(len(dataset), 1)
        for split, dataset in dataset_dict.items()
    }


def dataset_card(datasets: dict[str, DatasetDict], *, version: str, image_mode: str) -> str:
    """README.md text for `{config: DatasetDict}`: YAML front matter (licence, configs -> Parquet shards) + body."""
    card_data = DatasetCardData(
        license="cc-by-nc-sa-4.0",
        pretty_name=f"nuScenes {version}: planning, QA and occupancy",
        tags=["autonomous-driving", "nuscenes", "occ3d", "nuscenes-qa", "planning", "occupancy"],
        configs=[
            {
                "config_name": config,
                "data_files": [{"split": split, "path": f"{config}/{split}-*"} for split in dataset_dict],
            }
            for config, dataset_dict in datasets.items()
        ],
    )
    sections = [
        f"# nuScenes {version}: planning, QA and occupancy\n",
        _INTRO,
        f"Images: built with `image_mode={image_mode!r}` {_IMAGE_NOTES[image_mode]}\n",
        "## Sizes\n",
        "| config | split | rows | keyframes | Arrow bytes per row (without images) |\n|---|---|---|---|---|",
    ]
    for config, dataset_dict in datasets.items():
        per_row = bytes_per_row(dataset_dict)
        for split, dataset in dataset_dict.items():
            keyframes = len(dataset.unique("sample_token"))
            sections.append(f"| {config} | {split} | {len(dataset)} | {keyframes} | {per_row[split]:,.0f} |")
    sections.append("")
    for config, dataset_dict in datasets.items():
        features = next(iter(dataset_dict.values())).features if dataset_dict else {}
        sections.append(f"## Config `{config}`\n\n| field | description |\n|---|---|")
        sections.extend(f"| `{name}` | {FIELD_DESCRIPTIONS[name]} |" for name in features)
        sections.append("")
    sections += [_LICENCE, _CITATIONS]
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections) + "\n"
