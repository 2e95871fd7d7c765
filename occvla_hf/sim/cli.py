"""`occvla-hf sim`: write a procedural nuScenes-format dataset (a thin layer over `generate_dataset`)."""

from __future__ import annotations

import argparse
import os

from occvla_hf.sim.config import PRESETS, VERSIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="generate procedural driving scenes in the nuScenes / Occ3D / nuScenes-QA formats",
        description="Generate procedural driving scenes as a nuScenes dataroot with Occ3D labels and nuScenes-QA.",
    )
    parser.add_argument("--out", required=True, help="output dataroot")
    parser.add_argument("--scenes", type=int, default=None, help="number of scenes (default: the preset's)")
    parser.add_argument("--seed", type=int, default=None, help="master seed (default: the preset's, else 0)")
    parser.add_argument("--scale", type=float, default=None, help="image scale of 1600x900 (default 0.25)")
    parser.add_argument("--version", choices=VERSIONS, default=None, help="default: the preset's, else v1.0-mini")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="ready-made settings")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4), help="parallel processes")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from occvla_hf.sim.generate import generate_dataset

    if args.scenes is None and args.preset is None:
        args.scenes = 10
    summary = generate_dataset(
        args.out,
        num_scenes=args.scenes,
        seed=args.seed,
        scale=args.scale,
        version=args.version,
        preset=args.preset,
        num_workers=args.workers,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {summary.num_scenes} scenes, {summary.num_samples} keyframes, {summary.num_annotations} annotations, "
        f"{summary.num_questions} questions to {summary.dataroot} in {summary.seconds:.1f} s"
    )
    return 0
