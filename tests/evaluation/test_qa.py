"""nuScenes-QA normalisation and accuracy on a small hand-written set."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.class_labels import label_id
from occvla_hf.constants import NUSCENES_QA_ANSWERS
from occvla_hf.evaluation.qa import QAAccuracyAccumulator, format_qa_table, normalize_answer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes.", "yes"),
        ("yes, there is a car", "yes"),
        ("No, there isn't.", "no"),
        ("Three", "3"),
        ("ten", "10"),
        ("none", "0"),
        (3, "3"),
        ("  7 ", "7"),
        ("The Traffic-Cone.", "traffic cone"),
        ("construction_vehicle", "construction vehicle"),
        ("Without a rider", "without rider"),
        ("NOT standing!", "not standing"),
        ("an  adult   pedestrian", "adult pedestrian"),
        ("nothing", "nothing"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalisation_keeps_every_official_answer_unchanged():
    assert len(NUSCENES_QA_ANSWERS) == 30
    assert [normalize_answer(answer) for answer in NUSCENES_QA_ANSWERS] == list(NUSCENES_QA_ANSWERS)


# (prediction, reference, type, hop, correct?)
QUESTIONS = [
    ("Yes.", "yes", "exist", 0, True),
    ("no", "yes", "exist", 0, False),
    ("No, there is not.", "no", "exist", 1, True),
    ("two", "2", "count", 0, True),
    ("3", "4", "count", 1, False),
    ("4", 4, "count", 1, True),
    ("The car", "car", "object", 0, True),
    ("truck", "bus", "object", 1, False),
    ("Moving.", "moving", "status", 1, True),
    ("parked", "stopped", "status", 1, False),
    ("yes", "yes", "comparison", 1, True),
]


def evaluate(questions: list[tuple]) -> dict:
    accumulator = QAAccuracyAccumulator()
    predictions, answers, types, hops, _ = zip(*questions)
    accumulator.update(predictions, answers, types, hops)
    return accumulator.compute()


def test_accuracy_per_type_hop_and_overall():
    report = evaluate(QUESTIONS)
    assert report["num_questions"] == 11
    assert report["overall"] == {"accuracy_pct": pytest.approx(700 / 11), "correct": 7, "total": 11}
    assert report["by_hop"]["H0"] == {"accuracy_pct": 75.0, "correct": 3, "total": 4}
    assert report["by_hop"]["H1"] == {"accuracy_pct": pytest.approx(400 / 7), "correct": 4, "total": 7}
    exist = report["by_type"]["exist"]
    assert (exist["H0"]["accuracy_pct"], exist["H1"]["accuracy_pct"], exist["all"]["accuracy_pct"]) == (
        50.0,
        100.0,
        pytest.approx(200 / 3),
    )
    count = report["by_type"]["count"]
    assert (count["H0"]["accuracy_pct"], count["H1"]["accuracy_pct"], count["all"]["total"]) == (100.0, 50.0, 3)
    assert report["by_type"]["status"]["H0"] == {"accuracy_pct": None, "correct": 0, "total": 0}
    assert report["by_type"]["comparison"]["all"]["accuracy_pct"] == 100.0


def test_batches_accumulate_then_divide():
    accumulator = QAAccuracyAccumulator()
    for batch in (QUESTIONS[:2], QUESTIONS[2:9], QUESTIONS[9:]):  # uneven batches
        predictions, answers, types, hops, _ = zip(*batch)
        accumulator.update(predictions, answers, types, hops)
    assert accumulator.compute() == evaluate(QUESTIONS)


def test_class_ids_of_a_built_dataset_count_like_their_names():
    predictions, answers, types, hops, _ = zip(*QUESTIONS)
    ids = [label_id("template_type", name) for name in types]
    accumulator = QAAccuracyAccumulator()
    accumulator.update(predictions, answers, ids, list(np.asarray(hops)))  # the numpy format's hop ids too
    assert accumulator.compute() == evaluate(QUESTIONS)
    with pytest.raises(ValueError, match="template_type: class id 5 outside"):
        QAAccuracyAccumulator().update(["yes"], ["yes"], [5], [0])


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((["yes"], ["yes"], ["existence"], [0]), "template_type"),
        ((["yes"], ["yes"], ["exist"], [2]), "num_hop"),
        ((["yes"], ["yes"], ["exist"], [True]), "num_hop"),
        ((["yes", "no"], ["yes"], ["exist"], [0]), "predictions/answers"),
    ],
)
def test_bad_inputs_name_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        QAAccuracyAccumulator().update(*args)


def test_table_has_paper_layout():
    lines = format_qa_table({"OccVLA": evaluate(QUESTIONS)}).splitlines()
    assert lines[0].split("|")[1].strip() == "Exist"
    assert lines[1].split()[-1] == "Acc."
    row = lines[3].split("|")
    assert row[1].split() == ["50.0", "100.0", "66.7"]  # exist H0, H1, All
    assert row[4].split() == ["-", "50.0", "50.0"]  # status: no H0 question
    assert row[-1].strip() == "63.6"
