"""The package tokenizer: deterministic training, special tokens, lossless text, save/load through AutoTokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from occvla_hf.constants import IMAGE_TOKEN, TRAJ_TOKEN
from occvla_hf.meta_action import all_meta_actions
from occvla_hf.processing.tokenization import SPECIAL_TOKENS, build_tokenizer

TEXTS = (
    "Plan the next 3 seconds of the ego vehicle: give its meta action.",
    "How many parked cars are to the front left of me?",
    "[(1.25,-0.50),(2.50,-1.00),(3.75,-1.50),(5.00,-2.00),(6.25,-2.50),(7.50,-3.00)]",
    "Ünïcode and emoji 🚗 still encode byte by byte\n",
)


def test_training_is_deterministic(tokenizer: PreTrainedTokenizerFast) -> None:
    assert build_tokenizer().backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_special_tokens_have_fixed_ids_and_named_attributes(tokenizer: PreTrainedTokenizerFast) -> None:
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id) == (
        0,
        1,
        2,
        3,
    )
    assert (tokenizer.image_token, tokenizer.image_token_id) == (IMAGE_TOKEN, 4)
    assert (tokenizer.traj_token, tokenizer.traj_token_id) == (TRAJ_TOKEN, 5)
    assert len(tokenizer) == 1024


def test_no_special_token_is_added_automatically(tokenizer: PreTrainedTokenizerFast) -> None:
    assert tokenizer("keep, straight").input_ids == tokenizer("keep, straight", add_special_tokens=False).input_ids


def test_placeholders_stay_single_tokens_inside_text(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer(f"{IMAGE_TOKEN}{IMAGE_TOKEN}a question{TRAJ_TOKEN}\n").input_ids
    assert ids[:2] == [tokenizer.image_token_id] * 2 and ids[-2] == tokenizer.traj_token_id


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_meta_actions_are_a_few_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    assert max(len(tokenizer(action.to_text()).input_ids) for action in all_meta_actions()) <= 6


def test_save_and_load_with_auto_tokenizer(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.image_token_id, loaded.traj_token_id, loaded.pad_token_id) == (4, 5, 0)
    for text in TEXTS:
        assert loaded(text).input_ids == tokenizer(text).input_ids


def test_too_small_vocabulary_raises_naming_vocab_size() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(vocab_size=100)
