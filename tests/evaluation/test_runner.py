"""The runner's constant-velocity baseline on hand-made planning rows, and what the runner refuses."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features

from occvla_hf.class_labels import label_id
from occvla_hf.constants import EGO_STATUS_FEATURES, NUM_BOX_STEPS, NUM_WAYPOINTS, WAYPOINT_STEP_S
from occvla_hf.evaluation.runner import evaluate_constant_velocity, evaluate_qa
from occvla_hf.meta_action import META_ACTION_NAMES


def planning_rows() -> Dataset:
    """Three keyframes without other agents: (a) 2 m/s straight ahead, logged exactly at constant velocity; (b) an
    invalid velocity of 5 m/s (a scene start), logged 1 m to the left at every step; (c) no future step."""
    times_s = WAYPOINT_STEP_S * np.arange(1, NUM_WAYPOINTS + 1)
    exact = np.stack([2.0 * times_s, np.zeros(NUM_WAYPOINTS)], axis=1)
    left = np.tile([0.0, 1.0], (NUM_WAYPOINTS, 1))
    status = np.zeros((3, len(EGO_STATUS_FEATURES)), np.float32)
    status[:, 0] = [2.0, 5.0, 3.0]
    valid = np.ones((3, len(EGO_STATUS_FEATURES)), bool)
    valid[1] = False
    masks = np.ones((3, NUM_WAYPOINTS), bool)
    masks[2] = False
    return Dataset.from_dict(
        {
            "ego_status": status.tolist(),
            "ego_status_valid": valid.tolist(),
            "trajectory": [exact.tolist(), left.tolist(), exact.tolist()],
            "trajectory_mask": masks.tolist(),
            # (a) came at 2 m/s, 1 m per 0.5 s step; (b)'s past is invalid like its velocity; (c) has none to use
            "past_trajectory": [
                [[-4.0, 0.0], [-3.0, 0.0], [-2.0, 0.0], [-1.0, 0.0]],
                [[0.0, 0.0]] * 4,
                [[0.0, 0.0]] * 4,
            ],
            "past_trajectory_mask": [[True] * 4, [False] * 4, [False] * 4],
            "meta_action": ["keep, straight", "stop, straight", ""],
            "agent_boxes": [[[] for _ in range(NUM_BOX_STEPS)]] * 3,
            "agent_categories": [[[] for _ in range(NUM_BOX_STEPS)]] * 3,
            "agent_instances": [[[] for _ in range(NUM_BOX_STEPS)]] * 3,
        }
    )


def test_constant_velocity_is_scored_on_the_rows_with_a_future_and_stands_still_without_a_velocity() -> None:
    report = evaluate_constant_velocity(planning_rows())
    assert report["num_samples"] == 2  # (c) has no future step
    # (a) is exact, (b) stands still (its velocity is invalid) 1 m from its log: 0.5 m at every step, both protocols.
    for protocol in ("stp3", "uniad"):
        for horizon in ("1s", "2s", "3s", "avg"):
            assert report[protocol][f"l2_{horizon}_m"] == pytest.approx(0.5, abs=1e-6)
            assert report[protocol][f"collision_{horizon}_pct"] == 0.0


def test_the_history_baseline_keeps_the_last_past_steps_velocity() -> None:
    rows = planning_rows()  # the same plans from the history as from the ego status: (a) exact, (b) standing still
    assert evaluate_constant_velocity(rows, source="ego_history") == evaluate_constant_velocity(rows)
    moved = rows.map(lambda row: {"past_trajectory": (np.asarray(row["past_trajectory"]) * 2).tolist()})
    report = evaluate_constant_velocity(moved, source="ego_history")  # (a) now 4 m/s: k m ahead of its log at step k
    # ST-P3 at 1 s: (a) averages its first two steps, (1 + 2) / 2 m; (b) stays 1 m from its log
    assert report["stp3"]["l2_1s_m"] == pytest.approx(((1.0 + 2.0) / 2 + 1.0) / 2, abs=1e-6)
    with pytest.raises(ValueError, match=r"source: expected one of \('ego_status', 'ego_history'\), got 'history'"):
        evaluate_constant_velocity(rows, source="history")


def test_class_ids_of_a_built_dataset_give_the_same_report() -> None:
    rows = planning_rows()
    features = Features({**rows.features, "meta_action": ClassLabel(names=list(META_ACTION_NAMES))})
    ids = rows.map(lambda row: {"meta_action": label_id("meta_action", row["meta_action"])}, features=features)
    assert ids["meta_action"] == [10, 0, -1]
    report = evaluate_constant_velocity(ids)
    assert report == evaluate_constant_velocity(rows)
    assert sorted(report["by_meta_action"]) == ["keep, straight", "stop, straight"]


def test_qa_evaluation_refuses_rows_without_images_before_running_the_model() -> None:
    rows = Dataset.from_dict(
        {
            "sample_token": ["a"],
            "question": ["Is there a car?"],
            "answer": ["yes"],
            "template_type": [0],
            "num_hop": [0],
        }
    )
    with pytest.raises(ValueError, match=r"dataset: the rows hold no images .*data\.join_keyframes"):
        evaluate_qa(None, None, rows)  # the qa config stores none: join them with their keyframes' first
