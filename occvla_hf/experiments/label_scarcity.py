"""The label-scarce training split: planning and QA labels of a fraction of the scenes, occupancy of every keyframe.

Auxiliary supervision should matter most when task labels are scarce. The labelled scenes are chosen by scene, not
by keyframe: neighbouring keyframes of a scene are 0.5 s apart and nearly the same situation, so 10 % of the
keyframes spread over every scene would still label nearly every situation, while 10 % of the scenes label 10 % of
them. The choice is a pure function of the set of scene names and a seed:

    key(scene) = sha256(f"{seed}/{scene}")      (hex digest)
    labelled   = the round(fraction * S) scenes (at least 1) of the S distinct names with the smallest keys

so it does not depend on row order, on the other configs, or on how the rows were built, and two runs with the same
seed label the same scenes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
from datasets import DatasetDict

LABEL_FRACTION: float = 0.1
LABEL_SEED: int = 0
LABELLED_CONFIGS: tuple[str, ...] = ("planning", "qa")


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


def label_scarce_configs(
    configs: Mapping[str, DatasetDict],
    split: str,
    *,
    fraction: float = LABEL_FRACTION,
    seed: int = LABEL_SEED,
) -> dict[str, DatasetDict]:
    """`configs` with the `split` rows of `planning` and `qa` kept for the labelled scenes of that split's planning
    rows only; every other split and config (`occupancy`: every keyframe) unchanged.

    Args:
        configs: dataset config name -> its splits (`occvla-hf data build` output, e.g. from `data.load.load_configs`).
        split: the training split to thin, e.g. `train`.
        fraction, seed: see `labelled_scenes`.
    """
    if "planning" not in configs or split not in configs["planning"]:
        raise ValueError(f"configs: expected a planning config with a {split!r} split, got {sorted(configs)}")
    keep = labelled_scenes(configs["planning"][split]["scene_name"], fraction, seed)
    result = dict(configs)
    for name in LABELLED_CONFIGS:
        if name in configs and split in configs[name]:
            rows = configs[name][split]
            kept = np.flatnonzero(np.isin(np.asarray(rows["scene_name"]), sorted(keep)))
            result[name] = DatasetDict({**configs[name], split: rows.select(kept)})
    return result


__all__ = ["LABEL_FRACTION", "LABEL_SEED", "label_scarce_configs", "labelled_scenes"]
