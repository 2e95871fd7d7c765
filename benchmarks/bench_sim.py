"""Generation speed of the procedural nuScenes-format world (`occvla_hf.sim`).

Part 1 times `generate_dataset` end to end (ten v1.0-mini scenes of 20 s, six cameras, by default at scale 0.25)
and reports keyframes/s, wall and CPU seconds, and the bytes written. Part 2 breaks one scene down by stage
(simulation, camera ray casting + shading, JPEG encoding, lidar, occupancy labels) on a single core.

    python benchmarks/bench_sim.py [--scenes 10] [--scale 0.25] [--workers 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from occvla_hf.sim import SimConfig, dataset_scene, generate_dataset
from occvla_hf.sim.cameras import camera_rays, lidar_rays
from occvla_hf.sim.lidar import lidar_point_cloud
from occvla_hf.sim.occupancy import (
    camera_voxel_projections,
    labels_npz_bytes,
    lidar_voxel_projection,
    semantics,
    visibility_mask,
)
from occvla_hf.sim.render import cast_camera, cast_lidar, noise_texture, shade_camera


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def end_to_end(work: Path, scenes: int, config: SimConfig, workers: int) -> dict[str, float]:
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    summary = generate_dataset(
        work / f"w{workers}", num_scenes=scenes, seed=0, config=config, num_workers=workers, progress=False
    )
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    return {
        "workers": workers,
        "keyframes": summary.num_samples,
        "wall_s": wall,
        "cpu_s": cpu,
        "kf_per_s": summary.num_samples / wall,
        "mb": folder_bytes(summary.dataroot) / 1e6,
    }


def stages(config: SimConfig) -> dict[str, float]:
    """Seconds per keyframe of each stage of scene 0."""
    t = defaultdict(float)
    start = time.perf_counter()
    scene = dataset_scene(0, 0, config)
    t["simulate (per keyframe)"] = (time.perf_counter() - start) / scene.num_keyframes
    cams = camera_rays(config.scale)
    lidar = lidar_rays(config.lidar_beams, config.lidar_mask_oversampling, config.lidar_azimuth_steps)
    cam_proj = camera_voxel_projections(config.scale)
    lidar_proj = lidar_voxel_projection(config.lidar_beams, config.lidar_mask_oversampling, config.lidar_azimuth_steps)
    texture = noise_texture(0)
    ground = scene.world.ground
    for k in range(scene.num_keyframes):
        ego_xy, ego_yaw = scene.ego_pose(k)
        boxes = scene.frame_boxes(k)
        s = time.perf_counter()
        casts = [cast_camera(r, boxes) for r in cams]
        t["6 cameras: ray cast"] += time.perf_counter() - s
        s = time.perf_counter()
        images = [
            shade_camera(r, c, boxes, ground, ego_xy, ego_yaw, scene.sun_ego(k), texture) for r, c in zip(cams, casts)
        ]
        t["6 cameras: shading"] += time.perf_counter() - s
        s = time.perf_counter()
        for image in images:
            Image.fromarray(image).save(io.BytesIO(), format="JPEG", quality=config.jpeg_quality, subsampling=0)
        t["6 cameras: JPEG"] += time.perf_counter() - s
        s = time.perf_counter()
        lidar_cast = cast_lidar(lidar, boxes)
        lidar_point_cloud(lidar, lidar_cast, boxes, ground, ego_xy, ego_yaw, texture, config.lidar_max_range_m)
        t["lidar: cast + points"] += time.perf_counter() - s
        s = time.perf_counter()
        labels_npz_bytes(
            semantics(ground, ego_xy, ego_yaw, boxes),
            visibility_mask([lidar_proj], [lidar_cast]),
            visibility_mask(cam_proj, casts),
        )
        t["occupancy: semantics + masks + npz"] += time.perf_counter() - s
    return {name: (v if "simulate" in name else v / scene.num_keyframes) for name, v in t.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    config = SimConfig(scale=args.scale)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, numpy {np.__version__}, Python {platform.python_version()}"
    )
    print(
        f"# {args.scenes} scenes x {config.num_keyframes} keyframes, 6 cameras at "
        f"{config.image_size_px[0]}x{config.image_size_px[1]}, lidar {config.lidar_beams} x "
        f"{config.lidar_azimuth_steps} rays\n"
    )
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = [end_to_end(Path(tmp), args.scenes, config, w) for w in sorted({1, args.workers})]
    print("| workers | keyframes | wall s | CPU s | keyframes/s | MB written |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['keyframes']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['kf_per_s']:.2f} "
            f"| {r['mb']:.0f} |"
        )
    print("\n| stage (scene 0, one core) | ms / keyframe |")
    print("|---|---|")
    for name, seconds in stages(config).items():
        print(f"| {name} | {1000 * seconds:.1f} |")


if __name__ == "__main__":
    main()
