"""The dataset card (README.md) of built datasets: YAML configs, fields, sizes, licence and citations, worded for the
source the datasets record (nuScenes, or the sim's procedural scenes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datasets import DatasetDict
from huggingface_hub import DatasetCardData

from occvla_hf.class_labels import CLASS_LABEL_NAMES, NO_LABEL
from occvla_hf.constants import OCC_CLASS_NAMES, OCC_RANGE_MAX_M, OCC_RANGE_MIN_M, OCC_VOXEL_SIZE_M, PROJECT_LICENSE
from occvla_hf.data.keyframes import IMAGE_COLUMN
from occvla_hf.data.occ3d import occupancy_storage
from occvla_hf.data.provenance import CARD_SOURCE_KEY, DataSource
from occvla_hf.data.schema import FIELD_DESCRIPTIONS, IMAGES_CONFIG

# The card's YAML key of how the occupancy columns are stored (`occ3d.occupancy_storage`, plus the class names).
CARD_OCCUPANCY_KEY: str = "occvla_occupancy_encoding"

_INTROS: dict[str, str] = {
    "nuscenes": """\
Keyframes of nuScenes read with the nuscenes-devkit, joined with Occ3D-nuScenes occupancy labels and nuScenes-QA
questions, in one config per task. Splits are the official nuScenes scene splits.
""",
    "sim": """\
Procedural driving scenes written by the occvla-hf sim generator ({generator}, occvla-hf {package_version}, seed
{seed}) in the nuScenes, Occ3D-nuScenes and nuScenes-QA formats, read back like nuScenes, in one config per task. No
real sensor data: the scenes, agents, occupancy labels and questions are generated. Scene and split names follow
nuScenes' (`{version}`) so that the same tools read them.
""",
}
_TITLES: dict[str, str] = {
    "nuscenes": "nuScenes {version}: planning, QA and occupancy",
    "sim": "occvla-hf sim scenes ({version} layout, seed {seed}): planning, QA and occupancy",
}
_LEROBOT_NAMES: dict[str, str] = {"nuscenes": "nuScenes", "sim": "occvla-hf sim"}
_TAGS: dict[str, list[str]] = {
    "nuscenes": ["autonomous-driving", "nuscenes", "occ3d", "nuscenes-qa", "planning", "occupancy"],
    "sim": ["autonomous-driving", "synthetic", "procedural", "planning", "occupancy"],
}

_USAGE = """\
## Usage

```python
from datasets import load_dataset
from occvla_hf.data import decode_occupancy, join_keyframes

planning = load_dataset(PATH, "planning")  # PATH: this repository id, or the local folder
occupancy = load_dataset(PATH, "occupancy").with_transform(decode_occupancy)  # arrays on access
qa = join_keyframes(load_dataset(PATH, "qa", split=SPLIT), planning[SPLIT])  # questions with their images
```

`datasets` caches a local folder by its name: after rebuilding one, load it with `download_mode="force_redownload"`.
"""

_QA_IMAGES = f"""\
### Images of the QA rows

A keyframe's six images (and its camera calibration) are stored once, in its `{IMAGES_CONFIG}` row; the `qa` rows hold
none and name their keyframe by `sample_token`. `occvla_hf.data.join_keyframes(qa_split, {IMAGES_CONFIG}_split)` joins
them (a lazy view: the images are read from the {IMAGES_CONFIG} rows on access, a question whose keyframe has no row is
an error naming its sample_token); without the package:

```python
row_of = {{token: i for i, token in enumerate(planning[SPLIT]["sample_token"])}}
images = planning[SPLIT][row_of[qa[SPLIT][0]["sample_token"]]]["images"]  # the six views of the first question
```
"""

_OCCUPANCY = """\
### Decoding the occupancy

`semantics`, `mask_camera` and `mask_lidar` are raw zstd frames (not `.npy` files, so not for `np.load`), as the
card's YAML (`{key}`) states:

- `semantics` decompresses to {voxels:,} bytes: the (200, 200, 16) uint8 Occ3D class ids in C order over
  (x, y, z): {grid}.
- each mask decompresses to {mask_bytes:,} bytes: the (200, 200, 16) bool grid bit-packed by
  `np.packbits(mask, axis=None, bitorder="big")`. `mask_camera` is the standard evaluation mask.
- classes: {classes}.

With the package, `occvla_hf.data.decode_occupancy` (a batch transform) decodes them; with numpy and pyarrow alone:

```python
import numpy as np
import pyarrow as pa

zstd = pa.Codec("zstd")
row = occupancy[SPLIT][0]
semantics = np.frombuffer(zstd.decompress(row["semantics"], decompressed_size={voxels}, asbytes=True), np.uint8)
semantics = semantics.reshape(200, 200, 16)
packed = np.frombuffer(zstd.decompress(row["mask_camera"], decompressed_size={mask_bytes}, asbytes=True), np.uint8)
mask_camera = np.unpackbits(packed, bitorder="big").reshape(200, 200, 16).astype(bool)
```
"""

_IMAGE_NOTES: dict[str, str] = {
    "path": "(the Parquet shards reference the JPEG files by absolute path on the build machine; the Arrow copies "
    "written by `save_to_disk` and the shards uploaded by `push_to_hub` embed the bytes).",
    "bytes": "(JPEG bytes embedded).",
}
_QA_IMAGE_NOTE = f"QA rows take theirs from the `{IMAGES_CONFIG}` row of their keyframe (see below)."

_LICENCES: dict[str, str] = {
    "nuscenes": """\
## Licence

The nuScenes terms of use apply (https://www.nuscenes.org/terms-of-use): the data is released under CC BY-NC-SA 4.0
for non-commercial use. The Occ3D-nuScenes labels and nuScenes-QA questions are derived from nuScenes; cite all
three works when you use them.
""",
    "sim": f"""\
## Licence

Generated by occvla-hf, under its licence ({PROJECT_LICENSE}). The formats follow nuScenes, Occ3D-nuScenes and
nuScenes-QA; none of their data is included.
""",
}

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
        split: dataset.data.table.drop_columns([c for c in [IMAGE_COLUMN] if c in dataset.column_names]).nbytes
        / max(len(dataset), 1)
        for split, dataset in dataset_dict.items()
    }


def dataset_source(datasets: dict[str, DatasetDict]) -> DataSource:
    """The one source every split of `datasets` records in its `DatasetInfo` (`build_dataset` writes it)."""
    sources = [
        DataSource.from_info(dataset.info) for dataset_dict in datasets.values() for dataset in dataset_dict.values()
    ]
    if not sources or None in sources:
        raise ValueError("datasets: a split records no source in its DatasetInfo (build it with build_dataset)")
    if any(source != sources[0] for source in sources):
        raise ValueError(f"datasets: the splits record different sources: {sorted({s.name for s in sources})}")
    return sources[0]


def dataset_card(datasets: dict[str, DatasetDict], *, version: str, image_mode: str) -> str:
    """README.md text for `{config: DatasetDict}`: YAML front matter (licence, source record, configs -> Parquet
    shards) + body, worded for the source the datasets record."""
    source = dataset_source(datasets)
    fields = {"version": version, **{key: source.sim.get(key, "?") for key in ("generator", "package_version", "seed")}}
    title = _TITLES[source.name].format(**fields)
    card_data = DatasetCardData(
        license=source.license,
        pretty_name=title,
        tags=_TAGS[source.name],
        **{CARD_SOURCE_KEY: source.card_record()},
        **({CARD_OCCUPANCY_KEY: _occupancy_record()} if "occupancy" in datasets else {}),
        configs=[
            {
                "config_name": config,
                "data_files": [{"split": split, "path": f"{config}/{split}-*"} for split in dataset_dict],
            }
            for config, dataset_dict in datasets.items()
        ],
    )
    sections = [
        f"# {title}\n",
        _INTROS[source.name].format(**fields),
        _USAGE,
        f"Images: built with `image_mode={image_mode!r}` {_IMAGE_NOTES[image_mode]}"
        + (f" {_QA_IMAGE_NOTE}" if "qa" in datasets else "")
        + "\n",
        "## Sizes\n",
        "| config | split | rows | keyframes | Arrow bytes per row (without images) |\n|---|---|---|---|---|",
    ]
    for config, dataset_dict in datasets.items():
        per_row = bytes_per_row(dataset_dict)
        for split, dataset in dataset_dict.items():
            keyframes = len(dataset.unique("sample_token"))
            sections.append(f"| {config} | {split} | {len(dataset)} | {keyframes} | {per_row[split]:,.0f} |")
    sections.append("")
    sections += _details(datasets)
    for config, dataset_dict in datasets.items():
        features = next(iter(dataset_dict.values())).features if dataset_dict else {}
        sections.append(f"## Config `{config}`\n\n| field | description |\n|---|---|")
        sections.extend(f"| `{name}` | {FIELD_DESCRIPTIONS[name]} |" for name in features)
        sections.append("")
    sections += [_LICENCES[source.name]] + ([_CITATIONS] if source.name == "nuscenes" else [])
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections) + "\n"


def lerobot_card(source: DataSource, info: Mapping[str, Any], task: str) -> str:
    """README.md of a LeRobot export (`data.lerobot`: `info` its `meta/info.json`, `task` its one task text): the
    front matter LeRobot writes
    (`task_categories: robotics`, tag `LeRobot`, the data files as the default config) with the licence and source
    record of the dataset it was exported from, and a body naming the source, the episodes and the features."""
    card_data = DatasetCardData(
        license=source.license,
        pretty_name=f"{_LEROBOT_NAMES[source.name]} planning keyframes in the LeRobot format",
        task_categories=["robotics"],
        tags=["LeRobot", *_TAGS[source.name]],
        **{CARD_SOURCE_KEY: source.card_record()},
        configs=[{"config_name": "default", "data_files": "data/*/*.parquet"}],
    )
    splits = ", ".join(f"`{name}` (episodes {span})" for name, span in info["splits"].items())
    sections = [
        f"# {card_data.pretty_name}\n",
        f"{source.description} Exported by `occvla-hf data export-lerobot` as a LeRobot {info['codebase_version']} "
        f"dataset: one episode per scene, one frame per keyframe at {info['fps']} Hz, {info['total_episodes']} "
        f"episodes and {info['total_frames']} frames; splits {splits}. Its one task: {task}"
        " `observation.state` is the ego status, `action` the 6 future waypoints (x, y) at 0.5 s steps, flattened;"
        " `ego_status_valid` and `waypoint_valid` say which entries exist. Statistics: [meta/stats.json](meta/stats.json);"
        " the schema: [meta/info.json](meta/info.json).\n",
        "## Features\n",
        "| feature | dtype | shape |\n|---|---|---|",
        *(f"| `{name}` | {spec['dtype']} | {tuple(spec['shape'])} |" for name, spec in info["features"].items()),
        "",
        _LICENCES[source.name],
    ]
    if source.name == "nuscenes":
        sections.append(_CITATIONS)
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections) + "\n"


def _occupancy_record() -> dict:
    """The card's `CARD_OCCUPANCY_KEY` entry: each occupancy column's storage and the Occ3D class names."""
    return {"columns": occupancy_storage(), "class_names": list(OCC_CLASS_NAMES)}


def _class_label_section(labelled: list[str]) -> str:
    """What the card says about the class-label columns `labelled`."""
    lines = [
        "### Class labels\n",
        f"`{'`, `'.join(labelled)}` are `datasets.ClassLabel` columns stored as ids:",
        "`features[name].int2str(id)` gives the name.",
    ]
    if "agent_categories" in labelled:
        lines.append(
            "The per-box labels of `agent_categories` decode with\n`features['agent_categories'].feature.feature`."
        )
    if "meta_action" in labelled:
        lines.append(f"A `meta_action` of {NO_LABEL} marks a keyframe without future waypoints (no label).")
    if "num_hop" in labelled:
        lines.append("`num_hop` ids are the hop counts: 0 = H0, 1 = H1.")
    return "\n".join(lines) + "\n"


def _details(datasets: dict[str, DatasetDict]) -> list[str]:
    """The card sections on the QA images, the class labels and the occupancy of the configs in `datasets`."""
    columns = {name for dataset_dict in datasets.values() for split in dataset_dict.values() for name in split.features}
    labelled = [name for name in CLASS_LABEL_NAMES if name in columns]
    sections = [_QA_IMAGES] if "qa" in datasets else []
    if labelled:
        sections.append(_class_label_section(labelled))
    if "occupancy" in datasets:
        storage = occupancy_storage()
        grid = ", ".join(
            f"{axis} in [{low:g}, {high:g}] m" for axis, low, high in zip("xyz", OCC_RANGE_MIN_M, OCC_RANGE_MAX_M)
        )
        sections.append(
            _OCCUPANCY.format(
                key=CARD_OCCUPANCY_KEY,
                voxels=storage["semantics"]["decompressed_bytes"],
                mask_bytes=storage["mask_camera"]["decompressed_bytes"],
                grid=f"{grid}, {OCC_VOXEL_SIZE_M:g} m voxels, ego frame",
                classes=", ".join(f"{i} {name}" for i, name in enumerate(OCC_CLASS_NAMES)),
            )
        )
    return sections
