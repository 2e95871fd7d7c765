"""One loader for the dataset configs, whatever holds them: used by training (both stages), evaluation, the
experiments and the latent cache.

`load_configs(source, configs)` accepts
* an `occvla-hf data build` output folder: its Arrow copies (`arrow/<config>/`), else its Parquet shards
  (`<config>/<split>-*.parquet`, through `datasets.load_dataset` and the card's config table);
* an Arrow folder of one config (`DatasetDict.save_to_disk`, e.g. `<out>/arrow/occupancy`): the one config asked for;
* a Hub dataset id (`user/nuscenes-occvla`): `datasets.load_dataset(id, config)` per config.
`load_split(source, config, split)` is one split of one of them (`split=None`: its validation split, `val` or
`mini_val`; `pick_split` does the same on a loaded `DatasetDict`), QA rows joined with their keyframes' images (from
the `planning` rows of the same split, `keyframes.join_keyframes`); `load_configs` returns the rows as stored.
Errors name the source, the configs and the splits found.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from occvla_hf.constants import DATASET_CONFIG_NAMES, VALIDATION_SPLITS
from occvla_hf.data.keyframes import IMAGE_COLUMN, join_keyframes
from occvla_hf.data.schema import CONFIGS_WITH_CAMERAS, IMAGES_CONFIG

# Folder of a `data build` output holding one `DatasetDict.save_to_disk` folder per config.
ARROW_DIR: str = "arrow"
_DATASET_DICT_FILE = "dataset_dict.json"
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _check_configs(configs: Sequence[str]) -> None:
    unknown = sorted(set(configs) - set(DATASET_CONFIG_NAMES))
    if unknown or not configs:
        raise ValueError(f"configs: expected a non-empty subset of {DATASET_CONFIG_NAMES}, got {list(configs)}")


def load_configs(source: str | os.PathLike, configs: Sequence[str] | None = None) -> dict[str, DatasetDict]:
    """`{config: DatasetDict}` of `configs` (default: every config a build folder holds) from `source` (see the
    module docstring)."""
    if configs is not None:
        _check_configs(configs)
    path = Path(source)
    if not path.is_dir():
        if path.exists() or not _HUB_ID.fullmatch(str(source)):
            raise FileNotFoundError(f"data: {str(source)!r} is not a dataset folder (nor a Hub dataset id user/name)")
        if configs is None:
            raise ValueError(f"configs: name the configs to load from the Hub dataset {str(source)!r}")
        return {config: load_dataset(str(source), config) for config in configs}
    if (path / _DATASET_DICT_FILE).is_file():
        if configs is None or len(configs) != 1:
            raise ValueError(f"configs: {str(path)!r} holds one config's splits; name exactly one, got {configs}")
        return {configs[0]: load_from_disk(str(path))}
    arrow = path / ARROW_DIR
    saved = [name for name in DATASET_CONFIG_NAMES if (arrow / name / _DATASET_DICT_FILE).is_file()]
    parquet = [name for name in DATASET_CONFIG_NAMES if any((path / name).glob("*.parquet"))]
    found = saved or parquet
    if not found:
        raise FileNotFoundError(
            f"data: no dataset under {str(path)!r} (expected {ARROW_DIR}/<config>/ or <config>/*.parquet of "
            "`occvla-hf data build`, or a save_to_disk folder)"
        )
    wanted = list(configs) if configs is not None else found
    missing = [config for config in wanted if config not in found]
    if missing:
        raise ValueError(f"data: {str(path)!r} has no {missing} config (found {found})")
    if saved:
        return {config: load_from_disk(str(arrow / config)) for config in wanted}
    return {config: load_dataset(str(path), config) for config in wanted}


def pick_split(splits: DatasetDict, split: str | None, where: str) -> tuple[str, Dataset]:
    """(name, rows) of `split` of `splits` (`where`: the config and source, for errors); `None` picks the validation
    split, the one of `VALIDATION_SPLITS` the dict holds."""
    if split is None:
        found = [name for name in VALIDATION_SPLITS if name in splits]
        if len(found) != 1:
            raise ValueError(
                f"split: {where} has splits {sorted(splits)}, expected exactly one validation split of "
                f"{VALIDATION_SPLITS}; name the split"
            )
        split = found[0]
    if split not in splits:
        raise ValueError(f"split: {where} has splits {sorted(splits)}, not {split!r}")
    return split, splits[split]


def load_named_split(source: str | os.PathLike, config: str, split: str | None = None) -> tuple[str, Dataset]:
    """(name, rows) of one split of one config of `source` (see `load_configs`); `None`: its validation split. Rows
    without images (the `qa` config's) come joined with those of their keyframe's `planning` row of that split."""
    where = f"{config!r} of {str(source)!r}"
    name, rows = pick_split(load_configs(source, [config])[config], split, where)
    if config in CONFIGS_WITH_CAMERAS or IMAGE_COLUMN in rows.column_names:
        return name, rows
    images_where = f"{IMAGES_CONFIG!r} of {str(source)!r}"
    _, keyframes = pick_split(load_configs(source, [IMAGES_CONFIG])[IMAGES_CONFIG], name, images_where)
    return name, join_keyframes(rows, keyframes, where=f"{where}, split {name!r}")


def load_split(source: str | os.PathLike, config: str, split: str | None = None) -> Dataset:
    """One split of one config of `source` (`load_named_split`: QA rows come with their keyframes' images)."""
    return load_named_split(source, config, split)[1]


__all__ = ["ARROW_DIR", "load_configs", "load_named_split", "load_split", "pick_split"]
