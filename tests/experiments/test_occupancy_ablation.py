"""The embedded model's occupancy ablation: its tables reprint the shipped model card's from the committed per-run
reports, its variants and training commands, and the `occvla-hf experiment` command that runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from occvla_hf.cli import main
from occvla_hf.experiments.occupancy_ablation import VARIANTS, ablation_tables, read_reports, train_command
from occvla_hf.pretrained import EMBEDDED_MODEL_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = sorted((REPO_ROOT / "benchmarks" / "results" / "ablation_occupancy").glob("*.json"))


@pytest.fixture(autouse=True)
def repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # recipe paths are relative to the repository root


def test_tables_of_the_committed_reports_are_the_shipped_model_cards() -> None:
    tables = ablation_tables(read_reports(RESULTS))
    assert tables.startswith("Planning, ST-P3 protocol") and "| without occupancy | 6 |" in tables
    assert tables in (EMBEDDED_MODEL_PATH / "README.md").read_text()


def test_report_command_prints_the_tables(capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "occupancy_ablation", "report", *map(str, RESULTS)]) == 0
    assert capsys.readouterr().out == ablation_tables(read_reports(RESULTS)) + "\n"


def test_only_no_occ_trains_without_occupancy_and_commands_carry_the_overrides(tmp_path: Path) -> None:
    assert [name for name, variant in VARIANTS.items() if not variant.occupancy_supervision()] == ["no_occ"]
    command = train_command(VARIANTS["occ_w5"], 2, tmp_path / "run", tmp_path / "vae", tmp_path / "data", ["--x", "1"])
    assert command[:7] == [sys.executable, "-m", "occvla_hf.cli", "train", "joint", "--config", VARIANTS["occ"].recipe]
    assert command[7:] == [
        "--model.config.occupancy_loss_weight", "5.0", "--training.seed", "2",
        "--training.output_dir", str(tmp_path / "run"), "--occupancy_vae", str(tmp_path / "vae"),
        "--data.path", str(tmp_path / "data" / "train"), "--x", "1",
    ]  # fmt: skip


def test_experiment_help_lists_the_experiments(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    out = capsys.readouterr().out
    assert "occupancy_ablation" in out and "ablation_scale" in out
