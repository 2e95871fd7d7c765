"""`occvla-hf demo`: the command and its defaults, importable without torch (the demo itself is `occvla_hf.demo`)."""

from __future__ import annotations

import argparse

from occvla_hf.cli import model_argument
from occvla_hf.pretrained import EMBEDDED_MODEL_PATH

# Sim seeds of the embedded model's training scenes are 0 and of its held-out evaluation scenes 1000 (scene i of seed s
# is simulated from the seed sequence (s, i)); the demo's default seed is outside both: its scenes are held out.
DEFAULT_DEMO_SEED: int = 2026
PNG_NAME: str = "occvla_demo.png"


def register(subparsers: argparse._SubParsersAction) -> None:
    """`occvla-hf demo [--out DIR] [--seed S] [--model PATH]`."""
    parser = subparsers.add_parser(
        "demo", help="plan and answer questions on a fresh sim scene with the embedded model (CPU, no download)"
    )
    parser.add_argument("--out", default=".", help=f"folder of the figure {PNG_NAME} (default: .)")
    parser.add_argument("--seed", type=int, default=DEFAULT_DEMO_SEED, help="sim seed of the scene")
    parser.add_argument(
        "--model", default=str(EMBEDDED_MODEL_PATH), type=model_argument, help="checkpoint folder (default: embedded)"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from occvla_hf.demo import run_demo

    run_demo(args.out, seed=args.seed, model_path=args.model)
    return 0
