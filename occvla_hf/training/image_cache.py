"""Camera views resized once: the processor's resize of every keyframe's views, stored as uint8, so that a training
loader decodes and resizes nothing.

A cache folder holds `images.npy`, a numpy array (N, num_views, 3, H, W) uint8 read as a memory map, and
`index.json`: the sample token of each of its N rows and the image settings it was made with (`cache_settings`).
The resize is the processor's own (`OccVLAProcessor.resized_pixels`), so a cached row gives the same pixel values as
its images. A cache is built from rows that hold the images (the `planning` config's); QA rows, which hold none, use
their keyframe's entry (joined by `sample_token`). A cache is checked against the processor when opened: made with
other settings, it is refused. Training (`--image_cache`) and evaluation (`evaluation.runner.prepared_batches`) read
it alike.

    python -m occvla_hf.training.image_cache DATA MODEL_OR_PROCESSOR OUT --split train val
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from tqdm.auto import tqdm

from occvla_hf.data.keyframes import IMAGE_COLUMN
from occvla_hf.data.schema import IMAGES_CONFIG
from occvla_hf.processing import OccVLAProcessor

IMAGES_FILE: str = "images.npy"
INDEX_FILE: str = "index.json"
BUILD_BATCH: int = 32


def cache_settings(processor: OccVLAProcessor) -> dict[str, Any]:
    """What the cached pixels depend on: the views and the image processor's resize."""
    image_processor = processor.image_processor
    size = image_processor.size
    return {
        "num_views": processor.num_views,
        "height": int(size["height"]),
        "width": int(size["width"]),
        "resample": int(image_processor.resample),
        "image_processor": type(image_processor).__name__,
    }


class ImageCache:
    """An image cache folder (module docstring), read-only: `cache[token]` is a (num_views, 3, H, W) uint8 array."""

    def __init__(self, path: str | os.PathLike, processor: OccVLAProcessor) -> None:
        path = Path(path)
        index_file = path / INDEX_FILE
        if not index_file.is_file():
            raise FileNotFoundError(f"{index_file}: no image cache index (build it with build_image_cache)")
        index = json.loads(index_file.read_text())
        expected = cache_settings(processor)
        if index.get("settings") != expected:
            raise ValueError(f"{path}: made with image settings {index.get('settings')}, the processor has {expected}")
        self.path = path
        self._images: np.ndarray | None = None
        tokens = index["sample_tokens"]
        shape = (len(tokens), expected["num_views"], 3, expected["height"], expected["width"])
        if self.images.shape != shape or self.images.dtype != np.uint8:
            raise ValueError(
                f"{path / IMAGES_FILE}: expected {shape} uint8, got {self.images.shape} {self.images.dtype}"
            )
        self.rows = {token: row for row, token in enumerate(tokens)}

    @property
    def images(self) -> np.ndarray:
        """(N, V, 3, H, W) uint8 memory map, opened on first access (also in each data loader worker)."""
        if self._images is None:
            self._images = np.load(self.path / IMAGES_FILE, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}  # a worker maps the file itself instead of receiving a copy

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, token: object) -> bool:
        return token in self.rows

    def __getitem__(self, token: str) -> np.ndarray:
        return np.array(self.images[self.rows[token]])

    def views(self, token: str) -> list[np.ndarray]:
        """The keyframe's cached views as the processor takes a row's `images`: `num_views` (H, W, 3) uint8 arrays,
        which it resizes to the size they have (a copy): the same pixel values as the row's own images."""
        return list(self[token].transpose(0, 2, 3, 1))

    def check(self, sample_tokens: Sequence[str]) -> None:
        """ValueError naming the first sample token the cache does not hold."""
        missing = [token for token in dict.fromkeys(sample_tokens) if token not in self.rows]
        if missing:
            raise ValueError(f"{self.path}: no cached images for {len(missing)} sample tokens, e.g. {missing[0]!r}")


def _keyframe_rows(datasets: Sequence[Dataset]) -> dict[str, tuple[int, int]]:
    """sample token -> (dataset, row) of its first row among `datasets`."""
    first: dict[str, tuple[int, int]] = {}
    for number, rows in enumerate(datasets):
        for row, token in enumerate(rows["sample_token"]):
            first.setdefault(token, (number, row))
    return first


def build_image_cache(
    datasets: Sequence[Dataset],
    processor: OccVLAProcessor,
    path: str | os.PathLike,
    batch_size: int = BUILD_BATCH,
    num_workers: int = 0,
) -> ImageCache:
    """Resizes the views of every keyframe of `datasets` (rows with `sample_token` and `images`) into a new cache at
    `path`, in `num_workers` processes (0: this one), each writing its batches into the array file; the index is
    written last, so a cache interrupted while building has none and is rebuilt."""
    if num_workers < 0:
        raise ValueError(f"num_workers: expected >= 0, got {num_workers}")
    for number, rows in enumerate(datasets):
        if IMAGE_COLUMN not in rows.column_names:
            raise ValueError(
                f"datasets[{number}]: no {IMAGE_COLUMN!r} column (columns {rows.column_names}); cache the keyframes "
                f"of the {IMAGES_CONFIG} rows, which QA rows share"
            )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    settings = cache_settings(processor)
    first = _keyframe_rows(datasets)
    tokens = list(first)
    images_only = [rows.select_columns(["images"]) for rows in datasets]  # no other column is decoded
    shape = (len(tokens), settings["num_views"], 3, settings["height"], settings["width"])
    np.lib.format.open_memmap(path / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=shape).flush()
    jobs = [
        (start, [first[token] for token in tokens[start : start + batch_size]])
        for start in range(0, len(tokens), batch_size)
    ]
    writer = _BatchWriter(path / IMAGES_FILE, images_only, processor)
    with tqdm(total=len(jobs), desc=f"image cache {path.name}", unit="batch") as progress:
        if num_workers == 0:
            for job in jobs:
                progress.update(writer(job))
        else:
            with multiprocessing.Pool(num_workers, initializer=_set_pool_writer, initargs=(writer,)) as pool:
                for done in pool.imap_unordered(_pool_write, jobs):
                    progress.update(done)
    index = {"settings": settings, "sample_tokens": tokens}
    (path / INDEX_FILE).write_text(json.dumps(index))
    print(f"{path}: {len(tokens)} keyframes, {np.prod(shape) / 2**30:.1f} GiB", flush=True)
    return ImageCache(path, processor)


class _BatchWriter:
    """Resizes one batch of keyframes ((dataset, row) of each) and writes it at its rows of the cache's array file."""

    def __init__(self, array_path: Path, images_only: Sequence[Dataset], processor: OccVLAProcessor) -> None:
        self.array_path, self.images_only, self.processor = array_path, images_only, processor

    def __call__(self, job: tuple[int, Sequence[tuple[int, int]]]) -> int:
        start, keyframes = job
        batch = [self.images_only[number][row]["images"] for number, row in keyframes]
        images = np.load(self.array_path, mmap_mode="r+")
        images[start : start + len(batch)] = self.processor.resized_pixels(batch)
        images.flush()
        return 1


_POOL_WRITER: _BatchWriter | None = None  # a pool process's writer, handed over once when the process starts


def _set_pool_writer(writer: _BatchWriter) -> None:
    global _POOL_WRITER
    _POOL_WRITER = writer


def _pool_write(job: tuple[int, Sequence[tuple[int, int]]]) -> int:
    return _POOL_WRITER(job)


def open_image_cache(
    datasets: Sequence[Dataset], processor: OccVLAProcessor, path: str | os.PathLike, **build_kwargs: Any
) -> ImageCache:
    """The cache at `path`, checked against the processor, or a new one of `datasets` (`build_image_cache`) when it
    has no index yet. Whether it holds given rows is `ImageCache.check` (`JointDataset` calls it)."""
    if not (Path(path) / INDEX_FILE).is_file():
        return build_image_cache(datasets, processor, path, **build_kwargs)
    return ImageCache(path, processor)


def main(argv: Sequence[str] | None = None) -> None:
    """Builds (or checks) `<out>/<split>/` for each `--split` of a dataset from its planning rows (which hold the
    images), and checks that it holds the keyframes of every `--configs` row."""
    import argparse

    from occvla_hf.data.load import load_configs

    parser = argparse.ArgumentParser(prog="python -m occvla_hf.training.image_cache", description=main.__doc__)
    parser.add_argument("data", help="a `data build` folder or a Hub dataset id")
    parser.add_argument("processor", help="a model or processor folder (its image settings are cached)")
    parser.add_argument("out", help="cache folder: <out>/<split>/")
    parser.add_argument("--split", nargs="+", default=["train"], help="splits to cache")
    parser.add_argument("--configs", nargs="+", default=["planning", "qa"], help="configs whose keyframes it must hold")
    parser.add_argument("--workers", type=int, default=0, help="processes that resize the views")
    args = parser.parse_args(argv)
    processor = OccVLAProcessor.from_pretrained(args.processor)
    names = [IMAGES_CONFIG, *(name for name in args.configs if name != IMAGES_CONFIG)]
    configs: Mapping[str, Any] = load_configs(args.data, names)
    for split in args.split:
        if split not in configs[IMAGES_CONFIG]:
            raise ValueError(
                f"--split: {split!r} is not a split of the {IMAGES_CONFIG} config, which holds the images (splits: "
                f"{sorted(configs[IMAGES_CONFIG])})"
            )
        cache = open_image_cache(
            [configs[IMAGES_CONFIG][split]], processor, Path(args.out) / split, num_workers=args.workers
        )
        for splits in configs.values():
            if split in splits:
                cache.check(splits[split]["sample_token"])


if __name__ == "__main__":
    main()
