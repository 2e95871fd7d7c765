"""`occvla-hf` command line: a thin layer over Python functions a user could call directly.

Each subcommand lives next to the code it drives, in a module that defines
`register(subparsers: argparse._SubParsersAction) -> None`; that function adds its parser and sets
`func=<callable taking the parsed Namespace>` as the default. Those modules import nothing heavy (torch, transformers,
datasets) at module level: each command imports what it needs when it runs, so `--help` answers at once.

Bad input raises ValueError, TypeError or FileNotFoundError naming the field or file; when the package itself raised
it, `main` prints `occvla-hf <command>: error: <message>` and returns 2, as argparse does for bad arguments (errors
raised inside other libraries keep their traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

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
# Errors that report bad input; `main` prints them without a traceback when raised by the package's own code.
INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, FileNotFoundError)
_PACKAGE_DIR = Path(__file__).resolve().parent
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
    try:
        result = args.func(args)
    except INPUT_ERRORS as error:
        if not _raised_by_package(error):
            raise
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


def _raised_by_package(error: BaseException) -> bool:
    """Whether the innermost frame of `error`'s traceback is in this package's code."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE_DIR)


def model_argument(value: str) -> str:
    """argparse `type` of `--model` (a checkpoint folder or a Hub id): a value that can only be a path (absolute,
    `./`, `../`, `~`, more than one `/`, or a trailing `/`) must be an existing folder, so it is never tried as a Hub
    id."""
    looks_like_path = value.startswith((".", "~", "/")) or value.count("/") > 1 or value.endswith("/")
    if looks_like_path and not Path(value).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"no checkpoint folder at {value!r}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
