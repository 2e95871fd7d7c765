"""nuScenes -> HF datasets conversion: throughput, bytes per keyframe per config, occupancy storage, peak RSS.

Generates two sim dataroots (v1.0-trainval scene names), `--scenes` and 10 x `--scenes` scenes, and builds all three
configs of each in a fresh subprocess (images as paths), then saves them (Parquet + Arrow copies with the images
embedded). Reported per config: keyframes/s of `build_dataset`, Arrow bytes per row without images, bytes per
keyframe of the saved Parquet and Arrow folders; the RSS of the build process sampled every 20 ms (flat memory: it
stays level through each build and the 10 x build peaks like the small one); and the Arrow/Parquet bytes per
keyframe of the occupancy arrays stored as fixed-shape `Array3D` vs the compressed bytes `occvla_hf.data.occ3d`
writes.

    python benchmarks/bench_data.py [--scenes 2] [--scale 0.25] [--work DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from occvla_hf.constants import OCC_GRID_SHAPE
from occvla_hf.data.occ3d import OCC_ARRAY_NAMES, encode_occupancy, read_occupancy

VERSION = "v1.0-trainval"


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


class RssSampler:
    """Samples the resident set size of this process every `period_s` in a background thread."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (perf_counter s, RSS MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self._stop.is_set():
            with open("/proc/self/statm") as statm:
                self.samples.append((time.perf_counter(), int(statm.read().split()[1]) * page_mib))
            time.sleep(self.period_s)

    def peaks(self, start: float, end: float, parts: int) -> list[float]:
        """Peak RSS (MiB) in each of `parts` equal time slices of [start, end]."""
        edges = np.linspace(start, end, parts + 1)
        return [
            max((rss for t, rss in self.samples if low <= t <= high), default=float("nan"))
            for low, high in itertools.pairwise(edges)
        ]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def build_worker(dataroot: str, work: str) -> None:
    """Build + save all configs of `dataroot`; print one JSON line of timings, sizes and RSS."""
    from occvla_hf.data.card import bytes_per_row
    from occvla_hf.data.hub import build_dataset, save_dataset

    inputs = {
        "planning": {},
        "qa": {"qa_root": Path(dataroot) / "nuscenes_qa"},
        "occupancy": {"occ3d_root": Path(dataroot) / "gts"},
    }
    sampler = RssSampler()
    report: dict[str, dict] = {}
    built = {}
    for config, kwargs in inputs.items():
        start = time.perf_counter()
        built[config] = build_dataset(dataroot, VERSION, configs=[config], cache_dir=Path(work) / "cache", **kwargs)
        built[config] = built[config][config]
        end = time.perf_counter()
        rows = sum(len(split) for split in built[config].values())
        keyframes = sum(len(split.unique("sample_token")) for split in built[config].values())
        per_row = bytes_per_row(built[config])
        report[config] = {
            "seconds": end - start,
            "rows": rows,
            "keyframes": keyframes,
            "arrow_bytes_per_row_no_images": sum(per_row[s] * len(d) for s, d in built[config].items()) / rows,
            "rss_quarters_mib": sampler.peaks(start, end, 4),
        }
    start = time.perf_counter()
    out = save_dataset(built, Path(work) / "out", version=VERSION, image_mode="path")
    save_peak_mib = sampler.peaks(start, time.perf_counter(), 1)[0]
    sampler.stop()
    for config, entry in report.items():
        entry["parquet_bytes_per_keyframe"] = folder_bytes(out / config) / entry["keyframes"]
        entry["arrow_saved_bytes_per_keyframe"] = folder_bytes(out / "arrow" / config) / entry["keyframes"]
    print(json.dumps({"configs": report, "save_peak_rss_mib": save_peak_mib}))


def occupancy_storage(gts: Path, limit: int = 20) -> dict[str, dict[str, float]]:
    """Arrow and Parquet bytes per keyframe of Occ3D labels as Array3D arrays vs compressed bytes."""
    paths = sorted(gts.rglob("labels.npz"))[:limit]
    raw_features = datasets.Features(
        {
            "semantics": datasets.Array3D(OCC_GRID_SHAPE, "uint8"),
            "mask_camera": datasets.Array3D(OCC_GRID_SHAPE, "bool"),
            "mask_lidar": datasets.Array3D(OCC_GRID_SHAPE, "bool"),
        }
    )
    compressed_features = datasets.Features({name: datasets.Value("binary") for name in OCC_ARRAY_NAMES})
    layouts = {
        "Array3D uint8 + bool": (raw_features, read_occupancy),
        "zstd bytes (stored)": (compressed_features, lambda path: encode_occupancy(read_occupancy(path))),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (features, row) in layouts.items():
            dataset = datasets.Dataset.from_generator(
                lambda row=row: (row(path) for path in paths), features=features, cache_dir=tmp
            )
            dataset.save_to_disk(f"{tmp}/{len(results)}")
            dataset.to_parquet(f"{tmp}/{len(results)}.parquet")
            results[name] = {
                "arrow": folder_bytes(Path(f"{tmp}/{len(results)}")) / len(paths),
                "parquet": Path(f"{tmp}/{len(results)}.parquet").stat().st_size / len(paths),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2, help="scenes of the small dataroot (the large has 10x)")
    parser.add_argument("--scale", type=float, default=0.25, help="camera resolution factor of the sim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--worker", nargs=2, metavar=("DATAROOT", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        build_worker(*args.worker)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_data_"))
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, datasets "
          f"{datasets.__version__}, pyarrow {pa.__version__}, sim scale {args.scale}, work {work}")  # fmt: skip
    runs = {}
    for num_scenes in (args.scenes, 10 * args.scenes):
        root = work / f"sim_{num_scenes}"
        if not (root / VERSION / "sample.json").is_file():
            from occvla_hf.sim import generate_dataset

            start = time.perf_counter()
            generate_dataset(root, num_scenes=num_scenes, seed=args.seed, scale=args.scale, version=VERSION)
            print(f"# generated {num_scenes} scenes in {time.perf_counter() - start:.0f} s")
        completed = subprocess.run(
            [sys.executable, __file__, "--worker", str(root), str(work / f"build_{num_scenes}")],
            check=True,
            capture_output=True,
            text=True,
        )
        runs[num_scenes] = json.loads(completed.stdout.strip().splitlines()[-1])

    print("\n| scenes | config | rows | keyframes | keyframes/s | Arrow B/row (no images) | Parquet B/keyframe "
          "| saved Arrow B/keyframe (images embedded) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for num_scenes, run in runs.items():
        for config, entry in run["configs"].items():
            print(f"| {num_scenes} | {config} | {entry['rows']} | {entry['keyframes']} "
                  f"| {entry['keyframes'] / entry['seconds']:.1f} | {entry['arrow_bytes_per_row_no_images']:,.0f} "
                  f"| {entry['parquet_bytes_per_keyframe']:,.0f} "
                  f"| {entry['arrow_saved_bytes_per_keyframe']:,.0f} |")  # fmt: skip
    print("\n| scenes | config | peak RSS (MiB) in each quarter of the build | peak RSS of save_dataset (MiB) |")
    print("|---|---|---|---|")
    for num_scenes, run in runs.items():
        for config, entry in run["configs"].items():
            quarters = " / ".join(f"{rss:.0f}" for rss in entry["rss_quarters_mib"])
            print(f"| {num_scenes} | {config} | {quarters} | {run['save_peak_rss_mib']:.0f} |")
    print("\n| occupancy storage | Arrow B/keyframe | Parquet B/keyframe |")
    print("|---|---|---|")
    for name, sizes in occupancy_storage(work / f"sim_{args.scenes}" / "gts").items():
        print(f"| {name} | {sizes['arrow']:,.0f} | {sizes['parquet']:,.0f} |")


if __name__ == "__main__":
    main()
