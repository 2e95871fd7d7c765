"""`occvla-hf` command line: a thin layer over Python functions a user could call directly.

Each subcommand lives next to the code it drives, in a module that defines
`register(subparsers: argparse._SubParsersAction) -> None`; that function adds its parser and sets
`func=<callable taking the parsed Namespace>` as the default.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Modules that contribute subcommands, in the order `--help` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "occvla_hf.data.cli",
    "occvla_hf.training.cli",
    "occvla_hf.evaluation.cli",
    "occvla_hf.sim.cli",
    "occvla_hf.demo",
    "occvla_hf.experiments.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full `occvla-hf` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="occvla-hf", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _version() -> str:
    from occvla_hf import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `occvla-hf` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
