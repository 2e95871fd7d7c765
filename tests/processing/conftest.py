"""Fixtures of the processing tests: one trained tokenizer, tiny image processors, small camera images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast, SiglipImageProcessorPil

from occvla_hf.processing import OccVLAProcessor, build_tokenizer

IMAGE_SIZE_PX = 16
IMAGE_SEQ_LENGTH = 3


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture
def make_processor(tokenizer: PreTrainedTokenizerFast) -> Callable[..., OccVLAProcessor]:
    """Processor factory: 16 x 16 px views, 3 image tokens per view; keyword arguments go to the processor."""

    def make(**kwargs) -> OccVLAProcessor:
        kwargs.setdefault("image_seq_length", IMAGE_SEQ_LENGTH)
        image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE_PX, "width": IMAGE_SIZE_PX})
        return OccVLAProcessor(image_processor=image_processor, tokenizer=tokenizer, **kwargs)

    return make


@pytest.fixture
def camera_images() -> Callable[[int, int], list[list[np.ndarray]]]:
    """`camera_images(batch, views)`: random (20, 24, 3) uint8 views, one list per sample."""
    rng = np.random.default_rng(0)

    def make(batch: int, views: int) -> list[list[np.ndarray]]:
        return [[rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(views)] for _ in range(batch)]

    return make
