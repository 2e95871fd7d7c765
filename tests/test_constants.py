"""Shared literals agree with the modules that key tables by them."""

from __future__ import annotations

from pathlib import Path

import tomllib

from occvla_hf.constants import (
    CAMERA_NAMES,
    CAMERA_ROWS,
    DATA_SOURCE_LICENSES,
    DATA_SOURCES,
    NUSCENES_QA_ANSWERS,
    PLANNING_PROTOCOL_NAMES,
    PROJECT_LICENSE,
    QA_MAX_COUNT,
    QA_OBJECTS,
    QA_STATUSES,
)
from occvla_hf.evaluation.planning import PROTOCOLS


def test_camera_rows_hold_each_camera_once() -> None:
    assert sorted(name for row in CAMERA_ROWS for name in row) == sorted(CAMERA_NAMES)
    assert CAMERA_ROWS[0][1] == CAMERA_NAMES[0] == "CAM_FRONT"


def test_protocol_names_cover_the_protocols_in_order() -> None:
    assert tuple(PLANNING_PROTOCOL_NAMES) == PROTOCOLS


def test_qa_answers_are_counts_yes_no_objects_and_statuses() -> None:
    assert len(NUSCENES_QA_ANSWERS) == len(set(NUSCENES_QA_ANSWERS)) == 30
    assert set(NUSCENES_QA_ANSWERS) == {
        *(str(n) for n in range(QA_MAX_COUNT + 1)),
        "yes",
        "no",
        *QA_OBJECTS,
        *QA_STATUSES,
    }
    assert "not standing" in QA_STATUSES


def test_project_licence_is_the_one_pyproject_states() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["license"]["text"].lower() == PROJECT_LICENSE
    assert DATA_SOURCE_LICENSES["sim"] == PROJECT_LICENSE and set(DATA_SOURCE_LICENSES) == set(DATA_SOURCES)
