"""What the dataset card tells a user without the package: how QA rows get their images, what the class-label
columns hold, and how to decode the occupancy blobs (the card's own snippets are run here)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import DatasetDict
from huggingface_hub import DatasetCard

from occvla_hf.constants import OCC_CLASS_NAMES
from occvla_hf.data.card import CARD_OCCUPANCY_KEY, dataset_card
from occvla_hf.data.occ3d import decode_occupancy, occupancy_storage

from .conftest import VERSION

SPLIT = "mini_val"


def _section(card: str, title: str) -> str:
    """The text of the card section `title` (up to the next heading)."""
    start = card.index(f"{title}\n")
    following = re.search(r"^#{1,3} ", card[start + len(title) :], re.MULTILINE)
    return card[start : start + len(title) + (following.start() if following else len(card))]


def _python(section: str) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return code


def test_the_card_says_how_qa_rows_get_their_images_and_its_snippet_gets_them(saved_dir: Path, built_datasets):
    card = (saved_dir / "README.md").read_text()
    assert "QA rows take theirs from the `planning` row of their keyframe" in card
    assert 'qa = join_keyframes(load_dataset(PATH, "qa", split=SPLIT), planning[SPLIT])' in card
    section = _section(card, "### Images of the QA rows")
    assert "stored once, in its `planning` row" in section and "sample_token" in section
    planning, qa = built_datasets["planning"], built_datasets["qa"]
    namespace = {"planning": planning, "qa": qa, "SPLIT": SPLIT}
    exec(_python(section), namespace)  # the snippet for users without the package
    keyframe = planning[SPLIT][planning[SPLIT]["sample_token"].index(qa[SPLIT][0]["sample_token"])]
    assert len(namespace["images"]) == 6
    for got, expected in zip(namespace["images"], keyframe["images"], strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_the_card_names_the_class_label_columns(saved_dir: Path) -> None:
    section = _section((saved_dir / "README.md").read_text(), "### Class labels")
    assert "`meta_action`, `agent_categories`, `template_type`, `num_hop` are `datasets.ClassLabel`" in section
    assert "int2str" in section and "A `meta_action` of -1 marks a keyframe without future" in section


def test_the_card_yaml_and_body_say_how_to_decode_the_occupancy(saved_dir: Path, built_datasets) -> None:
    card = (saved_dir / "README.md").read_text()
    recorded = DatasetCard(card).data.to_dict()[CARD_OCCUPANCY_KEY]
    assert recorded == {"columns": occupancy_storage(), "class_names": list(OCC_CLASS_NAMES)}
    assert recorded["columns"]["semantics"] == {
        "codec": "zstd",
        "decompressed_bytes": 200 * 200 * 16,
        "dtype": "uint8",
        "shape": [200, 200, 16],
        "order": "C",
        "values": "Occ3D class ids 0..17 (17 = free)",
    }
    occupancy = built_datasets["occupancy"]
    expected = decode_occupancy(occupancy[SPLIT][:1])
    # A decoder written from the YAML alone gives the arrays.
    zstd = pa.Codec("zstd")
    row = occupancy[SPLIT][0]
    for name, spec in recorded["columns"].items():
        raw = np.frombuffer(
            zstd.decompress(row[name], decompressed_size=spec["decompressed_bytes"], asbytes=True), np.uint8
        )
        values = np.unpackbits(raw, bitorder="big").astype(bool) if "bit_packing" in spec else raw
        np.testing.assert_array_equal(values.reshape(spec["shape"]), expected[name][0])
    # So does the body's snippet.
    section = _section(card, "### Decoding the occupancy")
    assert "not `.npy` files" in section and "np.packbits(mask, axis=None" in section and "17 free" in section
    namespace = {"occupancy": occupancy, "SPLIT": SPLIT}
    exec(_python(section), namespace)
    assert namespace["semantics"].dtype == np.uint8 and namespace["mask_camera"].dtype == bool
    np.testing.assert_array_equal(namespace["semantics"], expected["semantics"][0])
    np.testing.assert_array_equal(namespace["mask_camera"], expected["mask_camera"][0])


def test_a_card_without_qa_or_occupancy_has_neither_section(built_datasets) -> None:
    card = dataset_card({"planning": DatasetDict(built_datasets["planning"])}, version=VERSION, image_mode="bytes")
    assert "### Class labels" in card and "`meta_action`, `agent_categories` are" in card
    assert "### Images of the QA rows" not in card and "### Decoding the occupancy" not in card
    assert CARD_OCCUPANCY_KEY not in card
