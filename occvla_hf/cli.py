"""`occvla-hf` command line: a thin layer over Python functions a user could call directly.

Each subcommand lives next to the code it drives, in a module that defines
`register(subparsers: argparse._SubParsersAction) -> None`; that function adds its parser and sets
`func=<callable taking the parsed Namespace>` as the default. Those modules import nothing heavy (torch, transformers,
datasets) at module level: each command imports what it needs when it runs, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence

from occvla_hf.version import __version__

# Modules that contribute subcommands, in the order `--help` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "occvla_hf.data.cli",
    "occvla_hf.training.cli",
    "occvla_hf.evaluation.cli",
    "occvla_hf.sim.cli",
    "occvla_hf.demo_cli",
    "occvla_hf.experiments.cli",
)
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """The full `occvla-hf` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="occvla-hf", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="level of the package's log messages (give it before COMMAND)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def configure_logging(level: str) -> None:
    """One stderr handler on the root logger; `occvla_hf.*` loggers at `level`, other libraries keep their own."""
    logging.basicConfig(format=_LOG_FORMAT)
    logging.getLogger("occvla_hf").setLevel(level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `occvla-hf` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
