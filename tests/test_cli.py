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


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"stage: joint\ntraining: [unclosed\n", "is not a valid YAML file"),
        (b"stage: joint\nmodel: {a: 1\n", "is not a valid YAML file"),
        (b"stage: \xff\xfe joint\n", "is not a valid YAML file"),
        (b"- a list\n- not a mapping\n", "must hold a mapping of keys"),
    ],
    ids=["unclosed-list", "unclosed-mapping", "not-utf8", "not-a-mapping"],
)
def test_train_with_a_bad_recipe_file_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, message: str
) -> None:
    path = _write(tmp_path / "bad.yaml", content)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "occvla-hf train: error: config:" in err and str(path) in err and message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "build", "nuscenes", "--dataroot", "{tmp}/absent", "--version", "v1.0-mini", "--out", "{tmp}/o"],
         "occvla-hf data: error: dataroot: "),
        (["data", "build", "nuscenes", "--dataroot", "{tmp}", "--version", "v1.0-mini", "--out", "{tmp}/o"],
         "occvla-hf data: error: version: no nuScenes tables"),
        (["sim", "--out", "{tmp}/sim", "--scenes", "1", "--scale", "3.0"], "occvla-hf sim: error: scale: expected"),
    ],
    ids=["missing-dataroot", "missing-version", "bad-sim-scale"],
)  # fmt: skip
def test_package_errors_print_the_command_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "planning", "--model", "{tmp}/absent", "--data", "{tmp}"],
        ["plan", "--model", "./absent-checkpoint", "--data", "{tmp}", "--sample", "0", "--out", "{tmp}/p.png"],
        ["demo", "--model", "~/absent/checkpoint", "--out", "{tmp}"],
    ],
    ids=["eval-absolute", "plan-relative", "demo-home"],
)
def test_a_missing_model_folder_is_not_tried_as_a_hub_id(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]
) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    model = argv[argv.index("--model") + 1]
    assert f"argument --model: no checkpoint folder at {model!r}" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["user/occvla", "occvla", "{tmp}"], ids=["hub-id", "bare-name", "folder"])
def test_model_argument_keeps_hub_ids_and_existing_folders(tmp_path: Path, value: str) -> None:
    from occvla_hf.cli import model_argument

    assert model_argument(value.format(tmp=tmp_path)) == value.format(tmp=tmp_path)


def test_errors_raised_inside_other_libraries_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from occvla_hf.sim import generate

    def library_error(*args, **kwargs):
        json.loads("{not json")

    monkeypatch.setattr(generate, "generate_dataset", library_error)
    with pytest.raises(json.JSONDecodeError):
        main(["sim", "--out", "unused", "--scenes", "1"])
