"""`occvla-hf experiment NAME COMMAND ...`: runs an experiment module's command line (imported only when it runs)."""

from __future__ import annotations

import argparse
import importlib

# Experiment name -> module with `main(argv, prog)`.
EXPERIMENTS: dict[str, str] = {
    "occupancy_ablation": "occvla_hf.experiments.occupancy_ablation",
    "ablation_scale": "occvla_hf.experiments.ablation_scale",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `occvla-hf experiment`."""
    parser = subparsers.add_parser(
        "experiment",
        help="run an experiment: train variants over seeds, evaluate on held-out sim scenes, print tables",
        description=__doc__.splitlines()[0],
        epilog="Example: occvla-hf experiment occupancy_ablation report benchmarks/results/ablation_occupancy/*.json",
    )
    parser.add_argument("name", choices=sorted(EXPERIMENTS), help="the experiment")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="its command and options (see NAME --help)")

    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(EXPERIMENTS[args.name])
        module.main(args.arguments, prog=f"{parser.prog} {args.name}")
        return 0

    parser.set_defaults(func=run)
