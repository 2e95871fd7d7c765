"""nuScenes (+ Occ3D, + nuScenes-QA) -> Hugging Face datasets: features, building, saving and pushing.

Three configs, one `DatasetDict` each, with the official nuScenes splits as splits (`mini_train`/`mini_val` for
v1.0-mini, `train`/`val` for v1.0-trainval, `test` for v1.0-test):

* `planning`: one row per keyframe, with its camera images.
* `qa`: one row per nuScenes-QA question, with its keyframe's `sample_token` (and scene, time) but no image: the
  images of a keyframe are stored once, in its planning row (`occvla_hf.data.keyframes.join_keyframes`), so `qa` is
  built with `planning`.
* `occupancy`: one row per keyframe with Occ3D labels.

The row format (columns, features, what each holds) is `occvla_hf.data.schema`'s; class-label columns are written as
ids (`occvla_hf.class_labels`).

Building is generator-based (`Dataset.from_generator`, Arrow written in small batches, memory flat) and chunked by
scenes: each chunk is cached under its own fingerprint of the inputs, so an interrupted build resumes at the first
unfinished chunk when called again with the same arguments and cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import (
    Dataset,
    DatasetDict,
    are_progress_bars_disabled,
    concatenate_datasets,
)
from huggingface_hub import HfApi
from PIL import Image
from tqdm.auto import tqdm

from occvla_hf.class_labels import label_id
from occvla_hf.constants import (
    CAMERA_NAMES,
    DATASET_CONFIG_NAMES,
)
from occvla_hf.data.card import dataset_card
from occvla_hf.data.load import ARROW_DIR
from occvla_hf.data.nuscenes import NuScenesReader, check_dataroot
from occvla_hf.data.nuscenes_qa import QA_FILE_SPLITS, Question, load_qa_root, qa_file
from occvla_hf.data.occ3d import (
    encode_occupancy,
    occupancy_path,
    read_occupancy,
)
from occvla_hf.data.provenance import read_dataroot_source
from occvla_hf.data.schema import CONFIGS_WITH_CAMERAS, IMAGES_CONFIG, KEYFRAME_COLUMNS, config_features
from occvla_hf.version import __version__

logger = logging.getLogger(__name__)

IMAGE_MODES: tuple[str, ...] = ("path", "bytes")
ON_MISSING_OCC: tuple[str, ...] = ("skip", "error")
ON_CORRUPT: tuple[str, ...] = ("skip", "error")
# Bump when the row content changes, so that cached chunks of older builds are not reused.
_FORMAT_REVISION = 4
_WRITER_BATCH_SIZE = 100
_MAX_PARQUET_SHARD_BYTES = 500 * 2**20
# A complete JPEG ends with the end-of-image marker (0xFF is byte-stuffed elsewhere), allowing for trailing padding.
_JPEG_END_MARKER = b"\xff\xd9"
_JPEG_TAIL_BYTES = 64


@dataclass(frozen=True)
class _Sources:
    """What the row generators read; passed to them whole, never hashed (chunks carry their own fingerprint)."""

    reader: NuScenesReader
    image_mode: str
    questions: dict[str, list[Question]] | None
    occ3d_root: Path | None
    skipped_occupancy: frozenset[str]
    skipped_images: frozenset[str]


def _keyframe_row(fields: dict) -> dict:
    """The keyframe columns of a row from `NuScenesReader.camera_fields`."""
    return {name: fields[name] for name in KEYFRAME_COLUMNS}


def _camera_row(fields: dict, image_mode: str, dataroot: Path) -> dict:
    """The keyframe and camera columns of a keyframe from `NuScenesReader.camera_fields`."""
    images = [
        path if image_mode == "path" else {"bytes": Path(path).read_bytes(), "path": os.path.relpath(path, dataroot)}
        for path in fields["image_paths"]
    ]
    return {
        **_keyframe_row(fields),
        "images": images,
        "camera_intrinsics": fields["camera_intrinsics"],
        "camera_extrinsics": fields["camera_extrinsics"],
        "camera_to_keyframe_ego": fields["camera_to_keyframe_ego"],
    }


def _planning_labels(record: dict) -> dict:
    """A planning record of `NuScenesReader.planning_fields` with its class-label columns as ids."""
    categories = [[label_id("agent_categories", name) for name in step] for step in record["agent_categories"]]
    return {**record, "meta_action": label_id("meta_action", record["meta_action"]), "agent_categories": categories}


def _generate_rows(config: str, scene_names: list[str], sources: _Sources) -> Iterator[dict]:
    """Rows of one config for the keyframes of `scene_names`, in scene then time order."""
    reader = sources.reader
    for scene_name in scene_names:
        tokens = reader.scene_keyframes(scene_name)
        planning = reader.planning_fields(scene_name) if config == "planning" else None
        for k, token in enumerate(tokens):
            if config == "qa" and token not in sources.questions:
                continue
            if token in sources.skipped_images or (config == "occupancy" and token in sources.skipped_occupancy):
                continue
            fields = reader.camera_fields(token)
            if config == "planning":
                yield {**_camera_row(fields, sources.image_mode, reader.dataroot), **_planning_labels(planning[k])}
            elif config == "qa":
                for question in sources.questions[token]:
                    yield {
                        **_keyframe_row(fields),
                        "question": question.question,
                        "answer": question.answer,
                        "template_type": label_id("template_type", question.template_type),
                        "num_hop": question.num_hop,
                    }
            else:
                arrays = read_occupancy(occupancy_path(sources.occ3d_root, scene_name, token))
                yield {**_camera_row(fields, sources.image_mode, reader.dataroot), **encode_occupancy(arrays)}


def _image_problem(path: Path) -> str | None:
    """Why a camera image cannot be decoded (empty, unreadable header, JPEG cut short), or None when it looks whole.

    Cheap: reads the header (`PIL.Image.verify`, which also checks PNG chunk CRCs) and the last bytes, not the pixels.
    """
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            image_format = image.format
            image.verify()
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image ({error})"
    if image_format == "JPEG":
        with open(path, "rb") as file:
            file.seek(max(0, size - _JPEG_TAIL_BYTES))
            if _JPEG_END_MARKER not in file.read():
                return "truncated JPEG (no end-of-image marker)"
    return None


def _check_images(
    reader: NuScenesReader, keyframes: dict[str, list[str]], on_corrupt: str, image_mode: str
) -> tuple[dict[str, list[tuple]], frozenset[str]]:
    """Verify the camera images of every keyframe once, before building.

    Returns each keyframe's image signature (relative path, size, mtime_ns, plus a blake2b content hash in bytes
    mode, where the rows embed the bytes) for the chunk fingerprints, and the keyframes skipped for a corrupt image.
    FileNotFoundError for a missing image; ValueError for a corrupt one when `on_corrupt='error'`. Both name the
    sample, the camera and the file.
    """
    signatures: dict[str, list[tuple]] = {}
    corrupt: list[tuple[str, str, str, str]] = []
    for tokens in keyframes.values():
        for token in tokens:
            signature = []
            for camera, name in zip(CAMERA_NAMES, reader.camera_fields(token)["image_paths"]):
                path = Path(name)
                if not path.is_file():
                    raise FileNotFoundError(f"sample {token}: {camera} image not found at {path}")
                stat = path.stat()
                entry = (os.path.relpath(path, reader.dataroot), stat.st_size, stat.st_mtime_ns)
                if image_mode == "bytes":
                    entry += (hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest(),)
                signature.append(entry)
                problem = _image_problem(path)
                if problem is not None:
                    corrupt.append((token, camera, str(path), problem))
            signatures[token] = signature
    if corrupt:
        token, camera, path, problem = corrupt[0]
        first = f"sample {token}: {camera} image {path}: {problem}"
        skipped = sorted({entry[0] for entry in corrupt})
        if on_corrupt == "error":
            raise ValueError(
                f"{len(corrupt)} corrupt camera images in {len(skipped)} keyframes, first: {first}; "
                "use on_corrupt='skip' to leave those keyframes out"
            )
        logger.warning(
            "skipping %d of %d keyframes with corrupt camera images (first: %s)", len(skipped), len(signatures), first
        )
        return signatures, frozenset(skipped)
    return signatures, frozenset()


def _file_signature(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the existing files among `paths`: changes when an input file changes."""
    return [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in paths if path.is_file()]


def _fingerprint(**inputs: object) -> str:
    """A 32-hex-digit fingerprint of JSON-serialisable build inputs."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def build_dataset(
    dataroot: str | os.PathLike,
    version: str,
    *,
    occ3d_root: str | os.PathLike | None = None,
    qa_root: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    configs: Sequence[str] | None = None,
    image_mode: str = "path",
    on_missing_occ: str = "skip",
    on_corrupt: str = "skip",
    scenes_per_chunk: int = 50,
    cache_dir: str | os.PathLike | None = None,
    can_bus: str | os.PathLike | None = None,
    require_steering: bool = False,
    num_proc: int = 1,
) -> dict[str, DatasetDict]:
    """Build the planning / qa / occupancy datasets of a nuScenes dataroot.

    Args:
        dataroot: nuScenes folder (`<version>/*.json`, `samples/`).
        version: nuScenes version, e.g. `"v1.0-mini"`.
        occ3d_root: Occ3D-nuScenes `gts` folder (`<scene>/<token>/labels.npz`); needed for `occupancy`.
        qa_root: folder with `NuScenes_{train,val}_questions.json`; needed for `qa`. Questions join keyframes by
            sample token whatever file they come from; questions about other keyframes are ignored.
        splits: official split names (default: the version's, see `constants.NUSCENES_VERSION_SPLITS`); splits without any
            scene in the dataroot are left out.
        configs: subset of `DATASET_CONFIG_NAMES` (default: `planning`, plus `qa` / `occupancy` when their root
            is given).
        image_mode: `"path"` stores absolute image paths (small, local), `"bytes"` embeds the JPEG bytes.
        on_missing_occ: `"skip"` leaves keyframes without labels.npz out of `occupancy` (count logged), `"error"`
            raises FileNotFoundError before building.
        on_corrupt: `"skip"` leaves keyframes with a corrupt camera image (empty, unreadable, truncated) out of every
            config (count logged), `"error"` raises ValueError naming the sample, camera and file before building.
            A missing image is always a FileNotFoundError.
        scenes_per_chunk: scenes per cached chunk (the unit of resumption).
        cache_dir: where chunks are cached (default: the `datasets` cache).
        can_bus, require_steering: the CAN bus expansion folder and whether its absence is an error (see
            `NuScenesReader`; default: `<dataroot>/can_bus` or `can_bus/` beside the dataroot, else no steering).
        num_proc: processes writing the chunks of a split (forked; the rows are identical to a one-process build).

    Returns:
        `{config: DatasetDict({split: Dataset})}` for the requested configs; a split with no row in a config (no
        question or no occupancy label for any of its keyframes) is left out of that config's `DatasetDict`. Each
        split's `DatasetInfo` records the source (nuScenes, or the sim's scenes: `data.provenance`).
    """
    root = check_dataroot(dataroot, version)
    source = read_dataroot_source(root)
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode: expected one of {IMAGE_MODES}, got {image_mode!r}")
    if on_missing_occ not in ON_MISSING_OCC:
        raise ValueError(f"on_missing_occ: expected one of {ON_MISSING_OCC}, got {on_missing_occ!r}")
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"on_corrupt: expected one of {ON_CORRUPT}, got {on_corrupt!r}")
    if scenes_per_chunk < 1:
        raise ValueError(f"scenes_per_chunk: expected >= 1, got {scenes_per_chunk}")
    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc: expected an int >= 1, got {num_proc!r}")
    configs = _resolve_configs(configs, occ3d_root, qa_root)
    if occ3d_root is not None and not Path(occ3d_root).is_dir():
        raise FileNotFoundError(f"occ3d_root: {str(occ3d_root)!r} is not a directory")
    questions = load_qa_root(qa_root) if "qa" in configs else None
    reader = NuScenesReader(root, version, can_bus=can_bus, require_steering=require_steering)
    split_scenes = reader.split_scenes(splits)
    keyframes = {scene: reader.scene_keyframes(scene) for names in split_scenes.values() for scene in names}
    skipped = _check_occupancy(occ3d_root, keyframes, on_missing_occ) if "occupancy" in configs else []
    image_signatures, skipped_images = _check_images(reader, keyframes, on_corrupt, image_mode)
    sources = _Sources(
        reader=reader,
        image_mode=image_mode,
        questions=questions,
        occ3d_root=None if occ3d_root is None else Path(occ3d_root).resolve(),
        skipped_occupancy=frozenset(token for _, token in skipped),
        skipped_images=skipped_images,
    )
    inputs = {
        "format": _FORMAT_REVISION,
        "package": __version__,
        "dataroot": str(reader.dataroot),
        "version": version,
        "tables": _file_signature(sorted((root / version).glob("*.json"))),
        "can_bus": _file_signature(sorted(reader.can_bus_dir.glob("*.json"))) if reader.can_bus_dir else None,
        "image_mode": image_mode,
        "scenes_per_chunk": scenes_per_chunk,
    }
    built: dict[str, DatasetDict] = {}
    for config in configs:
        config_inputs = {**inputs, "config": config}
        if config == "qa":
            config_inputs["qa"] = _file_signature([qa_file(qa_root, split) for split in QA_FILE_SPLITS])
        if config == "occupancy":
            config_inputs["occ3d_root"] = str(sources.occ3d_root)
        splits_built = {}
        for split, scene_names in split_scenes.items():
            dataset = _build_split(
                config, split, scene_names, keyframes, sources, config_inputs, image_signatures, cache_dir, num_proc
            )
            if dataset is None:
                logger.warning("%s/%s: no rows (no question or occupancy label for its keyframes)", config, split)
            else:
                source.record_in(dataset.info)
                splits_built[split] = dataset
        built[config] = DatasetDict(splits_built)
    return built


def _build_split(
    config: str,
    split: str,
    scene_names: list[str],
    keyframes: dict[str, list[str]],
    sources: _Sources,
    inputs: dict,
    image_signatures: dict[str, list[tuple]],
    cache_dir: str | os.PathLike | None,
    num_proc: int = 1,
) -> Dataset | None:
    """One config's split, generated (or reloaded from the cache) chunk by chunk; None if it has no row.

    A chunk's fingerprint covers what its rows embed: the build inputs, its keyframes (and which are skipped), the
    signatures of their camera images and of their Occ3D labels. With `num_proc > 1` the chunks are first written by
    that many forked processes, each into its own cache entry (the same one a sequential build writes); the chunks
    are then loaded from the cache in order, so the result is identical to a sequential build.
    """
    jobs = [
        (config, split, list(chunk), keyframes, sources, inputs, image_signatures, cache_dir)
        for chunk in _chunks(scene_names, inputs["scenes_per_chunk"])
        if any(_has_rows(config, token, sources) for scene in chunk for token in keyframes[scene])
    ]
    progress = {"desc": f"{config}/{split}", "unit": "chunk", "disable": are_progress_bars_disabled()}
    if num_proc > 1 and len(jobs) > 1:
        _FORKED_JOBS[:] = jobs
        with multiprocessing.get_context("fork").Pool(min(num_proc, len(jobs))) as pool:
            for _ in tqdm(pool.imap_unordered(_write_forked_chunk, range(len(jobs))), total=len(jobs), **progress):
                pass
        _FORKED_JOBS.clear()
        parts = [_chunk_dataset(*job) for job in jobs]
    else:
        parts = [_chunk_dataset(*job) for job in tqdm(jobs, **progress)]
    if not parts:
        return None
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _chunk_dataset(
    config: str,
    split: str,
    chunk: list[str],
    keyframes: dict[str, list[str]],
    sources: _Sources,
    inputs: dict,
    image_signatures: dict[str, list[tuple]],
    cache_dir: str | os.PathLike | None,
) -> Dataset:
    """The rows of one chunk of scenes, written to (or read from) its cache entry, fingerprinted by what they embed
    (see `_build_split`)."""
    chunk_keyframes = [(scene, token) for scene in chunk for token in keyframes[scene]]
    labels = [occupancy_path(sources.occ3d_root, *pair) for pair in chunk_keyframes] if config == "occupancy" else []
    return Dataset.from_generator(
        _generate_rows,
        features=config_features(config),
        cache_dir=None if cache_dir is None else str(cache_dir),
        gen_kwargs={"config": config, "scene_names": chunk, "sources": sources},
        split=split,
        fingerprint=_fingerprint(
            **inputs,
            split=split,
            keyframes=chunk_keyframes,
            skipped_images=sorted(token for _, token in chunk_keyframes if token in sources.skipped_images),
            images=[image_signatures[token] for _, token in chunk_keyframes] if config in CONFIGS_WITH_CAMERAS else [],
            labels=_file_signature(labels),
        ),
        writer_batch_size=_WRITER_BATCH_SIZE,
    )


# `_chunk_dataset` arguments of the chunks a forked pool writes (set before forking, so workers inherit the reader
# instead of unpickling its tables).
_FORKED_JOBS: list[tuple] = []


def _write_forked_chunk(index: int) -> None:
    _chunk_dataset(*_FORKED_JOBS[index])


def _resolve_configs(
    configs: Sequence[str] | None, occ3d_root: str | os.PathLike | None, qa_root: str | os.PathLike | None
) -> tuple[str, ...]:
    """The configs to build in `DATASET_CONFIG_NAMES` order, checking that each has its input."""
    if configs is None:
        configs = ["planning"] + ["qa"] * (qa_root is not None) + ["occupancy"] * (occ3d_root is not None)
    unknown = [name for name in configs if name not in DATASET_CONFIG_NAMES]
    if unknown or not configs:
        raise ValueError(f"configs: expected a non-empty subset of {DATASET_CONFIG_NAMES}, got {list(configs)}")
    if "qa" in configs and qa_root is None:
        raise ValueError("configs: 'qa' needs qa_root (the folder of NuScenes_{train,val}_questions.json)")
    if "occupancy" in configs and occ3d_root is None:
        raise ValueError("configs: 'occupancy' needs occ3d_root (the Occ3D-nuScenes gts folder)")
    if "qa" in configs and IMAGES_CONFIG not in configs:
        raise ValueError(
            f"configs: 'qa' needs {IMAGES_CONFIG!r}, whose rows hold the images of the questions' keyframes"
        )
    return tuple(name for name in DATASET_CONFIG_NAMES if name in configs)


def _check_occupancy(
    occ3d_root: str | os.PathLike, keyframes: dict[str, list[str]], on_missing_occ: str
) -> list[tuple[str, str]]:
    """(scene, token) of keyframes without labels.npz; FileNotFoundError instead when `on_missing_occ='error'`."""
    pairs = [(scene, token) for scene, tokens in keyframes.items() for token in tokens]
    missing = [(scene, token) for scene, token in pairs if not occupancy_path(occ3d_root, scene, token).is_file()]
    if missing and on_missing_occ == "error":
        scene, token = missing[0]
        raise FileNotFoundError(
            f"occ3d_root: no labels for {len(missing)} of {len(pairs)} keyframes, first: sample {token} of {scene} "
            f"(expected {occupancy_path(occ3d_root, scene, token)}); use on_missing_occ='skip' to leave them out"
        )
    if missing:
        logger.warning("occupancy: skipping %d of %d keyframes without Occ3D labels", len(missing), len(pairs))
    return missing


def _has_rows(config: str, token: str, sources: _Sources) -> bool:
    """Whether a keyframe contributes at least one row to a config."""
    if token in sources.skipped_images:
        return False
    if config == "qa":
        return token in sources.questions
    if config == "occupancy":
        return token not in sources.skipped_occupancy
    return True


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """Consecutive slices of at most `size` items."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def save_dataset(
    datasets: dict[str, DatasetDict], out_dir: str | os.PathLike, *, version: str, image_mode: str
) -> Path:
    """Write built datasets in two layouts plus the dataset card; returns `out_dir`.

    Layout (the same files a Hub repo of these configs holds, plus the Arrow copies):
      `README.md`                                 dataset card; its YAML maps each config to its Parquet shards
      `<config>/<split>-00000-of-0000N.parquet`  -> `load_dataset(out_dir, config)`
      `arrow/<config>/`                           -> `load_from_disk(out_dir / "arrow" / config)`
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for config, dataset_dict in datasets.items():
        dataset_dict.save_to_disk(str(out / ARROW_DIR / config))
        for split, dataset in dataset_dict.items():
            num_shards = max(1, math.ceil(dataset.data.nbytes / _MAX_PARQUET_SHARD_BYTES))
            (out / config).mkdir(parents=True, exist_ok=True)
            for old in (out / config).glob(f"{split}-*.parquet"):
                old.unlink()
            for index in range(num_shards):
                shard = dataset.shard(num_shards, index, contiguous=True)
                shard.to_parquet(str(out / config / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"))
    (out / "README.md").write_text(dataset_card(datasets, version=version, image_mode=image_mode), encoding="utf-8")
    return out


def push_to_hub(
    datasets: dict[str, DatasetDict],
    repo_id: str,
    *,
    card: str,
    private: bool = False,
    token: str | None = None,
) -> None:
    """Create the dataset repo, upload the card, then push each config (Parquet shards, images embedded).

    `DatasetDict.push_to_hub` adds each config's `configs`/`dataset_info` entries to the card's YAML.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_file(
        path_or_fileobj=card.encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Add dataset card",
    )
    for config, dataset_dict in datasets.items():
        dataset_dict.push_to_hub(repo_id, config_name=config, private=private, token=token)
