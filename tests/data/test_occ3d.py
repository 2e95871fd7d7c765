"""Occ3D labels: reading with validation, and the exact round trip of the compact storage codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from occvla_hf.constants import OCC_GRID_SHAPE
from occvla_hf.data.occ3d import (
    decode_mask,
    decode_occupancy,
    decode_semantics,
    encode_mask,
    encode_occupancy,
    encode_semantics,
    occupancy_path,
    read_occupancy,
)


def _labels(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "semantics": rng.integers(0, 18, OCC_GRID_SHAPE).astype(np.uint8),
        "mask_camera": rng.random(OCC_GRID_SHAPE) < 0.4,
        "mask_lidar": rng.random(OCC_GRID_SHAPE) < 0.7,
    }


def test_semantics_and_masks_round_trip_exactly():
    labels = _labels()
    semantics = decode_semantics(encode_semantics(labels["semantics"]))
    assert semantics.dtype == np.uint8 and semantics.flags.writeable
    np.testing.assert_array_equal(semantics, labels["semantics"])
    mask = decode_mask(encode_mask(labels["mask_camera"]))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, labels["mask_camera"])


def test_mask_encoding_is_zstd_of_big_endian_packed_bits():
    import pyarrow as pa

    mask = np.zeros(OCC_GRID_SHAPE, dtype=bool)
    mask[0, 0, 0] = True  # first voxel in C order -> most significant bit of the first byte
    packed = pa.Codec("zstd").decompress(encode_mask(mask), decompressed_size=mask.size // 8, asbytes=True)
    assert packed[0] == 0b1000_0000 and not any(packed[1:])


def test_compressed_storage_is_smaller_than_raw_arrays_for_structured_grids():
    semantics = np.full(OCC_GRID_SHAPE, 17, dtype=np.uint8)
    semantics[:, :, :2] = 11
    encoded = encode_occupancy({"semantics": semantics, "mask_camera": semantics < 17, "mask_lidar": semantics < 17})
    assert sum(len(value) for value in encoded.values()) < semantics.nbytes // 100


def test_encode_rejects_wrong_dtype_naming_the_array():
    with pytest.raises(ValueError, match="semantics: expected"):
        encode_semantics(np.zeros(OCC_GRID_SHAPE, dtype=np.int64))
    with pytest.raises(ValueError, match="mask: expected"):
        encode_mask(np.zeros((200, 200, 8), dtype=bool))


def test_decode_occupancy_decodes_a_batch_and_keeps_other_columns():
    labels = [_labels(0), _labels(1)]
    encoded = [encode_occupancy(item) for item in labels]
    batch = {name: [item[name] for item in encoded] for name in encoded[0]} | {"sample_token": ["a", "b"]}
    decoded = decode_occupancy(batch)
    assert decoded["sample_token"] == ["a", "b"]
    for index, item in enumerate(labels):
        for name, array in item.items():
            np.testing.assert_array_equal(decoded[name][index], array)


def test_decode_occupancy_decodes_only_the_masks_a_batch_holds():
    labels = _labels(0)
    encoded = encode_occupancy(labels)
    decoded = decode_occupancy({"semantics": [encoded["semantics"]], "mask_camera": [encoded["mask_camera"]]})
    assert sorted(decoded) == ["mask_camera", "semantics"]
    np.testing.assert_array_equal(decoded["mask_camera"][0], labels["mask_camera"])


def test_read_occupancy_converts_01_uint8_masks_to_bool(tmp_path: Path):
    labels = _labels()
    path = tmp_path / "labels.npz"
    np.savez_compressed(path, **{**labels, "mask_lidar": labels["mask_lidar"].astype(np.uint8)})
    arrays = read_occupancy(path)
    assert arrays["mask_lidar"].dtype == bool
    for name, array in labels.items():
        np.testing.assert_array_equal(arrays[name], array)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"semantics": None}, "missing arrays \\['semantics'\\]"),
        ({"mask_camera": np.zeros((200, 200, 8), bool)}, "mask_camera: expected shape"),
        ({"semantics": np.full(OCC_GRID_SHAPE, 18, np.uint8)}, "semantics: expected integer class ids"),
        ({"mask_lidar": np.full(OCC_GRID_SHAPE, 2, np.uint8)}, "mask_lidar: expected bool or 0/1"),
    ],
)
def test_read_occupancy_rejects_malformed_files_naming_file_and_array(tmp_path: Path, change: dict, message: str):
    labels = {**_labels(), **change}
    path = tmp_path / "labels.npz"
    np.savez(path, **{name: array for name, array in labels.items() if array is not None})
    with pytest.raises(ValueError, match=message) as error:
        read_occupancy(path)
    assert str(path) in str(error.value)


def test_occupancy_path_follows_occ3d_layout():
    assert occupancy_path("/gts", "scene-0061", "abc") == Path("/gts/scene-0061/abc/labels.npz")


def _truncated_npz(path: Path) -> None:
    np.savez_compressed(path, **_labels())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_bytes(b""), "not a readable .npz archive"),
        (_truncated_npz, "not a readable .npz archive"),
        (lambda path: path.write_bytes(b"PK\x03\x04 garbage"), "not a readable .npz archive"),
        (lambda path: np.save(open(path, "wb"), _labels()["semantics"]), "got a single .npy array"),
        (
            lambda path: np.savez(path, **{**_labels(), "semantics": np.array([{"a": 1}], dtype=object)}),
            "semantics: unreadable",
        ),
    ],
    ids=["empty", "truncated", "garbage-zip", "npy-under-npz-name", "object-array"],
)
def test_read_occupancy_rejects_unreadable_files_naming_the_file(tmp_path: Path, write, message: str):
    path = tmp_path / "labels.npz"
    write(path)
    with pytest.raises(ValueError, match=message) as error:
        read_occupancy(path)
    assert str(path) in str(error.value)


def test_read_occupancy_missing_file_stays_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        read_occupancy(tmp_path / "labels.npz")
