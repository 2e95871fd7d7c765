"""The `planning` config as a LeRobot dataset (codebase v3.0), so LeRobot's loaders, visualiser and policies read it.

`export_lerobot(source, out_dir)` writes, without the `lerobot` package, the layout `LeRobotDataset` reads (checked
against huggingface/lerobot `src/lerobot/datasets/utils.py`, `io_utils.py`, `dataset_writer.py`,
`dataset_metadata.py`, `compute_stats.py`):

  README.md                                   the dataset card: LeRobot's front matter, the source's licence
  meta/info.json                              codebase_version "v3.0", fps, features, totals, splits, path templates
  meta/stats.json                             per feature: mean, std, min, max, count (+ exact q01..q99, not images)
  meta/tasks.parquet                          the task texts (pandas index `task`) and their `task_index`
  meta/episodes/chunk-000/file-000.parquet    one row per episode: its frames' range and file, per-episode stats
  data/chunk-CCC/file-FFF.parquet             the frames, several episodes per file (about 100 MB each)

One episode per scene (`episode_index` in the order of the splits, then of the scenes), one frame per keyframe in
time order (`frame_index`; `timestamp` = frame_index / fps, the nominal keyframe time: the real one is the planning
row's, joined by `sample_token`), `index` over the whole dataset, one task (`LEROBOT_TASK`, `task_index` 0). The
six cameras are image features (`dtype: "image"`, the JPEG/PNG bytes of the build embedded in the data files as
LeRobot does with `use_videos=False`), so no video is encoded and `video_path` is null. The features:

  observation.images.CAM_*  (H, W, 3) image           the keyframe's camera views
  observation.state         (6,) float32              ego status [vx, vy, ax, ay, yaw_rate, steering]
  action                    (12,) float32             the 6 future waypoints (x, y) at 0.5 s steps, flattened
  ego_status_valid          (6,) bool                 which `observation.state` entries exist (else 0)
  waypoint_valid            (6,) bool                 which waypoints exist (past the scene's end they are 0)
  sample_token              string                    the nuScenes keyframe (joins the qa / occupancy configs)
  timestamp, frame_index, episode_index, index, task_index   LeRobot's own columns

The validity masks do not start with `observation` or `action`, so LeRobot's policies do not take them as inputs or
targets (`dataset_to_policy_features`). Statistics follow `compute_stats.py`: images per channel, (3, 1, 1), in
[0, 1], over pixels subsampled to about 150 px; numeric features per entry over the frames; `observation.state` and
`action` per entry over the frames where that entry is valid (`count` is then per entry; an entry never valid gets
zeros). `fps` is 2: the keyframe rate of nuScenes and of the sim.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from occvla_hf.constants import CAMERA_NAMES, EGO_STATUS_FEATURES, NUM_WAYPOINTS, WAYPOINT_STEP_S
from occvla_hf.data.card import dataset_source, lerobot_card

LEROBOT_CODEBASE_VERSION: str = "v3.0"
LEROBOT_FPS: int = round(1.0 / WAYPOINT_STEP_S)  # keyframes at 2 Hz
LEROBOT_TASK: str = "Drive the ego vehicle: plan its next 3 seconds."
LEROBOT_ROBOT_TYPE: str = "car"
IMAGE_KEY_PREFIX: str = "observation.images."
STATE_KEY: str = "observation.state"
ACTION_KEY: str = "action"
# LeRobot's defaults (`utils.py`): files per chunk folder, data file size; and its path templates.
CHUNKS_SIZE: int = 1000
DATA_FILE_SIZE_MB: int = 100
VIDEO_FILE_SIZE_MB: int = 200
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH: str = "data/" + _CHUNK_FILE
EPISODES_PATH: str = "meta/episodes/" + _CHUNK_FILE
CARD_PATH: str = "README.md"
INFO_PATH: str = "meta/info.json"
STATS_PATH: str = "meta/stats.json"
TASKS_PATH: str = "meta/tasks.parquet"
# `compute_stats.py`: the quantiles of numeric features, and the image size stats are computed at.
QUANTILES: tuple[float, ...] = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_NAMES: tuple[str, ...] = tuple(f"q{round(100 * quantile):02d}" for quantile in QUANTILES)  # q01 .. q99
_STATS_IMAGE_SIZE_PX = 150
_STATS_IMAGE_MIN_PX = 300  # images smaller than this are not subsampled
# The planning columns the export reads.
_ROW_COLUMNS = (
    "sample_token",
    "scene_name",
    "timestamp",
    "images",
    "ego_status",
    "ego_status_valid",
    "trajectory",
    "trajectory_mask",
)


def image_key(camera: str) -> str:
    return f"{IMAGE_KEY_PREFIX}{camera}"


def lerobot_features(image_shapes: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, Any]]:
    """The `features` of `meta/info.json`; `image_shapes`: camera name -> (height, width, 3)."""
    times = [f"{(step + 1) * WAYPOINT_STEP_S:g}s" for step in range(NUM_WAYPOINTS)]
    waypoints = [f"{axis}_{time}" for time in times for axis in "xy"]  # x_0.5s, y_0.5s, ..., y_3s
    image_names = ["height", "width", "channels"]
    features = {
        image_key(camera): {"dtype": "image", "shape": list(image_shapes[camera]), "names": image_names}
        for camera in CAMERA_NAMES
    }
    features[STATE_KEY] = _vector("float32", list(EGO_STATUS_FEATURES))
    features[ACTION_KEY] = _vector("float32", waypoints)
    features["ego_status_valid"] = _vector("bool", list(EGO_STATUS_FEATURES))
    features["waypoint_valid"] = _vector("bool", times)
    features["sample_token"] = {"dtype": "string", "shape": [1], "names": None}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        features[name] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def _vector(dtype: str, names: list[str]) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [len(names)], "names": names}


def hf_features(features: dict[str, dict[str, Any]]) -> Features:
    """The `datasets` features LeRobot reads the data files with (`feature_utils.get_hf_features_from_features`):
    images as `Image`, shape (1,) as a scalar, (n,) as a list of length n."""
    converted = {}
    for name, feature in features.items():
        if feature["dtype"] == "image":
            converted[name] = Image()
        elif feature["shape"] == [1]:
            converted[name] = Value(feature["dtype"])
        else:
            converted[name] = List(Value(feature["dtype"]), length=feature["shape"][0])
    return Features(converted)


@dataclass
class _ImageMoments:
    """Per-channel pixel sums over the sampled images of one camera, for `compute_stats.py`'s image statistics."""

    images: int = 0
    pixels: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(3))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(3))
    low: np.ndarray = field(default_factory=lambda: np.full(3, 255.0))
    high: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def add(self, image: np.ndarray) -> None:
        """`image` (H, W, 3) uint8, subsampled as LeRobot's `auto_downsample_height_width`."""
        height, width = image.shape[:2]
        if max(height, width) >= _STATS_IMAGE_MIN_PX:
            step = max(1, (width if width > height else height) // _STATS_IMAGE_SIZE_PX)
            image = image[::step, ::step]
        pixels = image.reshape(-1, 3).astype(np.float64)
        self.images += 1
        self.pixels += len(pixels)
        self.total += pixels.sum(axis=0)
        self.squares += (pixels**2).sum(axis=0)
        self.low = np.minimum(self.low, pixels.min(axis=0))
        self.high = np.maximum(self.high, pixels.max(axis=0))

    def merged(self, other: _ImageMoments) -> _ImageMoments:
        return _ImageMoments(
            self.images + other.images,
            self.pixels + other.pixels,
            self.total + other.total,
            self.squares + other.squares,
            np.minimum(self.low, other.low),
            np.maximum(self.high, other.high),
        )

    def stats(self) -> dict[str, Any]:
        """min, max, mean, std (3, 1, 1) in [0, 1] and the image count."""
        mean = self.total / self.pixels
        std = np.sqrt(np.maximum(self.squares / self.pixels - mean**2, 0.0))
        per_channel = {"min": self.low, "max": self.high, "mean": mean, "std": std}
        stats = {name: (values / 255.0).reshape(3, 1, 1).tolist() for name, values in per_channel.items()}
        return {**stats, "count": [self.images]}


def feature_stats(values: np.ndarray, valid: np.ndarray | None = None) -> dict[str, Any]:
    """min, max, mean, std, count and `QUANTILES` of `values` (N,) or (N, D) per entry (`compute_stats.py`:
    reduced over the frames, (N,) keeping one entry), over the frames where `valid` (same shape) is set: `count` is
    then per entry, and an entry never valid has zeros."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    valid = np.ones(values.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(values.shape)
    stats: dict[str, list] = {name: [] for name in ("min", "max", "mean", "std", *QUANTILE_NAMES)}
    for column, keep in zip(values.T, valid.T, strict=True):
        seen = column[keep] if keep.any() else np.zeros(1)
        stats["min"].append(float(seen.min()))
        stats["max"].append(float(seen.max()))
        stats["mean"].append(float(seen.mean()))
        stats["std"].append(float(seen.std()))
        for name, quantile in zip(QUANTILE_NAMES, np.quantile(seen, QUANTILES), strict=True):
            stats[name].append(float(quantile))
    counts = valid.sum(axis=0)
    stats["count"] = [int(counts[0])] if (counts == counts[0]).all() else counts.tolist()
    return stats


@dataclass
class LeRobotExport:
    """What `export_lerobot` wrote.

    Args:
        root: the dataset folder.
        info: the content of `meta/info.json`.
        stats: the content of `meta/stats.json`.
        episodes: per episode (scene), its `scene_name`, `split` and frames `[dataset_from_index, dataset_to_index)`.
    """

    root: Path
    info: dict[str, Any]
    stats: dict[str, Any]
    episodes: list[dict[str, Any]]


def export_lerobot(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    data_file_size_mb: float = DATA_FILE_SIZE_MB,
) -> LeRobotExport:
    """Write the `planning` config of `source` (a `data build` folder or Hub id, `data.load.load_configs`) as a
    LeRobot v3.0 dataset in `out_dir` (see the module docstring): the splits `splits` (default: all, in sorted
    order) as episode ranges of `info["splits"]`, data files of about `data_file_size_mb` each. `out_dir` must not
    hold a dataset already."""
    from occvla_hf.data.load import load_configs  # loads `datasets` builders: only when exporting

    root = Path(out_dir)
    if (root / INFO_PATH).exists():
        raise ValueError(f"out_dir: {root} already holds a LeRobot dataset ({INFO_PATH})")
    planning = load_configs(source, ["planning"])["planning"]
    source_record = dataset_source({"planning": planning})  # the card's licence and source: checked before writing
    names = sorted(planning) if splits is None else list(splits)
    missing = [name for name in names if name not in planning]
    if missing or not names:
        raise ValueError(
            f"splits: the planning config of {str(source)!r} has {sorted(planning)}, not {missing or names}"
        )
    if not data_file_size_mb > 0:
        raise ValueError(f"data_file_size_mb: expected > 0, got {data_file_size_mb}")
    scenes = [(name, scene, rows) for name in names for scene, rows in _scenes(planning[name])]
    if not scenes:
        raise ValueError(f"splits: {names} of {str(source)!r} hold no planning rows")
    features = lerobot_features(_image_shapes(scenes[0][2][0]))
    writer = _DataWriter(root, hf_features(features), data_file_size_mb)
    episodes, frame_columns, moments = [], [], {camera: _ImageMoments() for camera in CAMERA_NAMES}
    for episode_index, (split, scene, rows) in enumerate(scenes):
        columns, episode_moments = _episode_columns(rows, features, episode_index, writer.num_frames)
        chunk_index, file_index = writer.write(columns)
        episodes.append(
            {
                "episode_index": episode_index,
                "tasks": [LEROBOT_TASK],
                "length": len(rows),
                "scene_name": scene,
                "split": split,
                "data/chunk_index": chunk_index,
                "data/file_index": file_index,
                "dataset_from_index": columns["index"][0],
                "dataset_to_index": columns["index"][-1] + 1,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                **{f"stats/{name}/{stat}": value for name, stats in _stats(columns, episode_moments).items()
                   for stat, value in stats.items()},
            }
        )  # fmt: skip
        frame_columns.append({name: columns[name] for name in columns if not name.startswith(IMAGE_KEY_PREFIX)})
        moments = {camera: moments[camera].merged(episode_moments[camera]) for camera in CAMERA_NAMES}
    writer.close()
    all_frames = {name: np.concatenate([columns[name] for columns in frame_columns]) for name in frame_columns[0]}
    stats = _stats(all_frames, moments)
    info = _info(features, episodes, names, writer.num_frames, data_file_size_mb)
    _write_metadata(root, info, stats, episodes)
    (root / CARD_PATH).write_text(lerobot_card(source_record, info, LEROBOT_TASK), encoding="utf-8")
    return LeRobotExport(
        root=root,
        info=info,
        stats=stats,
        episodes=[
            {key: episode[key] for key in ("scene_name", "split", "dataset_from_index", "dataset_to_index")}
            for episode in episodes
        ],
    )


def _scenes(rows: Dataset) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(scene name, its rows in time order) for every scene of a split, in the order the scenes first appear; the
    camera images undecoded ({"bytes", "path"})."""
    rows = rows.select_columns(list(_ROW_COLUMNS)).cast_column("images", List(Image(decode=False)))
    scene_names = rows["scene_name"]
    order: dict[str, list[int]] = {}
    for row_index, scene in enumerate(scene_names):
        order.setdefault(scene, []).append(row_index)
    timestamps = np.asarray(rows["timestamp"])
    for scene, indices in order.items():
        indices = sorted(indices, key=lambda i: timestamps[i])
        yield scene, [rows[i] for i in indices]


def _image_bytes(image: dict[str, Any], where: str) -> bytes:
    """The encoded bytes of an undecoded `Image` value (embedded, or read from its path)."""
    if image.get("bytes"):
        return image["bytes"]
    if image.get("path") and Path(image["path"]).is_file():
        return Path(image["path"]).read_bytes()
    raise FileNotFoundError(f"images: {where} has neither embedded bytes nor a readable file ({image.get('path')!r})")


def _image_shapes(row: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """camera -> (height, width, 3) of a row's views (read from the headers only)."""
    shapes = {}
    for camera, image in zip(CAMERA_NAMES, row["images"], strict=True):
        with PILImage.open(io.BytesIO(_image_bytes(image, f"{row['sample_token']} {camera}"))) as opened:
            shapes[camera] = (opened.height, opened.width, 3)
    return shapes


def _episode_columns(
    rows: list[dict[str, Any]], features: dict[str, dict[str, Any]], episode_index: int, first_index: int
) -> tuple[dict[str, Any], dict[str, _ImageMoments]]:
    """The frame columns of one episode (numpy arrays, images as {"bytes", "path"}) and its image moments; every
    view is decoded once, to check its size against `features` and for the statistics."""
    length = len(rows)
    frame_index = np.arange(length, dtype=np.int64)
    columns: dict[str, Any] = {
        STATE_KEY: np.asarray([row["ego_status"] for row in rows], dtype=np.float32),
        ACTION_KEY: np.asarray([row["trajectory"] for row in rows], dtype=np.float32).reshape(length, -1),
        "ego_status_valid": np.asarray([row["ego_status_valid"] for row in rows], dtype=bool),
        "waypoint_valid": np.asarray([row["trajectory_mask"] for row in rows], dtype=bool),
        "sample_token": np.asarray([row["sample_token"] for row in rows]),
        "timestamp": (frame_index / LEROBOT_FPS).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.full(length, episode_index, dtype=np.int64),
        "index": first_index + frame_index,
        "task_index": np.zeros(length, dtype=np.int64),
    }
    for name, column in ((STATE_KEY, "ego_status"), (ACTION_KEY, "trajectory")):
        bad = ~np.isfinite(columns[name]).all(axis=1)
        if bad.any():
            raise ValueError(f"{column}: NaN or inf in keyframe {rows[int(np.argmax(bad))]['sample_token']} ({name})")
    moments = {camera: _ImageMoments() for camera in CAMERA_NAMES}
    for view, camera in enumerate(CAMERA_NAMES):
        key, encoded = image_key(camera), []
        for row in rows:
            data = _image_bytes(row["images"][view], f"{row['sample_token']} {camera}")
            with PILImage.open(io.BytesIO(data)) as opened:
                pixels = np.asarray(opened.convert("RGB"))
            if list(pixels.shape) != features[key]["shape"]:
                raise ValueError(
                    f"images: {row['sample_token']} {camera} is {pixels.shape}, the dataset's {camera} views are "
                    f"{tuple(features[key]['shape'])} (a LeRobot image feature has one shape)"
                )
            moments[camera].add(pixels)
            encoded.append({"bytes": data, "path": None})
        columns[key] = encoded
    return columns, moments


def _stats(columns: dict[str, Any], moments: dict[str, _ImageMoments]) -> dict[str, Any]:
    """The statistics of every feature but the strings (module docstring)."""
    masks = {STATE_KEY: columns["ego_status_valid"], ACTION_KEY: np.repeat(columns["waypoint_valid"], 2, axis=1)}
    stats = {image_key(camera): moments[camera].stats() for camera in CAMERA_NAMES}
    for name, values in columns.items():
        if name.startswith(IMAGE_KEY_PREFIX) or name == "sample_token":
            continue
        stats[name] = feature_stats(values, masks.get(name))
    return stats


class _DataWriter:
    """Appends episodes to `data/chunk-CCC/file-FFF.parquet`, opening the next file once one passes the size limit
    (an episode stays in one file)."""

    def __init__(self, root: Path, features: Features, file_size_mb: float) -> None:
        self.root, self.features, self.file_limit_bytes = root, features, file_size_mb * 1024**2
        self.chunk_index = self.file_index = self.num_frames = self._file_bytes = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, columns: dict[str, Any]) -> tuple[int, int]:
        """Writes one episode's frames; returns (chunk index, file index) of its file."""
        if self._writer is not None and self._file_bytes >= self.file_limit_bytes:
            self.close()
            self.file_index += 1
            if self.file_index == CHUNKS_SIZE:
                self.chunk_index, self.file_index = self.chunk_index + 1, 0
        table = Dataset.from_dict(
            {name: list(values) for name, values in columns.items()}, features=self.features
        ).with_format("arrow")[:]
        if self._writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk_index, file_index=self.file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, schema=table.schema, compression="snappy")
            self._file_bytes = 0
        self._writer.write_table(table)
        self._file_bytes += table.nbytes
        self.num_frames += table.num_rows
        return self.chunk_index, self.file_index

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _info(
    features: dict[str, dict[str, Any]],
    episodes: list[dict[str, Any]],
    splits: list[str],
    num_frames: int,
    data_file_size_mb: float,
) -> dict[str, Any]:
    """The content of `meta/info.json` (`utils.DatasetInfo`); `splits`: name -> "first:last+1" episode range."""
    ranges = {}
    for split in splits:
        indices = [episode["episode_index"] for episode in episodes if episode["split"] == split]
        if indices:
            ranges[split] = f"{indices[0]}:{indices[-1] + 1}"
    return {
        "codebase_version": LEROBOT_CODEBASE_VERSION,
        "robot_type": LEROBOT_ROBOT_TYPE,
        "total_episodes": len(episodes),
        "total_frames": num_frames,
        "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": data_file_size_mb,
        "video_files_size_in_mb": VIDEO_FILE_SIZE_MB,
        "fps": LEROBOT_FPS,
        "splits": ranges,
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
    }


def _write_metadata(root: Path, info: dict[str, Any], stats: dict[str, Any], episodes: list[dict[str, Any]]) -> None:
    """`meta/info.json`, `meta/stats.json`, `meta/tasks.parquet` (pandas, index `task`, as LeRobot's `write_tasks`)
    and the episodes' parquet file."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / INFO_PATH).write_text(json.dumps(info, indent=4) + "\n", encoding="utf-8")
    (root / STATS_PATH).write_text(json.dumps(stats, indent=4) + "\n", encoding="utf-8")
    pd.DataFrame({"task_index": [0]}, index=pd.Index([LEROBOT_TASK], name="task")).to_parquet(root / TASKS_PATH)
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), path)


__all__ = [
    "LEROBOT_CODEBASE_VERSION",
    "LEROBOT_FPS",
    "LEROBOT_TASK",
    "LeRobotExport",
    "export_lerobot",
    "feature_stats",
    "hf_features",
    "lerobot_features",
]
