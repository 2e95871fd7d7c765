"""Bad processor settings and inputs raise an error of the expected type that names the field."""

from __future__ import annotations

import json

import pytest

from occvla_hf.constants import EGO_STATUS_FEATURES, IMAGE_TOKEN, TRAJ_TOKEN
from occvla_hf.processing import OccVLAProcessor

NAN = float("nan")
INF = float("inf")
FEATURES = len(EGO_STATUS_FEATURES)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(ego_status_mean=[NAN] + [0.0] * (FEATURES - 1)), "ego_status_mean"),
        (dict(ego_status_mean=[INF] + [0.0] * (FEATURES - 1)), "ego_status_mean"),
        (dict(ego_status_std=[NAN] + [1.0] * (FEATURES - 1)), "ego_status_std"),
        (dict(ego_status_std=[INF] + [1.0] * (FEATURES - 1)), "ego_status_std"),
        (dict(ego_status_std=[0.0] + [1.0] * (FEATURES - 1)), "ego_status_std"),
    ],
    ids=["mean-nan", "mean-inf", "std-nan", "std-inf", "std-zero"],
)
def test_ego_status_statistics_must_be_finite(make_processor, overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_processor(**overrides)


@pytest.mark.parametrize("field", ["ego_status_mean", "ego_status_std"])
def test_ego_status_statistics_from_processor_config_must_be_finite(make_processor, tmp_path, field: str) -> None:
    make_processor().save_pretrained(tmp_path)
    path = tmp_path / "processor_config.json"
    config = json.loads(path.read_text())
    config[field] = [NAN] * FEATURES
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=field):
        OccVLAProcessor.from_pretrained(tmp_path)


def special_tokens(tokenizer) -> list[str]:
    return [IMAGE_TOKEN, TRAJ_TOKEN, tokenizer.bos_token, tokenizer.eos_token]


@pytest.mark.parametrize("token_index", range(4), ids=["image", "traj", "bos", "eos"])
@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        (lambda token: dict(question=[f"Is it {token} clear?", "Fine?"], answer=["yes", "no"]), r"question\[0\]"),
        (lambda token: dict(question=["Fine?", "Clear?"], answer=["yes", f"no {token}"]), r"answer\[1\]"),
        (lambda token: dict(task="planning", answer=[f"go {token} straight", "stop"]), r"answer\[0\]"),
        (lambda token: dict(text=["ok", f"say {token}"]), r"text\[1\]"),
    ],
    ids=["qa-question", "qa-answer", "planning-answer", "text"],
)
def test_special_tokens_in_free_text_are_rejected(
    make_processor, camera_images, tokenizer, inputs, field: str, token_index: int
) -> None:
    token = special_tokens(tokenizer)[token_index]
    with pytest.raises(ValueError, match=field + r": must not contain the special token"):
        make_processor()(images=camera_images(2, 6), **inputs(token))


def test_special_tokens_in_rows_are_rejected(make_processor, camera_images) -> None:
    rows = [
        {"images": views, "question": question, "answer": "yes"}
        for views, question in zip(camera_images(2, 6), ["Clear?", f"Where is {TRAJ_TOKEN}?"])
    ]
    with pytest.raises(ValueError, match=r"question\[1\]"):
        make_processor().from_rows(rows, task="qa", training=True)


def test_non_string_question_is_rejected(make_processor, camera_images) -> None:
    with pytest.raises(TypeError, match="question: expected a str"):
        make_processor()(images=camera_images(2, 6), question=[3, "Fine?"])
