"""The class-label columns of the built datasets: the names of each (id = index in its tuple) and their one codec.

A built dataset stores `meta_action`, `agent_categories` (planning), `template_type` and `num_hop` (qa) as
`datasets.ClassLabel` integers (`data.schema` makes the features from `CLASS_LABEL_NAMES`), so that the Hub shows the
names and `dataset.features[column].int2str` decodes them. `NO_LABEL` (-1, the ClassLabel convention for a missing
label) is the `meta_action` of a keyframe without future ("" as a name). `num_hop` ids are the hop counts themselves
(0 = H0, 1 = H1).

Readers that compare these columns to names go through `label_name` / `label_names`, which take either form: the ids
of a built dataset, or the names of rows made by hand or by builds from before the class labels.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import numpy as np

from .constants import NUSCENES_CATEGORY_NAMES, QA_HOPS, QA_QUESTION_TYPES
from .meta_action import META_ACTION_NAMES

# column -> its class names; `agent_categories` holds one class label per box (7 lists of them).
CLASS_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "meta_action": META_ACTION_NAMES,
    "agent_categories": NUSCENES_CATEGORY_NAMES,
    "template_type": QA_QUESTION_TYPES,
    "num_hop": QA_HOPS,
}
# The id of a missing label and its name, allowed in the columns of `OPTIONAL_LABELS` only (a keyframe without future
# has no meta-action).
NO_LABEL: int = -1
NO_LABEL_NAME: str = ""
OPTIONAL_LABELS: frozenset[str] = frozenset({"meta_action"})


def _names(column: str) -> tuple[str, ...]:
    if column not in CLASS_LABEL_NAMES:
        raise ValueError(f"column: expected one of the class-label columns {sorted(CLASS_LABEL_NAMES)}, got {column!r}")
    return CLASS_LABEL_NAMES[column]


def is_class_id(value: object) -> bool:
    """Whether `value` is a class id: an integer of any of the dataset formats (int, numpy or 0-d torch integer),
    not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def label_name(column: str, value: int | str) -> str:
    """The name of one value of `column`: an id (`is_class_id`; `NO_LABEL` -> "" where the label is optional) or a
    name, returned as is."""
    names = _names(column)
    if isinstance(value, str):
        return str(value)
    if not is_class_id(value):
        raise TypeError(f"{column}: expected a class id (int) or a name (str), got {type(value).__name__}")
    index = operator.index(value)
    if index == NO_LABEL and column in OPTIONAL_LABELS:
        return NO_LABEL_NAME
    if not 0 <= index < len(names):
        lowest = NO_LABEL if column in OPTIONAL_LABELS else 0
        raise ValueError(f"{column}: class id {index} outside [{lowest}, {len(names)})")
    return names[index]


def label_names(column: str, values: Iterable[int | str]) -> list[str]:
    """`label_name` of each value (a list, a numpy array or a dataset column)."""
    return [label_name(column, value) for value in values]


def label_id(column: str, name: str) -> int:
    """The id of a name of `column` ("" -> `NO_LABEL` where the label is optional); ValueError naming the column and
    its names otherwise."""
    names = _names(column)
    if name == NO_LABEL_NAME and column in OPTIONAL_LABELS:
        return NO_LABEL
    if name not in names:
        raise ValueError(f"{column}: {name!r} is not one of its class names {list(names)}")
    return names.index(name)


__all__ = [
    "CLASS_LABEL_NAMES",
    "NO_LABEL",
    "NO_LABEL_NAME",
    "OPTIONAL_LABELS",
    "is_class_id",
    "label_id",
    "label_name",
    "label_names",
]
