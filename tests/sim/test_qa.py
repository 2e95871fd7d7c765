"""nuScenes-QA question templates on a hand-checked scene."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.constants import NUSCENES_QA_ANSWERS, QA_OBJECTS, QA_QUESTION_TYPES, QA_RELATIONS, QA_STATUSES
from occvla_hf.sim.categories import QA_CATEGORY_WORDS, QA_STATUS_WORDS
from occvla_hf.sim.qa import (
    STATUSES_BY_CATEGORY,
    QAObject,
    Selector,
    comparison_question,
    comparison_related_question,
    count_question,
    count_related_question,
    exist_question,
    exist_related_question,
    generate_questions,
    object_question,
    object_related_question,
    relation,
    status_question,
    status_related_question,
)

# The official nuScenes-QA answer vocabulary (30 answers).
ANSWERS = set(NUSCENES_QA_ANSWERS)

# Ego frame: x forward, y left.
MOVING_CAR = QAObject("car", "moving", 10.0, 0.0)
PARKED_CAR = QAObject("car", "parked", 5.0, 8.0)
PEDESTRIAN = QAObject("pedestrian", "standing", -6.0, -3.0)
TRUCK = QAObject("truck", "stopped", 20.0, -4.0)
CONE = QAObject("traffic cone", None, 8.0, -5.0)
SCENE = [MOVING_CAR, PARKED_CAR, PEDESTRIAN, TRUCK, CONE]


def test_sim_words_are_the_nuscenes_qa_vocabulary():
    assert set(STATUSES_BY_CATEGORY) == set(QA_CATEGORY_WORDS.values()) == set(QA_OBJECTS)
    assert {status for statuses in STATUSES_BY_CATEGORY.values() for status in statuses} == set(QA_STATUSES)
    assert set(QA_STATUS_WORDS.values()) == set(QA_STATUSES)
    assert {relation((0.0, 0.0), (np.cos(a), np.sin(a))) for a in np.linspace(-np.pi, np.pi, 73)} == set(QA_RELATIONS)


def test_relation_bins_follow_nuscenes_qa():
    origin = (0.0, 0.0)
    assert relation(origin, (10.0, 0.0)) == "front"
    assert relation(origin, (10.0, 5.0)) == "front"  # 26.6 deg
    assert relation(origin, (1.0, 5.0)) == "front left"
    assert relation(origin, (-1.0, 5.0)) == "back left"
    assert relation(origin, (-10.0, 1.0)) == "back"
    assert relation(origin, (-1.0, -5.0)) == "back right"
    assert relation(origin, (1.0, -5.0)) == "front right"
    assert relation((10.0, 0.0), (-6.0, -3.0)) == "back"  # the pedestrian seen from the moving car: 190.6 deg


def test_hand_checked_zero_hop_answers():
    assert exist_question(SCENE, Selector("car", "parked")).answer == "yes"
    assert exist_question(SCENE, Selector("bus")).answer == "no"
    assert exist_question(SCENE, Selector("bicycle", "with rider")).question == "Are there any bicycles with rider?"
    assert count_question(SCENE, Selector("car")).answer == "2"
    assert count_question(SCENE, Selector(None, "moving")).question == "How many moving things are there?"
    assert object_question(SCENE, "stopped").answer == "truck"
    assert object_question(SCENE, "moving").answer == "car"
    assert status_question(SCENE, "truck").answer == "stopped"
    assert status_question(SCENE, "car") is None  # two cars: ambiguous
    assert status_question(SCENE, "traffic cone") is None  # no status
    same = comparison_question(SCENE, Selector("car", "moving"), Selector("truck"))
    assert same.answer == "no" and same.template_type == "comparison" and same.num_hop == 0


def test_hand_checked_one_hop_answers():
    moving_car = Selector("car", "moving")
    assert exist_related_question(SCENE, Selector("pedestrian"), "back", moving_car).answer == "yes"
    assert exist_related_question(SCENE, Selector("pedestrian"), "back right", moving_car).answer == "no"
    # From the cone at (8, -5): moving car at 68 deg (front left), parked car at 103 deg (back left), truck at 5 deg.
    assert count_related_question(SCENE, Selector("car"), "front left", Selector("traffic cone")).answer == "1"
    assert object_related_question(SCENE, Selector(), "front", Selector("traffic cone")).answer == "truck"
    assert status_related_question(SCENE, "car", "back left", Selector("traffic cone")).answer == "parked"
    # Seen from the ego car: the parked car is front left, the truck front.
    assert count_related_question(SCENE, Selector("car"), "front left", None).answer == "1"
    assert "of the ego car" in count_related_question(SCENE, Selector("car"), "front", None).question
    compare = comparison_related_question(SCENE, "car", "front left", Selector("traffic cone"), Selector("truck"))
    assert compare.answer == "no" and compare.num_hop == 1
    assert exist_related_question(SCENE, Selector("truck"), "front", Selector("car")) is None  # ambiguous reference


def test_generated_questions_are_distinct_valid_and_true():
    questions = generate_questions(SCENE, np.random.default_rng(0), 40)
    assert len(questions) >= 25
    assert len({q.question for q in questions}) == len(questions)
    assert {q.template_type for q in questions} == set(QA_QUESTION_TYPES)
    assert {q.num_hop for q in questions} == {0, 1}
    for q in questions:
        assert q.answer in ANSWERS
        if q.question == "How many cars are there?":
            assert q.answer == "2"
        if q.question.startswith("What is the status of the truck"):
            assert q.answer == "stopped"


def test_counts_above_ten_are_not_asked():
    crowd = [QAObject("pedestrian", "moving", float(i), 1.0) for i in range(12)]
    assert count_question(crowd, Selector("pedestrian")) is None
    assert count_question(crowd[:10], Selector("pedestrian")).answer == "10"


def test_empty_scene_still_gets_existence_questions():
    questions = generate_questions([], np.random.default_rng(1), 5)
    assert questions and all(q.answer in ("no", "0") for q in questions)


@pytest.mark.parametrize(
    "selector,phrase",
    [
        (Selector("bicycle", "with rider"), "bicycles with rider"),
        (Selector("car", "parked"), "parked cars"),
        (Selector("pedestrian", "not standing"), "pedestrians that are not standing"),
        (Selector("bus"), "buses"),
        (Selector(None, "moving"), "moving things"),
    ],
)
def test_plural_phrases(selector, phrase):
    assert selector.phrase(plural=True) == phrase
