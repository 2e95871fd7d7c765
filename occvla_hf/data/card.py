"""The dataset card (README.md) of built nuScenes datasets: YAML configs, fields, sizes, licence and citations."""

from __future__ import annotations

from datasets import DatasetDict
from huggingface_hub import DatasetCardData

from occvla_hf.data.schema import FIELD_DESCRIPTIONS

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
