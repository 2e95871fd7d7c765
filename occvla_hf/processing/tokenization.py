"""A small byte-level BPE tokenizer trained from scratch on the package's own text, for tests and small models.

Real checkpoints bring their own tokenizer (Gemma for PaliGemma); this one exists so that everything can run offline
with a real `PreTrainedTokenizerFast`: prompts, meta-actions, nuScenes-QA questions and answers, numbers and
trajectory text all tokenize into a handful of tokens, and any other text still encodes (byte-level, no unknowns).
Training is deterministic: the same arguments give the same vocabulary and merges.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..constants import IMAGE_TOKEN, NUSCENES_QA_ANSWERS, QA_OBJECTS, QA_RELATIONS, QA_STATUSES, TRAJ_TOKEN
from ..meta_action import all_meta_actions
from .prompts import DEFAULT_PLANNING_PROMPT, DEFAULT_QA_PROMPT

# Gemma's special-token strings and ids (pad 0, eos 1, bos 2, unk 3), then the two OccVLA placeholders.
PAD_TOKEN: str = "<pad>"
EOS_TOKEN: str = "<eos>"
BOS_TOKEN: str = "<bos>"
UNK_TOKEN: str = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN, TRAJ_TOKEN)

# nuScenes-QA question shapes, filled with the vocabulary of `constants` (objects, statuses, relations): training
# text only.
_QA_QUESTION_SHAPES: tuple[str, ...] = (
    "Are there any {status} {object}s?",
    "Is there a {object} to the {relation} of me?",
    "Are there any other things that are the same status as the {object}?",
    "How many {status} {object}s are there?",
    "What number of {object}s are to the {relation} of the {status} {object}?",
    "What is the {status} thing to the {relation} of me?",
    "What is the thing that is to the {relation} of the {object}?",
    "What status is the {object} to the {relation} of me?",
    "What is the status of the {object} that is to the {relation} of the {status} {object}?",
    "Is the status of the {object} the same as the {object}?",
    "Are there the same number of {object}s and {status} {object}s?",
    "Does the {object} to the {relation} of me have the same status as the {object}?",
)


def _corpus() -> Iterator[str]:
    """Training text, in a fixed order: prompts, meta-actions, QA questions and answers, numbers."""
    for meta_action in all_meta_actions():  # the planning prompt and its answers, weighted like the QA text below
        yield f"{DEFAULT_PLANNING_PROMPT}\n{meta_action.to_text()}"
        yield meta_action.to_text()
    for index, shape in enumerate(_QA_QUESTION_SHAPES):
        for offset in range(len(QA_OBJECTS)):
            question = shape.format(
                object=QA_OBJECTS[(index + offset) % len(QA_OBJECTS)],
                status=QA_STATUSES[(index + offset) % len(QA_STATUSES)],
                relation=QA_RELATIONS[(index + offset) % len(QA_RELATIONS)],
            )
            yield DEFAULT_QA_PROMPT.format(question=question)
    yield from NUSCENES_QA_ANSWERS
    for centimetres in range(-2000, 6001, 7):  # waypoint coordinates as trajectory text writes them
        yield f"({centimetres / 100:.2f},{-centimetres / 200:.2f})"
    yield from (str(n) for n in range(1000))


def build_tokenizer(vocab_size: int = 1024, extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Train the tokenizer on the package corpus (+ `extra_texts`); special tokens get ids 0..5 in `SPECIAL_TOKENS`.

    No special token is added automatically (`add_special_tokens` adds nothing): the processor writes bos and eos
    itself. The result has `image_token`/`image_token_id` and `traj_token`/`traj_token_id` attributes and round-trips
    through `save_pretrained`/`AutoTokenizer.from_pretrained`.
    """
    minimum = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < minimum:
        raise ValueError(f"vocab_size: expected >= {minimum} (special tokens + 256 bytes), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*_corpus(), *extra_texts], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        image_token=IMAGE_TOKEN,
        traj_token=TRAJ_TOKEN,
    )
