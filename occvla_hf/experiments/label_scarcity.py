"""The label-scarce training split: planning and QA labels of a fraction of the scenes, occupancy of every keyframe.

Auxiliary supervision should matter most when task labels are scarce. The labelled scenes are chosen by scene, not
by keyframe: neighbouring keyframes of a scene are 0.5 s apart and nearly the same situation, so 10 % of the
keyframes spread over every scene would still label nearly every situation, while 10 % of the scenes label 10 % of
them. The choice is a pure function of the set of scene names and a seed:

    key(scene) = sha256(f"{seed}/{scene}")      (hex digest)
    labelled   = the round(fraction * S) scenes (at least 1) of the S distinct names with the smallest keys

so it does not depend on row order, on the other configs, or on how the rows were built, and two runs with the same
seed label the same scenes.

The copy keeps every planning row, marked by the `labelled` column (`LABELLED_COLUMN`, True in the other splits):
the rows of the other scenes are the unlabelled keyframes, whose images, ego status and occupancy stay while their
task labels are blanked (`WITHHELD_LABELS`: no valid waypoint, no meta-action, no reasoning), so no consumer can
train or score on them by accident, and planning evaluation skips them as rows without a future. The joint recipe
trains them for occupancy only when it supervises occupancy, and leaves them out when it does not
(`training.joint.JointDataset`): `occ` sees occupancy on every keyframe, `no_occ` exactly the labelled rows, and both
the labelled rows equally often (the occupancy-only rows ride along in the labelled rows' batches). QA rows of the
other scenes are dropped (a QA row has no occupancy of its own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Value

from occvla_hf.class_labels import NO_LABEL, NO_LABEL_NAME
from occvla_hf.constants import LABELLED_COLUMN, NUM_WAYPOINTS

LABEL_FRACTION: float = 0.1
LABEL_SEED: int = 0
# Planning columns blanked in unlabelled rows, with the value they get (a scene's last keyframe has the same).
WITHHELD_LABELS: dict[str, Any] = {
    "trajectory": [[0.0, 0.0]] * NUM_WAYPOINTS,
    "trajectory_mask": [False] * NUM_WAYPOINTS,
    "meta_action": NO_LABEL_NAME,  # NO_LABEL where the column holds class ids
    "reasoning": "",
}


def _scene_key(seed: int, scene_name: str) -> str:
    return hashlib.sha256(f"{seed}/{scene_name}".encode()).hexdigest()


def labelled_scenes(scene_names: Iterable[str], fraction: float = LABEL_FRACTION, seed: int = LABEL_SEED) -> frozenset:
    """The scenes whose planning and QA labels are kept (see the module docstring), among the distinct
    `scene_names`."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a float in (0, 1], got {fraction}")
    names = sorted(set(scene_names))
    if not names:
        raise ValueError("scene_names: expected at least one scene")
    count = max(1, round(fraction * len(names)))
    return frozenset(sorted(names, key=lambda name: _scene_key(seed, name))[:count])


def _in_scenes(rows: Dataset, scenes: frozenset) -> np.ndarray:
    return np.isin(np.asarray(rows["scene_name"]), sorted(scenes))


def _marked(rows: Dataset, labelled: np.ndarray) -> Dataset:
    """`rows` with the `labelled` column, and the `WITHHELD_LABELS` of its unlabelled rows blanked."""
    if LABELLED_COLUMN in rows.column_names:
        raise ValueError(f"configs: the planning rows already have a {LABELLED_COLUMN!r} column (a label-scarce copy)")
    marked = rows.add_column(LABELLED_COLUMN, labelled.tolist(), feature=Value("bool"))
    if labelled.all():
        return marked
    columns = [LABELLED_COLUMN, *WITHHELD_LABELS]
    withheld = dict(WITHHELD_LABELS)
    if isinstance(rows.features.get("meta_action"), ClassLabel):  # a built dataset stores the meta-action's class id
        withheld["meta_action"] = NO_LABEL

    def blank(keep: list[bool], *values: list[Any]) -> dict[str, list[Any]]:
        return {
            name: [value if kept else withheld[name] for value, kept in zip(column, keep)]
            for name, column in zip(WITHHELD_LABELS, values)
        }

    return marked.map(blank, input_columns=columns, batched=True, features=marked.features, desc="withhold labels")


def label_scarce_configs(
    configs: Mapping[str, DatasetDict],
    split: str,
    *,
    fraction: float = LABEL_FRACTION,
    seed: int = LABEL_SEED,
) -> dict[str, DatasetDict]:
    """`configs` with the labels of the `split` rows kept for the labelled scenes of that split's planning rows
    only: every planning row of every split gets the `labelled` column (False in the other scenes of `split`, whose
    `WITHHELD_LABELS` are blanked), the `qa` rows of `split` are those of the labelled scenes; every other config and
    split unchanged (`occupancy`: every keyframe).

    Args:
        configs: dataset config name -> its splits (`occvla-hf data build` output, e.g. from `data.load.load_configs`).
        split: the training split to thin, e.g. `train`.
        fraction, seed: see `labelled_scenes`.
    """
    if "planning" not in configs or split not in configs["planning"]:
        raise ValueError(f"configs: expected a planning config with a {split!r} split, got {sorted(configs)}")
    keep = labelled_scenes(configs["planning"][split]["scene_name"], fraction, seed)
    result = dict(configs)
    result["planning"] = DatasetDict(
        {
            name: _marked(rows, _in_scenes(rows, keep) if name == split else np.ones(len(rows), dtype=bool))
            for name, rows in configs["planning"].items()
        }
    )
    if "qa" in configs and split in configs["qa"]:
        rows = configs["qa"][split]
        result["qa"] = DatasetDict({**configs["qa"], split: rows.select(np.flatnonzero(_in_scenes(rows, keep)))})
    return result


__all__ = ["LABEL_FRACTION", "LABEL_SEED", "WITHHELD_LABELS", "label_scarce_configs", "labelled_scenes"]
