"""The class-label columns: names from the constants, and the codec every reader uses (ids or names)."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.class_labels import CLASS_LABEL_NAMES, NO_LABEL, label_id, label_name, label_names
from occvla_hf.constants import NUSCENES_CATEGORIES, NUSCENES_CATEGORY_NAMES, QA_HOPS, QA_QUESTION_TYPES
from occvla_hf.meta_action import META_ACTION_NAMES, all_meta_actions


def test_the_names_are_the_package_constants() -> None:
    assert CLASS_LABEL_NAMES == {
        "meta_action": tuple(action.to_text() for action in all_meta_actions()),
        "agent_categories": tuple(name for name, _, _ in NUSCENES_CATEGORIES),
        "template_type": QA_QUESTION_TYPES,
        "num_hop": QA_HOPS,
    }
    assert CLASS_LABEL_NAMES["meta_action"] is META_ACTION_NAMES and len(META_ACTION_NAMES) == 20
    assert CLASS_LABEL_NAMES["agent_categories"] is NUSCENES_CATEGORY_NAMES and len(NUSCENES_CATEGORY_NAMES) == 23
    for names in CLASS_LABEL_NAMES.values():
        assert len(set(names)) == len(names) and "" not in names


@pytest.mark.parametrize("column", sorted(CLASS_LABEL_NAMES))
def test_ids_and_names_round_trip(column: str) -> None:
    names = CLASS_LABEL_NAMES[column]
    assert [label_id(column, name) for name in names] == list(range(len(names)))
    assert label_names(column, range(len(names))) == list(names)
    assert label_names(column, np.arange(len(names))) == list(names)  # the numpy format's ids
    assert label_names(column, names) == list(names)  # names (hand-made rows, older builds) pass through


def test_hand_checked_values() -> None:
    assert label_name("meta_action", 0) == "stop, straight" and label_name("meta_action", 6) == "decelerate, left turn"
    assert label_name("agent_categories", 8) == "vehicle.car" and label_id("agent_categories", "vehicle.truck") == 13
    assert label_name("template_type", 4) == "comparison" and label_name("num_hop", 1) == "H1"


def test_a_missing_meta_action_is_the_no_label_id_and_the_empty_name() -> None:
    assert NO_LABEL == -1
    assert label_id("meta_action", "") == NO_LABEL and label_name("meta_action", np.int64(-1)) == ""


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: label_name("template_type", -1), ValueError, r"template_type: class id -1 outside \[0, 5\)"),
        (lambda: label_name("meta_action", 20), ValueError, r"meta_action: class id 20 outside \[-1, 20\)"),
        (lambda: label_name("agent_categories", 2.0), TypeError, "agent_categories: expected a class id"),
        (lambda: label_name("num_hop", True), TypeError, "num_hop: expected a class id"),
        (lambda: label_id("template_type", ""), ValueError, "template_type: '' is not one of its class names"),
        (lambda: label_id("agent_categories", "car"), ValueError, "agent_categories: 'car' is not one of"),
        (lambda: label_name("answer", 0), ValueError, "column: expected one of the class-label columns"),
    ],
)
def test_bad_values_raise_naming_the_column(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()
