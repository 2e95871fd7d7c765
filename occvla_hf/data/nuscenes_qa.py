"""nuScenes-QA questions: the official JSON files, validated and indexed by keyframe (sample token).

Official layout: `<qa_root>/NuScenes_{train,val}_questions.json`, each `{"info": ..., "questions": [entry, ...]}`
with entries `{"sample_token": str, "question": str, "answer": str (counts may be ints), "template_type": one of
QA_QUESTION_TYPES, "num_hop": 0 | 1, ...}`. Answers are kept as the official evaluation compares them, `str(answer)`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from occvla_hf.constants import QA_HOPS, QA_QUESTION_TYPES

QA_FILE_SPLITS: tuple[str, ...] = ("train", "val")
_REQUIRED_KEYS = ("sample_token", "question", "answer", "template_type", "num_hop")


@dataclass(frozen=True)
class Question:
    """One nuScenes-QA question about a keyframe."""

    question: str
    answer: str
    template_type: str
    num_hop: int


def qa_file(qa_root: str | os.PathLike, split: str) -> Path:
    """Path of the official question file of a nuScenes-QA split (`train` or `val`)."""
    return Path(qa_root) / f"NuScenes_{split}_questions.json"


def _parse_entry(entry: object, where: str) -> tuple[str, Question]:
    """(sample_token, Question) of one JSON entry; ValueError naming `where` (file and index) when malformed."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in entry]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    for key in ("sample_token", "question", "template_type"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise ValueError(f"{where}: {key}: expected a non-empty string, got {entry[key]!r}")
    answer = entry["answer"]
    if isinstance(answer, bool) or not isinstance(answer, str | int):
        raise ValueError(f"{where}: answer: expected a string or an integer, got {answer!r}")
    if entry["template_type"] not in QA_QUESTION_TYPES:
        raise ValueError(f"{where}: template_type: expected one of {QA_QUESTION_TYPES}, got {entry['template_type']!r}")
    num_hop = entry["num_hop"]
    if isinstance(num_hop, bool) or num_hop not in range(len(QA_HOPS)):
        raise ValueError(f"{where}: num_hop: expected an integer in [0, {len(QA_HOPS)}), got {num_hop!r}")
    return entry["sample_token"], Question(entry["question"], str(answer), entry["template_type"], int(num_hop))


def load_questions(path: str | os.PathLike) -> dict[str, list[Question]]:
    """Questions of one official file grouped by sample token, in file order.

    ValueError naming the file (and the entry index) for invalid JSON or non-UTF-8 text, a wrong top-level layout
    or a bad entry.
    """
    try:
        with open(path, encoding="utf-8") as file:
            content = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from error
    if not isinstance(content, dict) or not isinstance(content.get("questions"), list):
        raise ValueError(f'{path}: expected an object with a "questions" list')
    by_token: dict[str, list[Question]] = defaultdict(list)
    for index, entry in enumerate(content["questions"]):
        token, question = _parse_entry(entry, f"{path}: questions[{index}]")
        by_token[token].append(question)
    return dict(by_token)


def load_qa_root(qa_root: str | os.PathLike) -> dict[str, list[Question]]:
    """Questions of every official file present under `qa_root` (train then val), grouped by sample token.

    FileNotFoundError if the folder holds none of them.
    """
    paths = [qa_file(qa_root, split) for split in QA_FILE_SPLITS]
    present = [path for path in paths if path.is_file()]
    if not present:
        raise FileNotFoundError(f"qa_root: none of {[path.name for path in paths]} found in {str(qa_root)!r}")
    merged: dict[str, list[Question]] = defaultdict(list)
    for path in present:
        for token, questions in load_questions(path).items():
            merged[token].extend(questions)
    return dict(merged)
