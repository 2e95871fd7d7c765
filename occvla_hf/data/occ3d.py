"""Occ3D-nuScenes labels: reading `gts/<scene_name>/<sample_token>/labels.npz` and the compact storage codec.

A labels file holds `semantics` (200, 200, 16) uint8 class ids (`OCC_CLASS_NAMES`, 17 = free) and the visibility
masks `mask_lidar`, `mask_camera` (200, 200, 16), bool or 0/1 uint8.

Storage: as fixed-shape Arrow arrays one keyframe takes about 1.3 MB (uint8 semantics plus two masks) and more in
Parquet, so the datasets store each array as compressed bytes instead (see benchmarks/RESULTS.md for the measured
sizes). Exact round trip:

  semantics: zstd(semantics.astype(uint8).tobytes(order="C"), level OCC_ZSTD_LEVEL)
  masks:     zstd(np.packbits(mask.astype(bool), axis=None, bitorder="big").tobytes(), level OCC_ZSTD_LEVEL)

`decode_semantics` / `decode_mask` invert them (zstd through pyarrow's codec, no extra dependency);
`decode_occupancy` decodes the three columns of a batch, for `Dataset.with_transform` or a batched `map`.
`occupancy_storage()` states the same as data (the dataset card's YAML carries it). The bytes are raw zstd frames,
not .npy files: `np.frombuffer` of the decompressed bytes, not `np.load`, gives the arrays.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from occvla_hf.constants import NUM_OCC_CLASSES, OCC_FREE_CLASS, OCC_GRID_SHAPE

OCC_ZSTD_LEVEL: int = 9
OCC_MASK_NAMES: tuple[str, ...] = ("mask_camera", "mask_lidar")
OCC_ARRAY_NAMES: tuple[str, ...] = ("semantics", *OCC_MASK_NAMES)
_NUM_VOXELS = int(np.prod(OCC_GRID_SHAPE))
_CODEC = pa.Codec("zstd", compression_level=OCC_ZSTD_LEVEL)


def occupancy_path(occ3d_root: str | os.PathLike, scene_name: str, sample_token: str) -> Path:
    """Path of a keyframe's Occ3D labels file: `<occ3d_root>/<scene_name>/<sample_token>/labels.npz`."""
    return Path(occ3d_root) / scene_name / sample_token / "labels.npz"


def read_occupancy(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`semantics` (200, 200, 16) uint8 and `mask_camera`, `mask_lidar` (200, 200, 16) bool of a labels.npz.

    ValueError naming the file (and the array) for a file that is not a readable .npz archive (truncated, empty,
    a single .npy, object arrays), a missing key, a wrong shape, class ids >= 18 or non-0/1 masks.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz archive ({type(error).__name__}: {error})") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of {list(OCC_ARRAY_NAMES)}, got a single .npy array")
    with loaded as npz:
        missing = [name for name in OCC_ARRAY_NAMES if name not in npz.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (found {npz.files})")
        arrays = {}
        for name in OCC_ARRAY_NAMES:
            try:
                arrays[name] = npz[name]
            except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
                raise ValueError(f"{path}: {name}: unreadable ({type(error).__name__}: {error})") from error
    for name, array in arrays.items():
        if array.shape != OCC_GRID_SHAPE:
            raise ValueError(f"{path}: {name}: expected shape {OCC_GRID_SHAPE}, got {array.shape}")
    semantics = arrays["semantics"]
    if not np.issubdtype(semantics.dtype, np.integer) or semantics.min() < 0 or semantics.max() >= NUM_OCC_CLASSES:
        raise ValueError(
            f"{path}: semantics: expected integer class ids in [0, {NUM_OCC_CLASSES}), got {semantics.dtype}"
        )
    result = {"semantics": semantics.astype(np.uint8)}
    for name in OCC_MASK_NAMES:
        mask = arrays[name]
        if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all()):
            raise ValueError(f"{path}: {name}: expected bool or 0/1 values, got {mask.dtype}")
        result[name] = mask.astype(bool)
    return result


def occupancy_storage() -> dict[str, dict[str, object]]:
    """How each stored occupancy column holds its array (module docstring): codec, decompressed size, dtype, shape,
    memory order, and the values (semantics) or the bit packing (masks)."""
    semantics = {
        "codec": "zstd",
        "decompressed_bytes": _NUM_VOXELS,
        "dtype": "uint8",
        "shape": list(OCC_GRID_SHAPE),
        "order": "C",
        "values": f"Occ3D class ids 0..{NUM_OCC_CLASSES - 1} ({OCC_FREE_CLASS} = free)",
    }
    masks = {
        name: {
            "codec": "zstd",
            "decompressed_bytes": _NUM_VOXELS // 8,
            "dtype": "bool",
            "shape": list(OCC_GRID_SHAPE),
            "order": "C",
            "bit_packing": "numpy.packbits(mask, axis=None, bitorder='big'): 8 voxels per byte",
        }
        for name in OCC_MASK_NAMES
    }
    return {"semantics": semantics, **masks}


def encode_semantics(semantics: np.ndarray) -> bytes:
    """zstd bytes of a (200, 200, 16) uint8 semantics grid (C order)."""
    if semantics.shape != OCC_GRID_SHAPE or semantics.dtype != np.uint8:
        raise ValueError(f"semantics: expected {OCC_GRID_SHAPE} uint8, got {semantics.shape} {semantics.dtype}")
    return _CODEC.compress(np.ascontiguousarray(semantics).tobytes(), asbytes=True)


def decode_semantics(data: bytes) -> np.ndarray:
    """Inverse of `encode_semantics` -> (200, 200, 16) uint8 (a writable array)."""
    raw = _CODEC.decompress(data, decompressed_size=_NUM_VOXELS, asbytes=True)
    return np.frombuffer(raw, dtype=np.uint8).reshape(OCC_GRID_SHAPE).copy()


def encode_mask(mask: np.ndarray) -> bytes:
    """zstd bytes of a (200, 200, 16) bool mask packed 8 voxels per byte (C order, big bit order)."""
    if mask.shape != OCC_GRID_SHAPE or mask.dtype != bool:
        raise ValueError(f"mask: expected {OCC_GRID_SHAPE} bool, got {mask.shape} {mask.dtype}")
    return _CODEC.compress(np.packbits(mask, axis=None, bitorder="big").tobytes(), asbytes=True)


def decode_mask(data: bytes) -> np.ndarray:
    """Inverse of `encode_mask` -> (200, 200, 16) bool."""
    raw = _CODEC.decompress(data, decompressed_size=_NUM_VOXELS // 8, asbytes=True)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=_NUM_VOXELS, bitorder="big")
    return bits.reshape(OCC_GRID_SHAPE).astype(bool)


def encode_occupancy(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The stored form of `read_occupancy`'s arrays: one bytes value per name in `OCC_ARRAY_NAMES`."""
    encoded = {"semantics": encode_semantics(arrays["semantics"])}
    encoded.update({name: encode_mask(arrays[name]) for name in OCC_MASK_NAMES})
    return encoded


def decode_occupancy(batch: dict[str, list]) -> dict[str, list]:
    """Decode the occupancy columns of a batch (dict of lists): `semantics` and whichever masks it holds (a dataset
    may keep only `mask_camera`), keeping every other column as it is.

    Use `dataset.with_transform(decode_occupancy)` for lazy decoding on access, or
    `dataset.map(decode_occupancy, batched=True)` on a streamed (iterable) dataset.
    """
    decoded = dict(batch)
    decoded["semantics"] = [decode_semantics(data) for data in batch["semantics"]]
    for name in OCC_MASK_NAMES:
        if name in batch:
            decoded[name] = [decode_mask(data) for data in batch[name]]
    return decoded
