"""`occvla-hf data build nuscenes ...`, `occvla-hf data push ...` and `occvla-hf data export-lerobot ...`: thin layers
over `occvla_hf.data.hub` and `occvla_hf.data.lerobot`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from occvla_hf.constants import DATASET_CONFIG_NAMES

# Chunk cache of `data build`, inside the output folder; removed once the build is saved (and pushed).
BUILD_CACHE_DIR: str = ".build_cache"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command with its `build nuscenes`, `push` and `export-lerobot` subcommands."""
    data = subparsers.add_parser("data", help="build nuScenes datasets and push them to the Hub")
    data_commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    build = data_commands.add_parser("build", help="build datasets from a source")
    sources = build.add_subparsers(dest="source", metavar="SOURCE", required=True)
    nuscenes = sources.add_parser(
        "nuscenes", help="nuScenes (+ Occ3D + nuScenes-QA) -> planning / qa / occupancy configs"
    )
    nuscenes.add_argument("--dataroot", required=True, help="nuScenes folder (<version>/*.json, samples/)")
    nuscenes.add_argument("--version", required=True, help="nuScenes version, e.g. v1.0-mini, v1.0-trainval")
    nuscenes.add_argument("--occ3d", help="Occ3D-nuScenes gts folder (<scene>/<token>/labels.npz)")
    nuscenes.add_argument("--qa", help="folder with NuScenes_{train,val}_questions.json")
    nuscenes.add_argument("--out", required=True, help="output folder (Parquet per config, Arrow copies, card)")
    nuscenes.add_argument("--splits", nargs="+", help="official split names (default: the version's)")
    nuscenes.add_argument("--configs", nargs="+", choices=DATASET_CONFIG_NAMES, help="default: all with inputs")
    nuscenes.add_argument(
        "--image-mode", default="path", help="'path' (absolute JPEG paths) or 'bytes' (embedded JPEGs)"
    )
    nuscenes.add_argument(
        "--on-missing-occ", default="skip", help="'skip' keyframes without labels.npz (counted) or 'error'"
    )
    nuscenes.add_argument(
        "--on-corrupt", default="skip", help="'skip' keyframes with a corrupt camera image (counted) or 'error'"
    )
    nuscenes.add_argument("--scenes-per-chunk", type=int, default=50, help="scenes per resumable chunk")
    nuscenes.add_argument("--num-proc", type=int, default=1, help="processes writing the chunks (same rows)")
    nuscenes.add_argument(
        "--can-bus", help="CAN bus expansion folder (default: <dataroot>/can_bus, else can_bus/ beside the dataroot)"
    )
    nuscenes.add_argument(
        "--require-steering", action="store_true", help="fail when no CAN bus expansion is found (steering input)"
    )
    nuscenes.add_argument("--push", metavar="REPO", help="also push every config to this Hub dataset repo")
    nuscenes.add_argument("--private", action="store_true", help="create the Hub repo as private")
    nuscenes.set_defaults(func=_build_nuscenes)

    push = data_commands.add_parser("push", help="push a folder written by `data build` to the Hub")
    push.add_argument("folder", help="output folder of `occvla-hf data build`")
    push.add_argument("--repo", required=True, help="Hub dataset repo id, e.g. user/nuscenes-occvla")
    push.add_argument("--private", action="store_true", help="create the Hub repo as private")
    push.set_defaults(func=_push)

    export = data_commands.add_parser(
        "export-lerobot", help="write the planning config as a LeRobot dataset (v3.0, image features, no video)"
    )
    export.add_argument("folder", help="output folder of `occvla-hf data build`, or a Hub dataset id")
    export.add_argument("--out", required=True, help="folder of the LeRobot dataset (meta/, data/)")
    export.add_argument("--splits", nargs="+", help="splits exported, as episode ranges of info.json (default: all)")
    export.set_defaults(func=_export_lerobot)


def _build_nuscenes(args: argparse.Namespace) -> int:
    """Build, save to `--out` and optionally push; the chunk cache is kept until everything succeeded."""
    from occvla_hf.data.hub import build_dataset, push_to_hub, save_dataset

    out = Path(args.out)
    cache = out / BUILD_CACHE_DIR
    datasets = build_dataset(
        args.dataroot,
        args.version,
        occ3d_root=args.occ3d,
        qa_root=args.qa,
        splits=args.splits,
        configs=args.configs,
        image_mode=args.image_mode,
        on_missing_occ=args.on_missing_occ,
        on_corrupt=args.on_corrupt,
        scenes_per_chunk=args.scenes_per_chunk,
        cache_dir=cache,
        can_bus=args.can_bus,
        require_steering=args.require_steering,
        num_proc=args.num_proc,
    )
    save_dataset(datasets, out, version=args.version, image_mode=args.image_mode)
    if args.push:
        push_to_hub(datasets, args.push, card=(out / "README.md").read_text(encoding="utf-8"), private=args.private)
    for config, dataset_dict in datasets.items():
        print(f"{config}: " + ", ".join(f"{split} {len(dataset)} rows" for split, dataset in dataset_dict.items()))
    print(f"saved to {out}")
    shutil.rmtree(cache)
    return 0


def _push(args: argparse.Namespace) -> int:
    """Push the Arrow copies and the card of a saved folder."""
    from occvla_hf.data.hub import push_to_hub
    from occvla_hf.data.load import load_configs

    folder = Path(args.folder)
    push_to_hub(
        load_configs(folder), args.repo, card=(folder / "README.md").read_text(encoding="utf-8"), private=args.private
    )
    print(f"pushed {folder} to {args.repo}")
    return 0


def _export_lerobot(args: argparse.Namespace) -> int:
    from occvla_hf.data.lerobot import export_lerobot

    export = export_lerobot(args.folder, args.out, splits=args.splits)
    info = export.info
    print(
        f"wrote {info['total_episodes']} episodes ({info['total_frames']} frames at {info['fps']} fps, splits "
        f"{info['splits']}) to {export.root}"
    )
    return 0
