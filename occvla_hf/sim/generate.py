"""Dataset generation: simulate, render and write scenes as a nuScenes dataroot with Occ3D and nuScenes-QA files.

Layout of `out_dir` (what nuScenes, Occ3D-nuScenes and nuScenes-QA ship):
    <version>/*.json                                   nuScenes tables, and traffic_light.json: the light the
                                                       ego faces (TRAFFIC_LIGHT_TABLE)
    samples/CAM_*/<log>__CAM_*__<timestamp>.jpg        keyframe images
    samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin
    maps/<token>.png                                   semantic prior (driveable area), 0.1 m/px
    gts/<scene_name>/<sample_token>/labels.npz         Occ3D labels
    nuscenes_qa/NuScenes_{train,val}_questions.json    nuScenes-QA questions
Scene i is simulated from the seed sequence (seed, i), so the output is a pure function of (seed, config, number of
scenes, version) whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from occvla_hf.constants import LIDAR_CHANNEL, PROJECT_LICENSE, SIM_PROVENANCE_FILE, TRAFFIC_LIGHT_TABLE
from occvla_hf.geometry import rotation_to_quaternion, yaw_to_quaternion
from occvla_hf.sim.cameras import LIDAR_TRANSLATION_M, camera_rays, lidar_rays, lidar_rotation
from occvla_hf.sim.categories import QA_STATUS_WORDS, qa_word_of
from occvla_hf.sim.config import DEFAULT_SEED, DEFAULT_VERSION, PRESETS, SimConfig, resolve_config
from occvla_hf.sim.geometry import world_to_frame_2d
from occvla_hf.sim.lidar import lidar_point_cloud
from occvla_hf.sim.nuscenes_tables import (
    TABLE_NAMES,
    GlobalFrame,
    scene_names,
    taxonomy_tables,
    token,
    visibility_token,
    write_tables,
)
from occvla_hf.sim.occupancy import (
    camera_voxel_projections,
    labels_npz_bytes,
    lidar_voxel_projection,
    occ3d_masks,
    semantics,
    visibility_mask,
)
from occvla_hf.sim.qa import QA_MIN_LIDAR_POINTS, QA_RANGE_M, QAObject, generate_questions
from occvla_hf.sim.render import (
    TEXTURE_SEED,
    FrameBoxes,
    cast_camera,
    cast_lidar,
    jpeg_bytes,
    noise_texture,
    shade_camera,
)
from occvla_hf.sim.scene import Scene, simulate_scene
from occvla_hf.version import __version__

QA_DIRNAME: str = "nuscenes_qa"
OCC3D_DIRNAME: str = "gts"
_OUTPUT_ENTRIES: tuple[str, ...] = ("samples", "maps", OCC3D_DIRNAME, QA_DIRNAME, SIM_PROVENANCE_FILE)
_EPOCH = dt.datetime(2026, 1, 5, 8, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


@dataclass(frozen=True)
class GenerationSummary:
    """What `generate_dataset` wrote."""

    dataroot: Path
    version: str
    num_scenes: int
    num_samples: int
    num_annotations: int
    num_questions: int
    scene_names: tuple[str, ...]
    qa_files: tuple[Path, ...]
    seconds: float


@dataclass
class SceneOutput:
    """Table records and questions of one scene (files are already on disk)."""

    name: str
    split: str
    tables: dict[str, list[dict]] = field(default_factory=dict)
    questions: list[dict] = field(default_factory=list)


def generate_dataset(
    out_dir: str | Path,
    *,
    num_scenes: int | None = None,
    seed: int | None = None,
    scale: float | None = None,
    version: str | None = None,
    preset: str | None = None,
    config: SimConfig | None = None,
    num_workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> GenerationSummary:
    """Write a nuScenes-format dataroot of `num_scenes` procedural scenes to `out_dir`.

    Args:
        out_dir: The dataroot to create.
        num_scenes: Number of scenes; defaults to the preset's.
        seed: Master seed; scene i uses the seed sequence (seed, i). Defaults to the preset's (0 without preset).
        scale: Image size factor applied to 1600 x 900; defaults to the config's (0.25 without preset).
        version: "v1.0-mini" (at most 10 scenes, official mini names) or "v1.0-trainval" (official train/val names);
            defaults to the preset's ("v1.0-mini" without preset).
        preset: A name from `PRESETS` ("mini", "tiny", "scale", "scale_heldout") providing the scene count, config,
            seed and version.
        config: Full settings (overrides the preset's config); `scale` still applies on top.
        num_workers: Processes rendering scenes in parallel (the output does not depend on it).
        overwrite: Replace the outputs of an earlier run in `out_dir` instead of failing.
        progress: Show a progress bar over scenes.
    """
    start = time.perf_counter()
    cfg = resolve_config(preset, config, scale=scale)
    if num_scenes is None:
        if preset is None:
            raise ValueError("num_scenes: required when no preset is given")
        num_scenes = PRESETS[preset].num_scenes
    if seed is None:
        seed = PRESETS[preset].seed if preset is not None else DEFAULT_SEED
    if version is None:
        version = PRESETS[preset].version if preset is not None else DEFAULT_VERSION
    for name, value in (("num_scenes", num_scenes), ("seed", seed), ("num_workers", num_workers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {value!r}")
    if seed < 0:
        raise ValueError(f"seed: expected >= 0 (a numpy SeedSequence entropy), got {seed}")
    names = scene_names(version, num_scenes)
    if num_workers < 1:
        raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
    dataroot = Path(out_dir)
    _prepare(dataroot, version, overwrite)

    outputs: list[SceneOutput | None] = [None] * num_scenes
    jobs = [(dataroot, version, i, name, split, seed, cfg) for i, (name, split) in enumerate(names)]
    bar = tqdm(total=num_scenes, desc="sim scenes", unit="scene", disable=not progress)
    if num_workers == 1:
        for job in jobs:
            outputs[job[2]] = generate_scene(*job)
            bar.update()
    else:
        # fork (where available) spares each worker re-importing the package; workers only use numpy and PIL.
        context = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
            futures = {pool.submit(generate_scene, *job): job[2] for job in jobs}
            for future in as_completed(futures):
                outputs[futures[future]] = future.result()
                bar.update()
    bar.close()

    tables = taxonomy_tables()
    for name in TABLE_NAMES:
        tables.setdefault(name, [])
    for out in outputs:
        for name, records in out.tables.items():
            tables[name].extend(records)
    write_tables(dataroot / version, tables)
    qa_files = _write_questions(dataroot / QA_DIRNAME, outputs, seed, version)
    _write_provenance(dataroot, version=version, num_scenes=num_scenes, seed=seed, preset=preset, config=cfg)
    return GenerationSummary(
        dataroot=dataroot,
        version=version,
        num_scenes=num_scenes,
        num_samples=len(tables["sample"]),
        num_annotations=len(tables["sample_annotation"]),
        num_questions=sum(len(o.questions) for o in outputs),
        scene_names=tuple(o.name for o in outputs),
        qa_files=qa_files,
        seconds=time.perf_counter() - start,
    )


def _prepare(dataroot: Path, version: str, overwrite: bool) -> None:
    existing = [dataroot / e for e in (version, *_OUTPUT_ENTRIES) if (dataroot / e).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"out_dir: {dataroot} already holds generated data ({existing[0].name}); "
            "pass overwrite=True (--overwrite) to replace it"
        )
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    dataroot.mkdir(parents=True, exist_ok=True)


def _write_provenance(
    dataroot: Path, *, version: str, num_scenes: int, seed: int, preset: str | None, config: SimConfig
) -> None:
    """The marker that says the dataroot holds procedural scenes, not nuScenes: generator, package version, seed,
    settings and the licence of the output (the package's). `data build` reads it into the dataset card."""
    record = {
        "generator": "occvla_hf.sim",
        "package_version": __version__,
        "license": PROJECT_LICENSE,
        "seed": seed,
        "version": version,
        "num_scenes": num_scenes,
        "preset": preset,
        "config": dataclasses.asdict(config),
    }
    (dataroot / SIM_PROVENANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _write_questions(qa_dir: Path, outputs: list[SceneOutput], seed: int, version: str) -> tuple[Path, ...]:
    qa_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "val"):
        questions = [q for o in outputs for q in o.questions if q["split"] == split]
        info = {
            "description": f"nuScenes-QA format questions of the occvla_hf.sim {version} scenes ({split})",
            "version": "1.0",
            "seed": seed,
        }
        path = qa_dir / f"NuScenes_{split}_questions.json"
        with open(path, "w") as f:
            json.dump({"info": info, "questions": questions}, f)
        paths.append(path)
    return tuple(paths)


# ---------------------------------------------------------------------------------------------------- one scene


def dataset_scene(seed: int, index: int, config: SimConfig) -> Scene:
    """The simulated world state behind scene `index` of `generate_dataset(..., seed=seed)` with `config`."""
    return simulate_scene(np.random.SeedSequence([seed, index]), config)


def scene_placement(seed: int, index: int, scene: Scene) -> tuple[GlobalFrame, dt.datetime]:
    """Where (world -> global frame) and when (capture start) scene `index` is placed."""
    meta = np.random.default_rng(np.random.SeedSequence([seed, index, 1]))
    frame = GlobalFrame.for_ground(scene.world.ground, int(meta.integers(4)))
    captured = _EPOCH + dt.timedelta(days=int(meta.integers(0, 300)), seconds=int(meta.integers(0, 10 * 3600)))
    return frame, captured


def generate_scene(
    dataroot: Path, version: str, index: int, name: str, split: str, seed: int, config: SimConfig
) -> SceneOutput:
    """Simulate, render and write scene `index`; return its table records and questions."""
    scene = dataset_scene(seed, index, config)
    frame, captured = scene_placement(seed, index, scene)
    writer = _SceneWriter(dataroot, index, name, split, seed, config, scene, frame, captured)
    for k in range(scene.num_keyframes):
        writer.write_keyframe(k)
    return writer.finish()


class _SceneWriter:
    """Writes one scene's files keyframe by keyframe and accumulates its table records."""

    def __init__(
        self,
        dataroot: Path,
        index: int,
        name: str,
        split: str,
        seed: int,
        config: SimConfig,
        scene: Scene,
        frame: GlobalFrame,
        captured: dt.datetime,
    ) -> None:
        self.dataroot, self.index, self.name, self.seed, self.config = dataroot, index, name, seed, config
        self.scene, self.frame = scene, frame
        self.split = "train" if split.endswith("train") else "val"
        self.out = SceneOutput(name, split, {t: [] for t in TABLE_NAMES})
        self.logfile = f"n015-{captured:%Y-%m-%d-%H-%M-%S}+0800"
        self.start_us = int(captured.timestamp() * 1e6)
        self.cams = camera_rays(config.scale)
        self.lidar = lidar_rays(config.lidar_beams, config.lidar_mask_oversampling, config.lidar_azimuth_steps)
        self.cam_projections = camera_voxel_projections(config.scale)
        self.lidar_projection = lidar_voxel_projection(
            config.lidar_beams, config.lidar_mask_oversampling, config.lidar_azimuth_steps
        )
        self.texture = noise_texture(TEXTURE_SEED)
        self.instances: dict[int, list[str]] = {}  # agent index -> its annotation tokens in time order
        self.prev_sample = ""
        self.prev_records: dict[str, dict] = {}  # channel -> its previous sample_data record
        self._write_scene_records(captured)

    def _token(self, *parts: object) -> str:
        """Token of a record of this scene."""
        return token(self.seed, self.name, *parts)

    def _write_scene_records(self, captured: dt.datetime) -> None:
        tables = self.out.tables
        log_token, map_token = self._token("log"), self._token("map")
        tables["log"].append(
            {
                "token": log_token,
                "logfile": self.logfile,
                "vehicle": "n015",
                "date_captured": f"{captured:%Y-%m-%d}",
                "location": "boston-seaport",
            }
        )
        map_path = self.dataroot / "maps" / f"{map_token}.png"
        map_path.parent.mkdir(parents=True, exist_ok=True)
        self.frame.map_mask(self.scene.world.ground).save(map_path, compress_level=1)
        tables["map"].append(
            {
                "token": map_token,
                "log_tokens": [log_token],
                "category": "semantic_prior",
                "filename": f"maps/{map_token}.png",
            }
        )
        for rays in self.cams:
            tables["calibrated_sensor"].append(
                {
                    "token": self._token("calibrated_sensor", rays.name),
                    "sensor_token": token("sensor", rays.name),
                    "translation": [float(v) for v in rays.origin],
                    "rotation": rotation_to_quaternion(rays.rotation),
                    "camera_intrinsic": rays.intrinsic.tolist(),
                }
            )
        tables["calibrated_sensor"].append(
            {
                "token": self._token("calibrated_sensor", LIDAR_CHANNEL),
                "sensor_token": token("sensor", LIDAR_CHANNEL),
                "translation": list(LIDAR_TRANSLATION_M),
                "rotation": rotation_to_quaternion(lidar_rotation()),
                "camera_intrinsic": [],
            }
        )

    def write_keyframe(self, k: int) -> None:
        scene, cfg = self.scene, self.config
        timestamp = self.start_us + int(round(k * cfg.keyframe_period_s * 1e6))
        sample_token = self._token("sample", k)
        ego_xy, ego_yaw = scene.ego_pose(k)
        boxes = scene.frame_boxes(k)
        sun = scene.sun_ego(k)
        ground = scene.world.ground

        casts = []
        for rays in self.cams:
            cast = cast_camera(rays, boxes)
            casts.append(cast)
            image = shade_camera(rays, cast, boxes, ground, ego_xy, ego_yaw, sun, self.texture)
            payload = jpeg_bytes(image, cfg.jpeg_quality)
            self._sample_data(k, sample_token, rays.name, timestamp, payload, "jpg", rays.width, rays.height)
        lidar_cast = cast_lidar(self.lidar, boxes)
        cloud, point_ids = lidar_point_cloud(
            self.lidar, lidar_cast, boxes, ground, ego_xy, ego_yaw, self.texture, cfg.lidar_max_range_m
        )
        self._sample_data(k, sample_token, LIDAR_CHANNEL, timestamp, cloud.tobytes(), "pcd", 0, 0)

        mask_lidar, mask_camera = occ3d_masks(
            visibility_mask([self.lidar_projection], [lidar_cast]), visibility_mask(self.cam_projections, casts)
        )
        labels = labels_npz_bytes(semantics(ground, ego_xy, ego_yaw, boxes), mask_lidar, mask_camera)
        path = self.dataroot / "gts" / self.name / sample_token / "labels.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(labels)

        visible = sum(np.bincount(c.ids[c.ids >= 0], minlength=len(boxes)) for c in casts)
        hits = sum(c.hits_per_box for c in casts)
        lidar_points = np.bincount(point_ids[point_ids >= 0], minlength=len(boxes))
        anns, objects = self._annotations(k, sample_token, boxes, visible, hits, lidar_points, ego_xy, ego_yaw)
        self.out.tables["sample"].append(
            {
                "token": sample_token,
                "timestamp": timestamp,
                "prev": self.prev_sample,
                "next": "",
                "scene_token": self._token("scene"),
            }
        )
        if self.prev_sample:
            self.out.tables["sample"][-2]["next"] = sample_token
        signal = scene.track.ego_signal[k]
        if signal is not None:
            self.out.tables[TRAFFIC_LIGHT_TABLE].append(
                {
                    "token": self._token(TRAFFIC_LIGHT_TABLE, k),
                    "sample_token": sample_token,
                    "state": signal[0],
                    "stop_line_m": signal[1],
                }
            )
        self.prev_sample = sample_token
        self.out.tables["sample_annotation"].extend(anns)
        qa_rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.index, 2, k]))
        for q in generate_questions(objects, qa_rng, cfg.questions_per_keyframe):
            self.out.questions.append(
                {
                    "split": self.split,
                    "sample_token": sample_token,
                    "question": q.question,
                    "answer": q.answer,
                    "num_hop": q.num_hop,
                    "template_type": q.template_type,
                }
            )

    def _sample_data(
        self,
        k: int,
        sample_token: str,
        channel: str,
        timestamp: int,
        payload: bytes,
        fileformat: str,
        width: int,
        height: int,
    ) -> None:
        suffix = ".jpg" if fileformat == "jpg" else ".pcd.bin"
        filename = f"samples/{channel}/{self.logfile}__{channel}__{timestamp}{suffix}"
        path = self.dataroot / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        sd_token = self._token("sample_data", channel, k)
        ego_xy, ego_yaw = self.scene.ego_pose(k)
        self.out.tables["ego_pose"].append(
            {
                "token": sd_token,
                "timestamp": timestamp,
                "rotation": yaw_to_quaternion(float(self.frame.yaw(ego_yaw))),
                "translation": [*(float(v) for v in self.frame.point(ego_xy)), 0.0],
            }
        )
        prev = self.prev_records[channel]["token"] if channel in self.prev_records else ""
        record = {
            "token": sd_token,
            "sample_token": sample_token,
            "ego_pose_token": sd_token,
            "calibrated_sensor_token": self._token("calibrated_sensor", channel),
            "timestamp": timestamp,
            "fileformat": fileformat,
            "is_key_frame": True,
            "height": height,
            "width": width,
            "filename": filename,
            "prev": prev,
            "next": "",
        }
        if prev:
            self.prev_records[channel]["next"] = sd_token
        self.out.tables["sample_data"].append(record)
        self.prev_records[channel] = record

    def _annotations(
        self,
        k: int,
        sample_token: str,
        boxes: FrameBoxes,
        visible: np.ndarray,
        hits: np.ndarray,
        lidar_points: np.ndarray,
        ego_xy: np.ndarray,
        ego_yaw: float,
    ) -> tuple[list[dict], list[QAObject]]:
        """sample_annotation records of the agents within range, and the nuScenes-QA objects among them."""
        track = self.scene.track
        records, objects = [], []
        box_of_agent = {int(a): b for b, a in enumerate(boxes.annotation_index) if a >= 0}
        idx, world_boxes = self.scene.agent_boxes(k)
        for agent, wbox in zip(idx, world_boxes):
            local = world_to_frame_2d(wbox[:2], ego_xy, ego_yaw)
            distance = float(np.hypot(*local))
            if distance > self.config.annotation_range_m or agent not in box_of_agent:
                continue
            b = box_of_agent[int(agent)]
            fraction = visible[b] / hits[b] if hits[b] > 0 else 0.0
            attribute = track.attributes[k][agent]
            ann_token = self._token("sample_annotation", int(agent), k)
            chain = self.instances.setdefault(int(agent), [])
            length, width, height = (float(v) for v in wbox[3:6])
            records.append(
                {
                    "token": ann_token,
                    "sample_token": sample_token,
                    "instance_token": self._token("instance", int(agent)),
                    "visibility_token": visibility_token(fraction),
                    "attribute_tokens": [token("attribute", attribute)] if attribute else [],
                    "translation": [*(float(v) for v in self.frame.point(wbox[:2])), height / 2],
                    "size": [width, length, height],
                    "rotation": yaw_to_quaternion(float(self.frame.yaw(wbox[6]))),
                    "prev": chain[-1] if chain else "",
                    "next": "",
                    "num_lidar_pts": int(lidar_points[b]),
                    "num_radar_pts": 0,
                }
            )
            chain.append(ann_token)
            word = qa_word_of(track.categories[agent])
            if word is not None and distance <= QA_RANGE_M and lidar_points[b] >= QA_MIN_LIDAR_POINTS:
                objects.append(QAObject(word, QA_STATUS_WORDS.get(attribute), float(local[0]), float(local[1])))
        return records, objects

    def finish(self) -> SceneOutput:
        tables = self.out.tables
        by_token = {r["token"]: r for r in tables["sample_annotation"]}
        for agent, chain in sorted(self.instances.items()):
            for a, b in zip(chain[:-1], chain[1:]):
                by_token[a]["next"] = b
            tables["instance"].append(
                {
                    "token": self._token("instance", agent),
                    "category_token": token("category", self.scene.track.categories[agent]),
                    "nbr_annotations": len(chain),
                    "first_annotation_token": chain[0],
                    "last_annotation_token": chain[-1],
                }
            )
        samples = tables["sample"]
        world = self.scene.world
        tables["scene"].append(
            {
                "token": self._token("scene"),
                "log_token": self._token("log"),
                "nbr_samples": len(samples),
                "first_sample_token": samples[0]["token"],
                "last_sample_token": samples[-1]["token"],
                "name": self.name,
                "description": f"{world.layout} road, {world.section.lanes_per_direction} lane(s) per direction",
            }
        )
        return self.out
