"""nuScenes-QA files: parsing the official layout and naming the offending entry of a malformed file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from occvla_hf.data.nuscenes_qa import Question, load_qa_root, load_questions, qa_file

_ENTRY = {"sample_token": "t1", "question": "Are there cars?", "answer": "yes", "template_type": "exist", "num_hop": 0}


def _write(path: Path, questions: list) -> Path:
    path.write_text(json.dumps({"info": {"version": "1.0"}, "questions": questions}))
    return path


def test_load_questions_groups_by_token_in_file_order_and_stringifies_int_answers(tmp_path: Path):
    count = {**_ENTRY, "question": "How many cars?", "answer": 2, "template_type": "count", "num_hop": 1}
    other = {**_ENTRY, "sample_token": "t2"}
    questions = load_questions(_write(tmp_path / "q.json", [_ENTRY, other, count]))
    assert questions == {
        "t1": [Question("Are there cars?", "yes", "exist", 0), Question("How many cars?", "2", "count", 1)],
        "t2": [Question("Are there cars?", "yes", "exist", 0)],
    }


def test_load_qa_root_merges_train_and_val_files(tmp_path: Path):
    _write(qa_file(tmp_path, "train"), [_ENTRY])
    _write(qa_file(tmp_path, "val"), [{**_ENTRY, "sample_token": "t9"}])
    assert sorted(load_qa_root(tmp_path)) == ["t1", "t9"]


def test_load_qa_root_without_official_files_raises(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="NuScenes_train_questions.json"):
        load_qa_root(tmp_path)


def test_invalid_json_names_the_file(tmp_path: Path):
    path = tmp_path / "q.json"
    path.write_text('{"questions": [')
    with pytest.raises(ValueError, match="q.json: not valid JSON"):
        load_questions(path)


def test_wrong_top_level_layout_is_rejected(tmp_path: Path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([_ENTRY]))
    with pytest.raises(ValueError, match='expected an object with a "questions" list'):
        load_questions(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({k: v for k, v in _ENTRY.items() if k != "answer"}, r"questions\[1\]: missing keys \['answer'\]"),
        ({**_ENTRY, "template_type": "colour"}, r"questions\[1\]: template_type: expected one of"),
        ({**_ENTRY, "num_hop": 2}, r"questions\[1\]: num_hop: expected an integer"),
        ({**_ENTRY, "answer": None}, r"questions\[1\]: answer: expected a string or an integer"),
        ({**_ENTRY, "sample_token": ""}, r"questions\[1\]: sample_token: expected a non-empty string"),
        ("not an object", r"questions\[1\]: expected an object"),
    ],
)
def test_malformed_entry_names_file_and_index(tmp_path: Path, entry: object, message: str):
    with pytest.raises(ValueError, match=message):
        load_questions(_write(tmp_path / "q.json", [_ENTRY, entry]))


@pytest.mark.parametrize(
    "content",
    [b'{"questions": [{"question": "\xff\xfe"}]}', "{}".encode("utf-16")],
    ids=["latin1-byte", "utf16"],
)
def test_non_utf8_file_names_the_file(tmp_path: Path, content: bytes):
    path = tmp_path / "q.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not UTF-8 text") as error:
        load_questions(path)
    assert str(path) in str(error.value)
