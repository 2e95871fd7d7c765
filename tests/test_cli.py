"""The `occvla-hf` entry point: `--help` is quick (no torch/transformers/datasets import), `--log-level` is
configured once, `--version` reads the package version."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from occvla_hf.cli import main
from occvla_hf.version import __version__

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "transformers", "datasets")
# Runs `occvla-hf <args>` through cli.main with a patched argv, then prints the heavy modules that were imported.
_PROBE = """
import json, sys
from occvla_hf import cli
sys.argv = ["occvla-hf", *{args!r}]
try:
    code = cli.main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({{"code": code, "heavy": [name for name in {heavy!r} if name in sys.modules]}}))
"""


@pytest.mark.parametrize("args", [["--help"], ["sim", "--help"], ["--version"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args, heavy=HEAVY_MODULES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, result.stderr
    assert "torchvision" not in result.stderr


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for command in ("data", "train", "eval", "plan", "sim", "demo"):
        assert f"    {command} " in printed
    assert "--log-level" in printed


def test_version_is_the_package_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"occvla-hf {__version__}"


def test_log_level_sets_the_package_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("occvla_hf")
    monkeypatch.setattr(logger, "level", logger.level)  # restored after the test
    assert main(["--log-level", "info"]) == 2  # no command: prints the help
    assert logging.getLogger("occvla_hf.data.hub").getEffectiveLevel() == logging.INFO
    assert main(["--log-level", "error"]) == 2
    assert logging.getLogger("occvla_hf.training.joint").getEffectiveLevel() == logging.ERROR
